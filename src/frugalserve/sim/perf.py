"""What a pool's replica does in time and money: the performance model the simulator runs each pool on.

A pool's model is built in three layers (:func:`perf_for`): :data:`DEFAULTS` (a 7-8B Qwen3-VL on one
L4/A10-class GPU served by vLLM, each number with its source in :data:`DEFAULT_SOURCES`), then the pool's
config (capacity, GPU price, billing), then overrides by field name: the config's ``simulate:`` section,
the command line (``--policy pools.NAME.perf.decode_tps=40``), or a perf file (:func:`load_perf_file`).

``frugalserve simulate --calibrate`` writes such a perf file from what the gateway measured
(:func:`calibrate`, :func:`calibration_yaml`): medians over its usage records and lifecycle events.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Connection, Engine

from frugalserve.accounting import store
from frugalserve.config import PoolConfig
from frugalserve.config_errors import ConfigError


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
    source: str = "defaults"  # what set the values: "defaults; config (...); <perf file or key>: <fields>"

    def wake_for(self, level: int) -> float:
        return self.wake_s[0] if level <= 1 else self.wake_s[1]

    def service_s(self, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """(time to first token, total time) of one request that runs at once."""
        ttft = prompt_tokens / self.prefill_tps
        return ttft, ttft + output_tokens / self.decode_tps


# ---------------------------------------------------------------------------------------------------------
# Defaults, and the fields an override may set

SLEEP_MODE_BLOG = "https://blog.vllm.ai/2025/10/26/sleep-mode.html"

DEFAULTS: dict[str, float] = {
    "prefill_tps": 3000.0,
    "decode_tps": 20.0,
    "start_s": 60.0,
    "wake_s_1": 2.0,
    "wake_s_2": 5.0,
    "sleep_s": 2.0,
    "min_billed_s": 0.0,
}

DEFAULT_SOURCES: dict[str, str] = {
    "prefill_tps": "assumption: compute-bound, 2 FLOP per parameter per token (~16.5 GFLOP for ~8.2B) at ~40% of "
    "the ~120 dense BF16 TFLOPS of an L4 or A10 gives ~3,000 tokens/s",
    "decode_tps": "assumption: memory-bound; a published vLLM sweep "
    "(https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on) decodes Llama-3.1-8B BF16 at ~75 tokens/s "
    "per request on an A100 40GB (1.55 TB/s); scaled to 300 GB/s (L4) and 600 GB/s (A10) that is 15-29 tokens/s "
    "alone, less at a batch: 20",
    "start_s": f"{SLEEP_MODE_BLOG}: a full vLLM restart took 37.6 s (Qwen3-0.6B) and 58.1 s (Phi-3-vision, 4.2B) "
    "on an A100; seed 000 reports 45 s to a first answer for Qwen3-VL-2B; 7-8B: assumption 60 s (low end)",
    "wake_s_1": f"{SLEEP_MODE_BLOG}: level 1 wakes of 0.26 s (Qwen3-0.6B) and 0.82 s (Phi-3-vision, 4.2B) on an "
    "A100; ~2x the weights of the 4.2B over PCIe: assumption 2 s",
    "wake_s_2": f"{SLEEP_MODE_BLOG}: level 2 wakes (weights reloaded) of 0.85 s and 2.58 s for the same models; "
    "~2x the weights: assumption 5 s",
    "sleep_s": f"assumption: level 1 copies ~17 GB of BF16 weights to CPU memory over PCIe 4.0 x16 (~1 s), level 2 "
    f"frees them; {SLEEP_MODE_BLOG} says models hibernate 'in seconds': 2 s",
    "min_billed_s": "assumption: none, as the gateway's own accounting (accounting/costs.py) bills state time; set "
    "60 where each start is a cloud instance billed per second with a one-minute minimum",
}

# The fields the pool's config sets (after the defaults, before the overrides), and from which keys.
FROM_CONFIG: dict[str, str] = {
    "concurrency": "capacity",
    "usd_per_hour": "gpu.usd_per_hour x gpu.count",
    "billing": "gpu.billing",
}

# Every name an override may set, in the order a perf file lists them.
FIELDS = (
    "prefill_tps",
    "decode_tps",
    "concurrency",
    "start_s",
    "wake_s_1",
    "wake_s_2",
    "sleep_s",
    "usd_per_hour",
    "billing",
    "min_billed_s",
)
_RATES = frozenset({"prefill_tps", "decode_tps"})  # > 0: a service time divides by them
BILLINGS = ("on_demand", "reserved")
# A start or wake slower than backend.startup_timeout_s fails in the live gateway (the provisioner's deadline
# for health after launch, and for POST /wake_up): a default above it is capped at it.
_TIMED_BY_STARTUP = ("start_s", "wake_s_1", "wake_s_2")

Value = float | int | str


def check_value(name: str, value: object, key: str) -> Value:
    """One override, checked and converted (ints and floats are both numbers); errors name ``key``."""
    if name not in FIELDS:
        raise ConfigError(key, f"unknown field (known: {', '.join(FIELDS)})")
    if name == "billing":
        if value not in BILLINGS:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, BILLINGS))}, got {value!r}")
        return str(value)
    if name == "concurrency":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        if value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if name in _RATES and number <= 0:
        raise ConfigError(key, f"must be > 0 (tokens per second), got {value!r}")
    if number < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return number


def perf_for(pool: PoolConfig, overrides: Mapping[str, object] | None = None, path: str = "") -> PerfModel:
    """The pool's model: :data:`DEFAULTS`, then its config, then ``overrides`` by field name (:data:`FIELDS`).

    From the config: ``concurrency`` is ``capacity`` (what the gateway counts a replica's load against),
    ``usd_per_hour`` is one replica's price (every GPU it bills for), ``billing`` as configured. The
    default start and wake times are capped at ``backend.startup_timeout_s``: a start that took longer would
    have failed, so a pool configured with a short timeout is one whose starts are known to be shorter.
    Overrides are taken as given (a measured or deliberate value). Errors name ``path.field``.
    """
    nums = dict(DEFAULTS)
    nums["usd_per_hour"] = pool.gpu.usd_per_hour * pool.gpu.count
    concurrency = pool.capacity
    billing: str = pool.gpu.billing
    parts = ["defaults", "config (capacity, gpu price and billing)"]
    timeout = pool.backend.startup_timeout_s
    capped = [name for name in _TIMED_BY_STARTUP if nums[name] > timeout]
    for name in capped:
        nums[name] = timeout
    if capped:
        parts.append(f"{', '.join(capped)} capped at backend.startup_timeout_s ({timeout:g} s)")
    given: list[str] = []
    for name, value in (overrides or {}).items():
        checked = check_value(name, value, f"{path}.{name}" if path else name)
        if name == "concurrency":
            concurrency = int(checked)
        elif name == "billing":
            billing = str(checked)
        else:
            nums[name] = float(checked)
        given.append(name)
    if given:
        parts.append(f"{path or 'overrides'}: {', '.join(given)}")
    return PerfModel(
        prefill_tps=nums["prefill_tps"],
        decode_tps=nums["decode_tps"],
        concurrency=concurrency,
        start_s=nums["start_s"],
        wake_s=(nums["wake_s_1"], nums["wake_s_2"]),
        sleep_s=nums["sleep_s"],
        usd_per_hour=nums["usd_per_hour"],
        billing=billing,
        min_billed_s=nums["min_billed_s"],
        source="; ".join(parts),
    )


# ---------------------------------------------------------------------------------------------------------
# Perf files: {pools: {NAME: {field: value}}}


def parse_perf(data: object) -> dict[str, dict[str, Value]]:
    """The overrides of each pool in a parsed perf file, checked; errors name the key (``pools.gpu.decode_tps``)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"must be a mapping with the key pools, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k != "pools")
    if unknown:
        raise ConfigError(unknown[0], "unknown key (known: pools)")
    pools = data.get("pools")
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        raise ConfigError("pools", f"must be a mapping of pool names, got {type(pools).__name__}")
    out: dict[str, dict[str, Value]] = {}
    for name, fields in pools.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"pools.{name}", "a pool name must be a non-empty string")
        if fields is None:
            fields = {}
        if not isinstance(fields, Mapping):
            raise ConfigError(f"pools.{name}", f"must be a mapping of fields, got {type(fields).__name__}")
        out[name] = {str(k): check_value(str(k), v, f"pools.{name}.{k}") for k, v in fields.items()}
    return out


