"""Scores the router against the labelled set (issue 11, "Evaluation").

    PYTHONPATH=src python benchmarks/routing_eval.py [--split tune|holdout|all] [--format table|json]
                                                     [--config default|untuned]

Each item of ``tests/data/routing/labelled.jsonl`` becomes the request a client would send: its image
placeholders are rendered as PNGs of the stated size (deterministic pixels) and sent as data URLs. The
request then goes through the gateway's real stages: shape checks (``api.validate``), the budget stage
(``prepare_chat`` with the default ``LimitsConfig()``, so images are resized and counted exactly), then
``routing.features.extract`` and ``routing.policy.decide`` over a snapshot of three warm tiers.

Printed: agreement with the labels per split, the confusion matrix, agreement per category, and the GPU
cost the routing implies against sending everything to L or everything to S, with the quality risk of
each (how many requests go to a tier below their label). The cost model is :func:`gpu_seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import io
import json
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from frugalserve.api import validate
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits, LimitsConfig
from frugalserve.budget.prepare import prepare_chat
from frugalserve.errors import ContextLengthExceeded, InvalidRequest
from frugalserve.routing.config import RoutingConfig, ScoreWeights
from frugalserve.routing.features import Features, extract
from frugalserve.routing.policy import decide
from frugalserve.routing.snapshot import PoolsSnapshot, PoolView

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "data" / "routing" / "labelled.jsonl"
TIERS = ("S", "M", "L")


@dataclass(frozen=True)
class Tier:
    """One tier of the evaluation's deployment. The throughputs are assumptions (stated in
    docs/routing-evaluation.md), not measurements: a replica's aggregate tokens per second while it runs
    at its target batch, so that one request's share of the GPU is its tokens over that rate."""

    name: str
    pool: str
    model: str
    gpu: str
    usd_per_hour: float
    context_tokens: int
    prefill_tps: float
    decode_tps: float


DEPLOYMENT = (
    Tier("S", "qwen3-vl-2b", "Qwen3-VL-2B-Instruct", "L4 24 GB", 0.80, 32_768, 12_000, 1_200),
    Tier("M", "qwen3-vl-8b", "Qwen3-VL-8B-Instruct", "L40S 48 GB", 1.90, 65_536, 8_000, 900),
    Tier("L", "qwen3-vl-32b", "Qwen3-VL-32B-Instruct", "H100 80 GB", 4.50, 131_072, 6_000, 700),
)
# Output tokens a request is charged for: what it asked for, up to OUTPUT_CAP (clients ask with headroom);
# OUTPUT_DEFAULT when it gave no max_tokens.
OUTPUT_DEFAULT = 400
OUTPUT_CAP = 2048


# The weights shipped before the evaluation (hand-set, never tuned), kept to show what tuning changed;
# "default" is RoutingConfig() as shipped now (docs/routing-evaluation.md says how it was chosen).
UNTUNED = RoutingConfig(
    thresholds=(0.30, 0.60),
    weights=ScoreWeights(
        image_tokens_per_1k=0.12,
        image_tokens_max=0.36,
        extra_image=0.10,
        long_prompt=0.15,
        long_prompt_tokens=2000,
        long_prompt_max=0.75,
        reasoning=0.20,
        tools=0.15,
        json_schema=0.10,
        depth=0.02,
        depth_max=0.15,
        max_tokens=0.10,
        max_tokens_free=2000,
        max_tokens_max=0.30,
        language=0.10,
    ),
)
CONFIGS = {"default": RoutingConfig(), "untuned": UNTUNED}


def snapshot(now: float = 0.0, deployment: Sequence[Tier] = DEPLOYMENT) -> PoolsSnapshot:
    """Every tier warm (one ready replica, idle): what the score and fit alone decide, with no spill."""
    limits = LimitsConfig()
    views = tuple(
        PoolView(
            name=t.pool,
            tier=t.name,
            usd_per_hour=t.usd_per_hour,
            reserved=False,
            context_tokens=t.context_tokens,
            max_new_tokens=None,
            clamps=True,
            max_images=limits.image.max_count,
            max_visual_tokens=limits.max_visual_tokens,
            modalities=frozenset(("text", "image", "video")),
            state="ready",
            replicas=1,
            ready_replicas=1,
            in_flight=0,
            held=0,
            capacity=16,
            eta_s=0.0,
            start_s=60.0,
            wake_s=2.0,
            min_warm_s=300.0,
            linger_s=600.0,
        )
        for t in deployment
    )
    return PoolsSnapshot(now=now, pools=views)


def gpu_seconds(tier: Tier, prompt_tokens: int, output_tokens: int) -> float:
    """A request's share of its GPU: prompt tokens at the prefill rate plus output tokens at the decode
    rate (image tokens are prompt tokens: the vision encoder's work is counted with the prefill)."""
    return prompt_tokens / tier.prefill_tps + output_tokens / tier.decode_tps


def output_tokens(max_tokens: int | None) -> int:
    return OUTPUT_DEFAULT if max_tokens is None else min(max_tokens, OUTPUT_CAP)


