"""`frugalserve simulate` as a user runs it: the installed command, a config file, a trace, its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED000 = ROOT / "docs" / "examples" / "seed000.yaml"
KEYS = {
    "policy",
    "requests",
    "cost_usd",
    "always_on_cost_usd",
    "ideal_cost_usd",
    "gpu_hours",
    "cold_starts",
    "p95_latency_s",
}


def simulate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugalserve", "simulate", "--quiet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_json(*args: str, cwd: Path) -> list[dict[str, object]]:
    done = simulate(*args, "--format", "json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_sweep_names_each_policy_and_picks_the_cheapest_that_meets_the_objective(tmp_path: Path) -> None:
    common = ("--config", str(SEED000), "--synthetic", "seed000,days=14,model=qwen3-vl", "--objective", "p95_ttft_s=10")
    sweep = ("--sweep", "pools.vl.lifecycle.idle_stop_s=60,600,3600")
    results = run_json(*common, *sweep, cwd=tmp_path)
    assert [r["policy"] for r in results] == ["idle_stop_s=60", "idle_stop_s=600", "idle_stop_s=3600"]
    for r in results:
        assert KEYS <= set(r)
        assert r["requests"] == results[0]["requests"]
    # properties that hold whatever the numbers: always-on does not depend on the policy, and a longer idle
    # timeout never gives more cold starts
    assert len({r["always_on_cost_usd"] for r in results}) == 1
    starts = [r["cold_starts"] for r in results]
    assert starts == sorted(starts, reverse=True)
    # a 60 s timeout on a 45-60 s cold start misses a 10 s P95; the longer ones keep the GPU warm enough
    assert [r["meets_objective"] for r in results] == [False, True, True]
    table = simulate(*common, *sweep, "--plot", str(tmp_path / "curve.png"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "cheapest policy that meets p95_ttft_s<=10: idle_stop_s=600" in table.stdout
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = simulate(*common, *sweep, "--format", "csv", cwd=tmp_path)
    assert csv.stdout.splitlines()[0].startswith("policy,settings,") or "policy" in csv.stdout.splitlines()[0]
    assert len(csv.stdout.splitlines()) == 4


def test_same_seed_same_result_and_another_seed_another(tmp_path: Path) -> None:
    args = ("--config", str(SEED000), "--synthetic", "seed000,days=7,model=qwen3-vl,seed=3")
    assert run_json(*args, cwd=tmp_path) == run_json(*args, cwd=tmp_path)
    other = run_json("--config", str(SEED000), "--synthetic", "seed000,days=7,model=qwen3-vl,seed=4", cwd=tmp_path)
    assert other != run_json(*args, cwd=tmp_path)


def test_always_on_cost_does_not_depend_on_the_traffic(tmp_path: Path) -> None:
    # two traffics over the same 7 days (00:00 of the first to the last request): the same always-on bill
    quiet = run_json(
        "--config", str(SEED000), "--synthetic", "seed000,days=7,model=qwen3-vl,requests_per_day=50", cwd=tmp_path
    )
    busy = run_json(
        "--config", str(SEED000), "--synthetic", "seed000,days=7,model=qwen3-vl,requests_per_day=3000", cwd=tmp_path
    )
    per_s = lambda r: r["always_on_cost_usd"] / r["window_s"]  # noqa: E731
    assert per_s(quiet[0]) == pytest.approx(0.78 / 3600) and per_s(busy[0]) == pytest.approx(0.78 / 3600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--policy", "pools.nope.lifecycle.idle_stop_s=60"), "pools.nope.lifecycle.idle_stop_s: no pool named 'nope'"),
        (("--policy", "pools.vl.lifecycle.idle_stop_s=-5"), "pools[0].lifecycle.idle_stop_s: must be > 0"),
        (("--policy", "pools.vl.perf.decode_tps=0"), "pools.vl.perf.decode_tps"),
        (("--objective", "p42_ttft_s=3"), "--objective: expected one of"),
        (("--sweep", "pools.vl.lifecycle.idle_stop_s"), "--sweep: expected KEY=V1,V2"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = simulate("--config", str(SEED000), "--synthetic", "seed000,days=1", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_bad_trace_line_is_named_and_no_traffic_is_an_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "timestamp,model,prompt_tokens,output_tokens\n2026-01-05T09:00:00Z,qwen3-vl,10,5\n2026-01-05T09:00:01Z,qwen3-vl,abc,5\n"
    )
    done = simulate("--config", str(SEED000), "--trace", str(trace), cwd=tmp_path)
    assert done.returncode == 2 and "t.csv:3: prompt_tokens" in done.stderr, done.stderr
    done = simulate("--config", str(SEED000), cwd=tmp_path)
    assert done.returncode == 2 and "--trace FILE, --synthetic SPEC or --from-db" in done.stderr