def load_perf_file(path: str | os.PathLike[str]) -> dict[str, dict[str, object]]:
    """Read a perf file (what ``--calibrate`` writes); errors name the key and the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read perf file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"{p}: not valid YAML: {where}{problem}") from None
    try:
        return {name: dict(fields) for name, fields in parse_perf(data).items()}
    except ConfigError as exc:
        raise ConfigError(exc.path, f"{exc.message} (in {p})") from None


# ---------------------------------------------------------------------------------------------------------
# Calibration from the accounting store

MIN_DECODE_TOKENS = 8  # shorter answers are mostly the first token's latency, not the decode rate


@dataclass(frozen=True, slots=True)
class Calibration:
    """What was measured for one pool: medians, and how many requests or spans each comes from."""

    pool: str
    values: Mapping[str, float]  # field (FIELDS) -> median; only what could be measured
    samples: Mapping[str, int]  # field -> requests or lifecycle spans behind its median
    notes: tuple[str, ...] = ()  # what could not be measured, and why
    since: float | None = None  # the window the records and events were taken from (None: open)
    until: float | None = None
    units: Mapping[str, str] = field(default_factory=dict)  # field -> what a sample is ("requests", "starts")


def lifecycle_samples(
    events: Sequence[Mapping[str, Any]], since: float | None, until: float | None
) -> dict[str, list[float]]:
    """Durations of starts, wakes and sleeps that ended in the window, from one pool's replica events in time order.

    The lifecycle writes ``X -> starting`` then ``starting -> ready`` (a start when X is ``stopped`` or
    ``failed``, a wake when X is ``sleeping``), and ``ready -> stopping`` then ``stopping -> sleeping`` for
    a sleep (drained first, so the ``stopping`` span is the sleep call alone). A span's length is its end
    event's ``duration_s`` (monotonic), or the wall time between the two events where that is missing.
    Events of one replica must follow each other (``to_state`` then ``from_state``); a gap is skipped.
    """
    out: dict[str, list[float]] = {"start": [], "wake": [], "sleep": []}
    previous: dict[str, Mapping[str, Any]] = {}
    for ev in events:
        prev = previous.get(ev["replica"])
        previous[ev["replica"]] = ev
        t = ev["time"]
        if prev is None or prev["to_state"] != ev["from_state"]:
            continue
        if (since is not None and t < since) or (until is not None and t >= until):
            continue
        kind = None
        if (ev["from_state"], ev["to_state"]) == ("starting", "ready"):
            if prev["from_state"] == "sleeping":
                kind = "wake"
            elif prev["from_state"] in ("stopped", "failed"):
                kind = "start"
        elif (ev["from_state"], ev["to_state"]) == ("stopping", "sleeping") and prev["from_state"] == "ready":
            kind = "sleep"
        if kind is not None:
            took = ev.get("duration_s")
            out[kind].append(float(took) if took is not None else t - prev["time"])
    return out


def _window(column: sa.ColumnElement[float], since: float | None, until: float | None) -> list[sa.ColumnElement[bool]]:
    out = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column < until)
    return out


def _streamed_answers(pool: str, since: float | None, until: float | None) -> list[sa.ColumnElement[bool]]:
    """Requests of ``pool`` answered in full as a stream. Only a stream's ``ttft_s`` is its first token: a
    non-streamed answer's first byte is its last, after the whole generation."""
    c = store.usage_records.c
    return [
        c.pool == pool,
        c.stream.is_(True),
        c.status == 200,
        c.error_code.is_(None),
        c.client_disconnected.is_(False),
        c.ttft_s > 0,
        *_window(c.time, since, until),
    ]


