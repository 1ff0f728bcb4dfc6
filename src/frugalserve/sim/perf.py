"""What a pool's replica does in time and money: the performance model the simulator runs each pool on.

Defaults come with their sources (see DEFAULTS_SOURCES); every field can be overridden per pool in the
config's ``simulate:`` section or on the command line (``--policy pools.NAME.perf.decode_tps=40``), and
``frugalserve simulate --calibrate`` measures them from the gateway's usage records and lifecycle events.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PerfModel:
    prefill_tps: float  # prompt tokens per second one request is prefilled at
    decode_tps: float  # output tokens per second one request streams at (at the pool's usual batch)
    concurrency: int  # requests one replica runs at once; more wait in its queue
    start_s: float  # cold start: process up, weights loaded, health answering
    wake_s: tuple[float, float]  # wake from sleep level 1, level 2
    sleep_s: float  # going to sleep (the replica takes no request meanwhile)
    usd_per_hour: float  # one replica (every GPU it bills for)
    billing: str  # "on_demand" | "reserved"
    min_billed_s: float = 0.0  # a minimum charge per start, where the cloud has one (e.g. 60 s)
    source: str = "defaults"  # "defaults", "config", "calibrated from N records, M starts (window)"

    def wake_for(self, level: int) -> float:
        return self.wake_s[0] if level <= 1 else self.wake_s[1]

    def service_s(self, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """(time to first token, total time) of one request that runs at once."""
        ttft = prompt_tokens / self.prefill_tps
        return ttft, ttft + output_tokens / self.decode_tps
