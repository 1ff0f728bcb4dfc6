"""``frugalserve simulate``: what a policy costs, and what it does to latency, on your own traffic.

    frugalserve simulate --config gateway.yaml --synthetic seed000,days=14 \\
        --sweep pools.demo.lifecycle.idle_stop_s=60,600,3600 --objective p95_ttft_s=10

replays the traffic through the gateway's own lifecycle, routing and autoscaling code on a virtual clock
(frugalserve.sim), once per policy, and prints one row per policy. ``--calibrate`` measures each pool's
performance model from the usage records and lifecycle events instead (docs/cost-planning.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from frugalserve.commands import database_origin, load_config

PROGRESS_FROM = 200_000  # requests x policies: below this a run takes well under a second


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--trace", metavar="FILE", help="CSV or JSONL: timestamp, model, prompt_tokens, output_tokens, ..."
    )
    src.add_argument(
        "--synthetic",
        metavar="SPEC",
        help="generated traffic: a preset (seed000, seed002) and/or key=value,... (docs/cost-planning.md)",
    )
    src.add_argument("--from-db", action="store_true", help="replay the gateway's own usage records")
    src.add_argument(
        "--calibrate",
        action="store_true",
        help="measure each pool's performance model from the usage records and lifecycle events; print it as"
        " YAML for --perf",
    )
    p.add_argument(
        "--policy", action="append", default=[], metavar="KEY=VALUE", help="change the config (pools by name)"
    )
    p.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=V1,V2,...", help="one policy per value (repeatable)"
    )
    p.add_argument("--objective", metavar="pNN_ttft_s=SECONDS", help="e.g. p95_ttft_s=10 (also p99_latency_s, ...)")
    p.add_argument("--perf", metavar="FILE", help="performance models (YAML, as --calibrate prints)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--plot", metavar="FILE.png", help="write the cost / latency trade-off curve")
    p.add_argument(
        "--database", metavar="URL", help="--from-db / --calibrate: database URL (default: gateway.database)"
    )
    p.add_argument("--since", metavar="WHEN", help="--from-db / --calibrate: start (as `frugalserve report`)")
    p.add_argument(
        "--until",
        metavar="WHEN",
        help="--from-db / --calibrate: end of the window (default: now); with a trace, keep simulating until then"
        " (e.g. to see the last stops after the last request)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the result here instead of standard output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _raw_config(path: str | None) -> dict[str, Any]:
    import os

    import yaml

    from frugalserve import config as cfg

    chosen = path or os.environ.get(cfg.ENV_CONFIG)
    text = Path(chosen).read_text(encoding="utf-8") if chosen else cfg.default_config_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise cfg.ConfigError("", "must be a mapping")
    return data


class Progress:
    """One line on standard error, redrawn as a run moves on (only on long runs, and not with --quiet)."""

    def __init__(self, total: int, policies: int, enabled: bool) -> None:
        self.total = total
        self.policies = policies
        self.enabled = enabled and total * policies >= PROGRESS_FROM
        self.t0 = time.monotonic()
        self.index = 0

    def policy(self, index: int, name: str) -> None:
        self.index = index
        self.name = name

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {share:4.0%}  policy {self.index + 1}/{self.policies} {self.name[:40]:<40}"
            f" {time.monotonic() - self.t0:5.1f}s"
        )
        if done >= self.total and self.index + 1 == self.policies:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _window(args: argparse.Namespace) -> tuple[float | None, float]:
    from frugalserve.accounting import report

    now = time.time()
    since = report.parse_when(args.since, now) if args.since else None
    until = report.parse_when(args.until, now) if args.until else now
    return since, until


def run(args: argparse.Namespace) -> int:
    from frugalserve.config import ConfigError

    config = load_config(args.config)
    if config is None:
        return 2
    try:
        return _run(args, config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # a trace or perf file that cannot be read, a bad --since
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        print(text.rstrip("\n"))


def _run(args: argparse.Namespace, config: Any) -> int:
    from frugalserve.sim import perf as perf_mod
    from frugalserve.sim import report, trace
    from frugalserve.sim.core import Simulation
    from frugalserve.sim.policies import build, parse_setting, parse_sweep

    if args.calibrate:
        url, _ = database_origin(args.database, config)
        since, until = _window(args)
        cals = perf_mod.calibrate(url, config.pools, since, until)
        _emit(args, perf_mod.calibration_yaml(cals))
        return 0
    keep_until = _window(args)[1] if args.until else None
    if args.trace:
        tr = trace.read_trace(args.trace)
    elif args.synthetic:
        tr = trace.synthetic(args.synthetic)
    elif args.from_db:
        url, _ = database_origin(args.database, config)
        since, until = _window(args)
        tr = trace.from_db(url, since, until)
    else:
        print("error: give the traffic: --trace FILE, --synthetic SPEC or --from-db", file=sys.stderr)
        return 2
    objective = report.parse_objective(args.objective) if args.objective else None
    policies = build(
        _raw_config(args.config), [parse_setting(s) for s in args.policy], [parse_sweep(s) for s in args.sweep]
    )
    perf_file = perf_mod.load_perf_file(args.perf) if args.perf else {}
    progress = Progress(len(tr), len(policies), not args.quiet and sys.stderr.isatty())
    results = []
    for i, policy in enumerate(policies):
        progress.policy(i, policy.name)
        perf = {}
        for pool in policy.config.pools:
            overrides = {**perf_file.get(pool.name, {}), **policy.perf_overrides.get(pool.name, {})}
            perf[pool.name] = perf_mod.perf_for(pool, overrides, f"pools.{pool.name}.perf")
        sim = Simulation(policy.config, perf, tr, progress=progress)
        sim.run(keep_until)
        results.append(report.summarize(sim, policy, objective))
    if args.plot:
        report.plot(results, args.plot, objective)
    if args.format == "json":
        _emit(args, report.as_json(results))
    elif args.format == "csv":
        _emit(args, report.as_csv(results))
    else:
        lines = [f"traffic: {tr.source}: {len(tr):,} requests", "", report.table(results, objective), ""]
        lines += report.summary_lines(results, objective)
        if args.plot:
            lines.append(f"trade-off curve: {args.plot}")
        _emit(args, "\n".join(lines))
    return 0