def prefill_samples(conn: Connection, pool: str, since: float | None, until: float | None) -> list[float]:
    """prompt_tokens / ttft_s of each streamed answer that did not wait for a cold start (the wait is in its
    ttft). The ttft also holds the gateway's work and any queueing upstream: a lower bound of the rate."""
    c = store.usage_records.c
    q = sa.select(sa.cast(c.prompt_tokens, sa.Float) / c.ttft_s).where(
        *_streamed_answers(pool, since, until),
        c.prompt_tokens > 0,
        sa.or_(c.cold_start_wait_s.is_(None), c.cold_start_wait_s <= 0),
    )
    return [float(v) for (v,) in conn.execute(q)]


def decode_samples(conn: Connection, pool: str, since: float | None, until: float | None) -> list[float]:
    """completion_tokens / (duration_s - ttft_s) of each streamed answer of at least MIN_DECODE_TOKENS tokens:
    the rate that makes :meth:`PerfModel.service_s` give the answer's measured duration."""
    c = store.usage_records.c
    q = sa.select(sa.cast(c.completion_tokens, sa.Float) / (c.duration_s - c.ttft_s)).where(
        *_streamed_answers(pool, since, until),
        c.completion_tokens >= MIN_DECODE_TOKENS,
        c.duration_s > c.ttft_s,
    )
    return [float(v) for (v,) in conn.execute(q)]


def _events(conn: Connection, pool: str, until: float | None) -> list[dict[str, Any]]:
    """Every event of the pool before ``until``: a span ending in the window may have begun before it."""
    e = store.replica_events.c
    q = sa.select(e.time, e.replica, e.from_state, e.to_state, e.reason, e.duration_s).where(e.pool == pool)
    if until is not None:
        q = q.where(e.time < until)
    return [dict(r._mapping) for r in conn.execute(q.order_by(e.time, e.id))]


