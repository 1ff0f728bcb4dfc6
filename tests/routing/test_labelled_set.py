"""The labelled routing set (tests/data/routing/labelled.jsonl) and the harness that scores the router on it
(benchmarks/routing_eval.py): the set is well formed, the harness counts what the budget stage counts, and
the router agrees with the labels on the held-out split."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "routing"
LABELLED = DATA / "labelled.jsonl"
CATEGORIES = {
    "chit-chat",
    "factual",
    "screenshot",
    "chart",
    "scan",
    "photo",
    "multi-image",
    "code",
    "math",
    "long-document",
    "tools",
    "translation",
    "multilingual",
    "multi-turn",
}
HAN = re.compile(r"[\u4e00-\u9fff]")
# Holdout agreement the router must reach with the default RoutingConfig(). The labels are one engineer's
# judgement and about a fifth of them sit on an S/M boundary where a second engineer could differ, so
# agreement near 1 is not the aim. The tune split reaches 0.797; with 83 holdout items one standard error
# of a proportion near 0.78 is 0.045, so 0.72 is the tune figure less about 1.6 of them (rounded down):
# a router that generalises passes, one that lost a signal (see the report's planted mistake) does not.
HOLDOUT_FLOOR = 0.72


@pytest.fixture(scope="module")
def items() -> list[dict[str, Any]]:
    with LABELLED.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    pytest.importorskip("frugalserve.routing.policy", reason="the router (branch routing) is not in this tree")
    return _load("routing_eval", ROOT / "benchmarks" / "routing_eval.py")


def _texts(item: dict[str, Any]) -> str:
    out = []
    for m in item["request"]["messages"]:
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out += [p["text"] for p in c if p.get("type") == "text"]
    return "\n".join(out)


def _image_urls(item: dict[str, Any]) -> list[str]:
    return [
        p["image_url"]["url"]
        for m in item["request"]["messages"]
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image_url"
    ]


# --- the set ---------------------------------------------------------------------------------------------


def test_set_has_at_least_300_items_with_unique_ids(items: list[dict[str, Any]]) -> None:
    assert len(items) >= 300
    ids = [i["id"] for i in items]
    assert len(set(ids)) == len(ids)


def test_every_item_has_a_tier_a_reason_and_a_chat_body(items: list[dict[str, Any]]) -> None:
    for item in items:
        assert item["tier"] in ("S", "M", "L"), item["id"]
        assert len(item["why"]) >= 10, item["id"]
        assert item["split"] in ("tune", "holdout"), item["id"]
        assert item["request"]["model"] == "auto", item["id"]
        assert item["request"]["messages"], item["id"]


def test_every_category_is_present_and_every_tier_is_used(items: list[dict[str, Any]]) -> None:
    assert {i["category"] for i in items} == CATEGORIES
    tiers = Counter(i["tier"] for i in items)
    assert min(tiers[t] for t in ("S", "M", "L")) >= 30, tiers


def test_chinese_is_a_good_share(items: list[dict[str, Any]]) -> None:
    chinese = [i for i in items if HAN.search(_texts(i)) and i["lang"] == "zh"]
    assert len(chinese) >= 0.15 * len(items)
    assert {i["category"] for i in chinese} >= CATEGORIES - {"multilingual"}


def test_image_placeholders_and_their_sizes_match(items: list[dict[str, Any]]) -> None:
    for item in items:
        urls = _image_urls(item)
        assert set(urls) == set(item["images"]), item["id"]
        assert len(urls) <= 16, item["id"]  # LimitsConfig().image.max_count
        for spec in item["images"].values():
            assert spec["width"] >= 32 and spec["height"] >= 32 and spec["kind"], item["id"]


def test_holdout_is_27_percent_and_stratified_by_category_and_tier(items: list[dict[str, Any]]) -> None:
    holdout = [i for i in items if i["split"] == "holdout"]
    assert 0.25 <= len(holdout) / len(items) <= 0.30
    cells: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i in items:
        cells[i["category"], i["tier"]].append(i["split"])
    for (category, tier), splits in cells.items():
        if len(splits) >= 4:
            share = splits.count("holdout") / len(splits)
            assert 0.15 <= share <= 0.40, (category, tier, share)


def test_generator_rewrites_the_same_file(items: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator puts its folder on sys.path for its sibling modules (builder, corpus, families_*):
    # undone after the test so that those generic names do not leak into other tests.
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    try:
        rebuilt = _load("make_labelled", DATA / "make_labelled.py").build()
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
    assert [json.dumps(i, ensure_ascii=False) for i in rebuilt] == [json.dumps(i, ensure_ascii=False) for i in items]


# --- the harness -----------------------------------------------------------------------------------------


def test_gpu_seconds_charge_prompt_at_prefill_and_output_at_decode(harness: ModuleType) -> None:
    s = harness.DEPLOYMENT[0]  # 12,000 prefill and 1,200 decode tokens per second
    assert harness.gpu_seconds(s, 12_000, 1_200) == pytest.approx(2.0)
    assert harness.output_tokens(None) == 400
    assert harness.output_tokens(50) == 50
    assert harness.output_tokens(8000) == 2048


def test_risk_counts_requests_below_and_above_their_label(harness: ModuleType) -> None:
    pairs = [("L", "S"), ("L", "M"), ("M", "S"), ("S", "L"), ("M", "M"), ("L", None)]
    assert harness.risk(pairs) == {"L->S": 1, "L->M": 1, "M->S": 1, "under": 3, "over": 1, "refused": 1}


def test_render_is_a_png_of_the_stated_size_and_distinct_per_placeholder(harness: ModuleType) -> None:
    import base64
    import io

    from PIL import Image

    spec = {"width": 820, "height": 240, "kind": "screenshot"}
    a = harness.render("image://a", spec)
    assert a == harness.render("image://a", spec)
    assert a != harness.render("image://b", spec)
    img = Image.open(io.BytesIO(base64.b64decode(a.split(",", 1)[1])))
    assert (img.format, img.size) == ("PNG", (820, 240))


async def test_harness_counts_image_tokens_exactly_and_routes_a_sample(
    harness: ModuleType, items: list[dict[str, Any]]
) -> None:
    crop = next(i for i in items if "image://screenshot-820x240-crop0" in i["images"])
    original = json.dumps(crop)
    sample = [crop, *[i for i in items if i["category"] == "chit-chat"][:2]]
    outcomes = await harness.evaluate(sample)
    # 820x240 -> 832x256 (round to multiples of 32, half to even), 208 pads, + vision start and end.
    assert (outcomes[0].images, outcomes[0].image_tokens) == (1, 208 + 2)
    assert outcomes[0].prompt_tokens > outcomes[0].image_tokens
    assert all(o.routed in ("S", "M", "L") for o in outcomes)
    assert json.dumps(crop) == original  # the item itself still holds the placeholder


# --- the router on the held-out split -------------------------------------------------------------------


@pytest.fixture(scope="module")
def holdout_outcomes(harness: ModuleType, items: list[dict[str, Any]]) -> list[Any]:
    import asyncio

    from frugalserve.routing.config import RoutingConfig

    # The defaults, as shipped: what a deployment that sets no weights gets.
    return asyncio.run(harness.evaluate([i for i in items if i["split"] == "holdout"], RoutingConfig()))


def test_router_agrees_with_the_holdout_labels_above_the_floor(holdout_outcomes: list[Any]) -> None:
    agree = sum(o.routed == o.label for o in holdout_outcomes) / len(holdout_outcomes)
    assert agree >= HOLDOUT_FLOOR, f"holdout agreement {agree:.3f} < {HOLDOUT_FLOOR}"


def test_no_holdout_request_labelled_L_goes_to_S(holdout_outcomes: list[Any]) -> None:
    l_to_s = [o.id for o in holdout_outcomes if o.label == "L" and o.routed == "S"]
    assert l_to_s == []
