"""By hand: ``PYTHONPATH=src python -m tests.routing.decide_timing``. Times decide() over three tiers
(target p99 <= 0.2 ms) and extract() on a chat turn and on a 1 MB message. Not a test: timings on a
shared machine are not assertions; benchmarks/ holds the reported numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from frugalserve.routing.config import RoutingConfig
from frugalserve.routing.features import extract
from frugalserve.routing.policy import decide
from tests.routing.helpers import LARGE, MEDIUM, SMALL, feats, warm3


@dataclass
class Counts:
    prompt_tokens: int = 500
    text_tokens: int = 500
    image_tokens: int = 0
    video_tokens: int = 0
    images: int = 0
    videos: int = 0
    max_tokens_requested: int | None = None


def percentiles(samples: list[float]) -> str:
    samples.sort()
    n = len(samples)
    return (
        f"p50 {samples[n // 2] * 1e3:.4f} ms  p99 {samples[int(n * 0.99)] * 1e3:.4f} ms  max {samples[-1] * 1e3:.4f} ms"
    )


def main() -> None:
    cfg = RoutingConfig()
    cases = [
        (SMALL, warm3()),
        (MEDIUM, warm3(m={"state": "sleeping"})),
        (LARGE, warm3(l={"state": "sleeping", "eta_s": 1.0})),
        (feats(priority="low", code_blocks=3, tools=True), warm3(m={"in_flight": 4, "held": 3})),
    ]
    for features, views in cases:
        samples = []
        for _ in range(20_000):
            t0 = time.perf_counter()
            decide(features, views, cfg)
            samples.append(time.perf_counter() - t0)
        print(f"decide  {decide(features, views, cfg).reason:>10}: {percentiles(samples)}")
    bodies = {
        "chat turn": {
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Explain \\frac{a}{b} and write def f(x): return x;" * 20},
            ]
        },
        "1 MB message": {"messages": [{"role": "user", "content": "Some prose, def x(): pass;\n" * 40_000}]},
    }
    for name, body in bodies.items():
        samples = []
        for _ in range(300):
            t0 = time.perf_counter()
            extract(body, Counts(), {"x-frugalserve-priority": "normal"})
            samples.append(time.perf_counter() - t0)
        print(f"extract {name:>10}: {percentiles(samples)}")


if __name__ == "__main__":
    main()