def _calibrate_pool(conn: Connection, pool: PoolConfig, since: float | None, until: float | None) -> Calibration:
    level = pool.lifecycle.sleep_level
    wake_field, other_wake = (f"wake_s_{level}", f"wake_s_{3 - level}")
    spans = lifecycle_samples(_events(conn, pool.name, until), since, until)
    measured = {
        "prefill_tps": (prefill_samples(conn, pool.name, since, until), "requests"),
        "decode_tps": (decode_samples(conn, pool.name, since, until), "requests"),
        "start_s": (spans["start"], "starts"),
        wake_field: (spans["wake"], "wakes"),
        "sleep_s": (spans["sleep"], "sleeps"),
    }
    why_not = {
        "prefill_tps": "no streamed answer with a first token and no cold-start wait",
        "decode_tps": f"no streamed answer of {MIN_DECODE_TOKENS} or more tokens",
        "start_s": "no start (from stopped or failed) reached ready",
        wake_field: f"no wake from sleep; wakes count at level {level}, the pool's lifecycle.sleep_level",
        "sleep_s": "no ready -> stopping -> sleeping",
    }
    values: dict[str, float] = {}
    samples: dict[str, int] = {}
    units: dict[str, str] = {}
    notes: list[str] = []
    for name in FIELDS:
        if name not in measured:
            continue
        xs, unit = measured[name]
        if xs:
            values[name] = float(statistics.median(xs))
            samples[name] = len(xs)
            units[name] = unit
        else:
            notes.append(f"{name}: not measured ({why_not[name]})")
    notes.append(f"{other_wake}: not measured (the pool sleeps at level {level})")
    return Calibration(
        pool.name,
        types.MappingProxyType(values),
        types.MappingProxyType(samples),
        tuple(notes),
        since,
        until,
        types.MappingProxyType(units),
    )


def _open_for_reading(url: str) -> tuple[Engine, str]:
    shown = sa.engine.make_url(store.normalize_url(url)).render_as_string(hide_password=True)
    if url.startswith("sqlite"):
        db = sa.engine.make_url(url).database
        if not db or db == ":memory:" or not Path(db).expanduser().is_file():
            raise ConfigError("", f"no accounting database at {shown}")
    return store.create_engine(url), shown


def calibrate(
    url: str, pools: Sequence[PoolConfig], since: float | None, until: float | None
) -> dict[str, Calibration]:
    """Measure each pool's model from the gateway's accounting database at ``url`` over [since, until).

    Every estimate is a median (robust to the odd slow request, queueing burst or stalled start):

    - ``prefill_tps``: prompt_tokens / ttft_s over streamed answers that waited for no cold start;
    - ``decode_tps``: completion_tokens / (duration_s - ttft_s) over streamed answers of >= 8 tokens;
    - ``start_s``: ``starting -> ready`` spans of starts (from ``stopped`` or ``failed``);
    - ``wake_s_<level>``: ``starting -> ready`` spans of wakes (from ``sleeping``), at the pool's
      ``lifecycle.sleep_level``;
    - ``sleep_s``: ``stopping -> sleeping`` spans after ``ready``.

    A field without a sample is left out (the default stays) and said so in the notes. Reads only; a
    database that cannot be read raises :class:`ConfigError` (one line, the password hidden).
    """
    engine, shown = _open_for_reading(url)
    try:
        with engine.connect() as conn:
            return {p.name: _calibrate_pool(conn, p, since, until) for p in pools}
    except sa.exc.SQLAlchemyError as exc:
        problem = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError("", f"cannot read the accounting database at {shown}: {problem}") from None
    finally:
        engine.dispose()


def _when(t: float | None, open_end: str) -> str:
    if t is None:
        return open_end
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _comment(text: str) -> str:
    return "  # " + " ".join(text.split())


def calibration_yaml(cals: Mapping[str, Calibration]) -> str:
    """The perf file (:func:`load_perf_file`) of these calibrations, with comments on the samples and window."""
    lines = [
        "# frugalserve simulate --calibrate: medians of what the gateway measured (docs/cost-planning.md).",
        "# A field left out was not measured: the pool keeps its default for it.",
        "pools:",
    ]
    for name, cal in cals.items():
        counts = ", ".join(f"{f} from {cal.samples[f]} {cal.units.get(f, 'samples')}" for f in cal.values)
        window = f"{_when(cal.since, 'the first record')} .. {_when(cal.until, 'the last')}"
        lines.append(_comment(f"{name}: {counts or 'nothing measured'}; window {window}"))
        lines += [_comment(note) for note in cal.notes]
        body = yaml.safe_dump({name: {f: cal.values[f] for f in FIELDS if f in cal.values}}, sort_keys=False)
        lines += ["  " + line for line in body.splitlines()]
    return "\n".join(lines) + "\n"
