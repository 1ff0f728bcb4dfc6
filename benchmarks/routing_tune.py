"""Searches score weights and thresholds on the TUNE split of the labelled routing set (never the holdout).

    PYTHONPATH=src python benchmarks/routing_tune.py [--restarts 24] [--seed 11]

How the defaults of ``routing.config`` were chosen (docs/routing-evaluation.md). Each item's features are
measured once (``routing_eval.measure_all``: the gateway's own stages); then a hill climb over a grid of
readable values (weights in steps of 0.05, per-unit weights in 0.01, token marks from a short list) starts
from the current defaults and from random points, and keeps the best objective:

    agreements - 3 x (L routed to S) - 0.3 x (other requests routed below their label)

Under-serving costs quality, over-serving only money, and L->S is the worst of it. Ties go to the point
nearest the current defaults (fewest grid steps away), so a flat objective changes nothing.

``--folds K`` then checks that the climb's gain is real, still on the tune split only: K times, the climb
from the defaults runs on the other folds and both points are scored on the fold left out. A gain that
only the climbed items show is noise and is not adopted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_eval import TIERS, Measured, load, measure_all, snapshot

from frugalserve.routing.config import RoutingConfig, ScoreWeights
from frugalserve.routing.policy import decide

# name -> the values it may take (weights of ScoreWeights, plus the two thresholds)
STEP = [round(0.05 * i, 2) for i in range(0, 21)]  # 0 .. 1.00
GRID: dict[str, list[Any]] = {
    "image_tokens_per_1k": STEP[:11],
    "image_tokens_max": STEP[:13],
    "extra_image": STEP[:9],
    "long_prompt": STEP[:9],
    "long_prompt_tokens": [500, 1000, 2000, 4000],
    "long_prompt_max": STEP[:21],
    "code": STEP[:13],
    "math": STEP[:13],
    "reasoning": STEP[:15],
    "tools": STEP[:9],
    "json_schema": STEP[:9],
    "depth": [round(0.01 * i, 2) for i in range(0, 11)],
    "depth_free": [2, 4, 6, 8],
    "depth_max": STEP[:9],
    "max_tokens": [round(0.01 * i, 2) for i in range(0, 21)],
    "max_tokens_free": [128, 256, 512, 1024, 2000],
    "max_tokens_max": STEP[:17],
    "language": STEP[:9],
    "t1": STEP[2:11],
    "t2": STEP[6:21],
}


def config(point: dict[str, Any]) -> RoutingConfig:
    weights = {k: v for k, v in point.items() if k not in ("t1", "t2")}
    return RoutingConfig(thresholds=(point["t1"], point["t2"]), weights=ScoreWeights(**weights))


def start(cfg: RoutingConfig) -> dict[str, Any]:
    """The grid point of a config (its values must lie on the grid)."""
    w = dataclasses.asdict(cfg.weights)
    point = {k: w[k] for k in GRID if k in w} | {"t1": cfg.thresholds[0], "t2": cfg.thresholds[1]}
    for k, v in point.items():
        if v not in GRID[k]:
            raise SystemExit(f"{k}={v} is not on the search grid")
    return point


def objective(measured: Sequence[Measured], point: dict[str, Any]) -> float:
    if point["t2"] <= point["t1"]:
        return -1e9
    cfg, snap = config(point), snapshot()
    total = 0.0
    for m in measured:
        routed = TIERS.index(decide(m.features, snap, cfg).tier)
        label = TIERS.index(m.item["tier"])
        if routed == label:
            total += 1
        elif label - routed == 2:
            total -= 3
        elif routed < label:
            total -= 0.3
    return total


def distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(abs(GRID[k].index(a[k]) - GRID[k].index(b[k])) for k in GRID)


def climb(measured: Sequence[Measured], point: dict[str, Any], home: dict[str, Any]) -> tuple[float, int, dict]:
    """Coordinate moves of one grid step while one improves (objective, then nearness to ``home``)."""
    best = (objective(measured, point), -distance(point, home))
    improved = True
    while improved:
        improved = False
        for k in GRID:
            i = GRID[k].index(point[k])
            for j in (i - 1, i + 1):
                if not 0 <= j < len(GRID[k]):
                    continue
                trial = point | {k: GRID[k][j]}
                key = (objective(measured, trial), -distance(trial, home))
                if key > best:
                    best, point, improved = key, trial, True
                    break
    return best[0], -best[1], point


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=24, help="random starting points besides the defaults")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--folds", type=int, default=5, help="cross-validation inside the tune split; 0: none")
    args = parser.parse_args(argv)
    measured = asyncio.run(measure_all(load(split="tune")))
    home = start(RoutingConfig())
    rng = random.Random(args.seed)
    starts = [home] + [{k: rng.choice(v) for k, v in GRID.items()} for _ in range(args.restarts)]
    results = []
    for n, point in enumerate(starts):
        value, far, end = climb(measured, point, home)
        results.append((value, -far, end))
        print(f"start {n:>2}: objective {value:.1f}, {far} grid steps from the defaults", file=sys.stderr)
    value, neg_far, best = max(results, key=lambda r: (r[0], r[1]))
    agree = sum(decide(m.features, snapshot(), config(best)).tier == m.item["tier"] for m in measured)
    print(f"objective {value:.1f}, tune agreement {agree}/{len(measured)}, {-neg_far} grid steps from the defaults")
    for k in GRID:
        mark = "" if best[k] == home[k] else f"   (default {home[k]})"
        print(f"  {k}: {best[k]}{mark}")
    if args.folds > 1:
        cross_validate(measured, home, args.folds, args.seed)
    return 0


def cross_validate(measured: Sequence[Measured], home: dict[str, Any], folds: int, seed: int) -> None:
    order = list(range(len(measured)))
    random.Random(seed).shuffle(order)
    kept = climbed = 0.0
    print(f"cross-validation on the tune split, {folds} folds: objective on the fold left out")
    for f in range(folds):
        out = set(order[f::folds])
        fold = [m for i, m in enumerate(measured) if i in out]
        rest = [m for i, m in enumerate(measured) if i not in out]
        _, _, point = climb(rest, dict(home), home)
        a, b = objective(fold, home), objective(fold, point)
        kept, climbed = kept + a, climbed + b
        moves = ", ".join(f"{k} {home[k]}->{point[k]}" for k in GRID if point[k] != home[k]) or "none"
        print(f"  fold {f}: defaults {a:.1f}, climbed {b:.1f}  ({moves})")
    print(f"  total: defaults {kept:.1f}, climbed {climbed:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