def load(path: Path = LABELLED, split: str = "all") -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    return items if split == "all" else [i for i in items if i["split"] == split]


def render(url: str, spec: Mapping[str, Any]) -> str:
    """A PNG data URL of the placeholder's size. Pixels come from the URL's hash: the same placeholder is
    the same image, different placeholders are different images (the budget stage drops exact duplicates)."""
    w, h = int(spec["width"]), int(spec["height"])
    seed = int.from_bytes(hashlib.blake2b(f"{url}|{w}x{h}".encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    mode = "L" if spec.get("kind") == "scan" else "RGB"
    channels = 1 if mode == "L" else 3
    tile = Image.frombytes(mode, (16, 16), rng.randbytes(16 * 16 * channels))
    img = tile.resize((w, h), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def materialise(item: Mapping[str, Any], cache: dict[tuple[str, int, int], str] | None = None) -> dict[str, Any]:
    """The item's request with every image placeholder replaced by its PNG data URL."""
    body = copy.deepcopy(item["request"])
    specs = item.get("images", {})
    for message in body["messages"]:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") != "image_url":
                continue
            url = part["image_url"]["url"]
            spec = specs[url]
            key = (url, int(spec["width"]), int(spec["height"]))
            if cache is None or key not in cache:
                data = render(url, spec)
                if cache is None:
                    part["image_url"]["url"] = data
                    continue
                cache[key] = data
            part["image_url"]["url"] = cache[key]
    return body


@dataclass
class Outcome:
    id: str
    split: str
    category: str
    lang: str
    label: str
    routed: str | None  # None: refused (no tier fits)
    action: str
    reason: str
    score: float
    top_features: list[str]
    prompt_tokens: int
    image_tokens: int
    images: int
    output_tokens: int
    error: str | None = None


@dataclass(frozen=True)
class Measured:
    """One item after the stages that do not depend on the routing config: what decide() is given."""

    item: Mapping[str, Any]
    features: Features
    prompt_tokens: int
    image_tokens: int
    images: int
    output_tokens: int


async def measure(
    item: Mapping[str, Any], fetcher: Fetcher, cache: dict[tuple[str, int, int], str] | None = None
) -> Measured:
    """One item through validate -> prepare_chat -> extract, as the gateway runs them."""
    body = materialise(item, cache)
    headers = {k.lower(): v for k, v in item.get("headers", {}).items()}
    validate.chat(body)
    validate.messages(body, validate.COUNTED_PARTS)
    prepared = await prepare_chat(body, LimitsConfig(), fetcher)
    return Measured(
        item,
        extract(body, prepared, headers),
        prepared.prompt_tokens,
        prepared.image_tokens,
        prepared.images,
        output_tokens(prepared.max_tokens_requested),
    )


async def measure_all(items: Iterable[Mapping[str, Any]]) -> list[Measured]:
    cache: dict[tuple[str, int, int], str] = {}
    async with Fetcher(FetchLimits(allow_http=False)) as fetcher:
        return [await measure(item, fetcher, cache) for item in items]


def route_measured(m: Measured, cfg: RoutingConfig, snap: PoolsSnapshot) -> Outcome:
    """decide() on one measured item."""
    item = m.item
    base = dict(
        id=item["id"],
        split=item["split"],
        category=item["category"],
        lang=item.get("lang", ""),
        label=item["tier"],
        prompt_tokens=m.prompt_tokens,
        image_tokens=m.image_tokens,
        images=m.images,
        output_tokens=m.output_tokens,
    )
    try:
        route = decide(m.features, snap, cfg)
    except (ContextLengthExceeded, InvalidRequest) as exc:
        return Outcome(routed=None, action="refused", reason="fit", score=0.0, top_features=[], error=str(exc), **base)
    return Outcome(
        routed=route.tier,
        action=route.action,
        reason=route.reason,
        score=round(route.score, 4),
        top_features=list(route.top_features),
        **base,
    )


async def evaluate(
    items: Iterable[Mapping[str, Any]], cfg: RoutingConfig | None = None, snap: PoolsSnapshot | None = None
) -> list[Outcome]:
    cfg = cfg or RoutingConfig()
    snap = snap or snapshot()
    return [route_measured(m, cfg, snap) for m in await measure_all(items)]


def _rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


def risk(pairs: Iterable[tuple[str, str | None]]) -> dict[str, int]:
    """Requests sent below their label, by how far (the quality risk), above it (the waste), and refused."""
    out = {"L->S": 0, "L->M": 0, "M->S": 0, "under": 0, "over": 0, "refused": 0}
    for label, routed in pairs:
        if routed is None:
            out["refused"] += 1
            continue
        gap = _rank(label) - _rank(routed)
        if gap > 0:
            out["under"] += 1
            out[f"{label}->{routed}"] += 1
        elif gap < 0:
            out["over"] += 1
    return out


def summarise(outcomes: Sequence[Outcome], deployment: Sequence[Tier] = DEPLOYMENT) -> dict[str, Any]:

    def agreement(group: Sequence[Outcome]) -> dict[str, Any]:
        hits = sum(o.routed == o.label for o in group)
        return {"n": len(group), "agree": hits, "rate": round(hits / len(group), 4) if group else None}

    by_split: dict[str, list[Outcome]] = defaultdict(list)
    by_category: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_split[o.split].append(o)
        by_category[o.category].append(o)
    confusion = {label: {r: 0 for r in (*TIERS, "refused")} for label in TIERS}
    for o in outcomes:
        confusion[o.label][o.routed or "refused"] += 1

    def cost(choose: Any) -> dict[str, Any]:
        """USD and GPU-seconds when each request goes where ``choose(outcome)`` says; a request whose
        prompt plus answer does not fit that tier's context goes to the next tier that fits."""
        usd = seconds = 0.0
        moved = 0
        pairs: list[tuple[str, str | None]] = []
        for o in outcomes:
            name = choose(o)
            if name is None:
                pairs.append((o.label, None))
                continue
            fit = [t for t in deployment if _rank(t.name) >= _rank(name)]
            fit = [t for t in fit if o.prompt_tokens + o.output_tokens <= t.context_tokens]
            if not fit:
                pairs.append((o.label, None))
                continue
            tier = fit[0]
            moved += tier.name != name
            s = gpu_seconds(tier, o.prompt_tokens, o.output_tokens)
            seconds += s
            usd += s * tier.usd_per_hour / 3600
            pairs.append((o.label, tier.name))
        return {"usd": round(usd, 6), "gpu_s": round(seconds, 3), "moved_up_to_fit": moved, "risk": risk(pairs)}

    strategies = {
        "router": cost(lambda o: o.routed),
        "labels": cost(lambda o: o.label),
        "all-L": cost(lambda o: "L"),
        "all-S": cost(lambda o: "S"),
    }
    per_1000 = {k: round(v["usd"] / max(len(outcomes), 1) * 1000, 4) for k, v in strategies.items()}
    return {
        "items": len(outcomes),
        "agreement": {k: agreement(v) for k, v in sorted(by_split.items())} | {"all": agreement(outcomes)},
        "confusion": confusion,
        "categories": {k: agreement(v) for k, v in sorted(by_category.items())},
        "costs": strategies,
        "usd_per_1000_requests": per_1000,
        "actions": dict(Counter(o.action for o in outcomes)),
        "deployment": [asdict(t) for t in deployment],
        "misrouted": [
            {"id": o.id, "label": o.label, "routed": o.routed, "score": o.score, "top": o.top_features}
            for o in outcomes
            if o.routed != o.label
        ],
    }


def table(summary: Mapping[str, Any]) -> str:
    lines = [
        f"{summary['items']} requests, routing config: {summary.get('config', '?')}",
        "",
        "agreement with the labels",
    ]
    for split, a in summary["agreement"].items():
        lines.append(f"  {split:<8} {a['agree']:>4}/{a['n']:<4} {a['rate']:.1%}")
    lines += [
        "",
        "confusion (rows: label, columns: routed)",
        "        " + "".join(f"{c:>9}" for c in (*TIERS, "refused")),
    ]
    for label, row in summary["confusion"].items():
        lines.append(f"  {label:<6}" + "".join(f"{row[c]:>9}" for c in (*TIERS, "refused")))
    lines += ["", "per category"]
    for cat, a in summary["categories"].items():
        lines.append(f"  {cat:<14} {a['agree']:>3}/{a['n']:<3} {a['rate']:.0%}")
    lines += ["", "GPU cost of the set (cost model: docs/routing-evaluation.md)"]
    head = (
        f"  {'strategy':<8} {'USD':>10} {'GPU-s':>9} {'$/1k req':>9} {'under':>6} {'L->S':>5} {'L->M':>5} {'M->S':>5}"
    )
    lines += [head + f" {'over':>5} {'refused':>8}"]
    for name, c in summary["costs"].items():
        r = c["risk"]
        lines.append(
            f"  {name:<8} {c['usd']:>10.4f} {c['gpu_s']:>9.1f} {summary['usd_per_1000_requests'][name]:>9.4f} "
            f"{r['under']:>6} {r['L->S']:>5} {r['L->M']:>5} {r['M->S']:>5} {r['over']:>5} {r['refused']:>8}"
        )
    lines += ["", "actions: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["actions"].items()))]
    lines += ["", "disagreements (id: label -> routed, score, top features)"]
    for m in summary["misrouted"]:
        lines.append(
            f"  {m['id']:<22} {m['label']} -> {m['routed'] or 'refused'}  {m['score']:.3f}  {', '.join(m['top'])}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "holdout", "all"), default="all")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--config", choices=tuple(CONFIGS), default="default", help="routing weights and thresholds")
    parser.add_argument("--data", type=Path, default=LABELLED)
    args = parser.parse_args(argv)
    outcomes = asyncio.run(evaluate(load(args.data, args.split), CONFIGS[args.config]))
    summary = summarise(outcomes) | {"config": args.config}
    if args.format == "json":
        summary["outcomes"] = [asdict(o) for o in outcomes]
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
