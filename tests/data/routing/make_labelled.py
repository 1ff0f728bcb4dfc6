"""Writes labelled.jsonl, the routing evaluation set: ``python tests/data/routing/make_labelled.py``.

Deterministic (seeded): running it twice writes the same bytes. Families of items with a tier and a reason
for each entry live in the ``families_*`` modules; hand-written traps in ``families_dialogue.hand_written``.
About 27% of each category goes to the holdout split, which is never used to tune weights or thresholds.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import families_chat  # noqa: E402
import families_dialogue  # noqa: E402
import families_images  # noqa: E402
import families_photos  # noqa: E402
import families_text  # noqa: E402
from builder import Collector, Item  # noqa: E402

SEED = 20261121
HOLDOUT = 0.27
NO_MAX_TOKENS = 0.35
OUT = HERE / "labelled.jsonl"


def build() -> list[Item]:
    rng = random.Random(SEED)
    c = Collector()
    for family in (
        families_chat.chit_chat,
        families_chat.factual,
        families_images.screenshots,
        families_images.charts,
        families_images.scans,
        families_photos.photos,
        families_photos.multi_image,
        families_text.code,
        families_text.math,
        families_text.long_documents,
        families_text.tools,
        families_chat.translation,
        families_chat.multilingual,
        families_dialogue.multi_turn,
        families_dialogue.more,
    ):
        family(c, rng)
    families_dialogue.hand_written(c)
    drop_max_tokens(c.items, random.Random(SEED + 2))
    return split(c.items, random.Random(SEED + 1))


def drop_max_tokens(items: list[Item], rng: random.Random) -> None:
    """Many clients never send max_tokens: remove it from a seeded third of the items, whatever their tier,
    so that the router cannot score well by reading the answer length the labeller wrote."""
    for item in items:
        if "max_tokens" in item["request"] and rng.random() < NO_MAX_TOKENS:
            del item["request"]["max_tokens"]


def split(items: list[Item], rng: random.Random) -> list[Item]:
    """Give ids per category and send round(27%) of each (category, tier) cell to holdout: stratified by
    category and by label, so the holdout has every tier wherever the category has it."""
    by_category: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_category[item["category"]].append(item)
    out: list[Item] = []
    for category, group in by_category.items():
        cells: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(group):
            cells[item["tier"]].append(i)
        holdout: set[int] = set()
        for tier in sorted(cells):
            idx = cells[tier]
            holdout.update(rng.sample(idx, round(len(idx) * HOLDOUT)))
        for i, item in enumerate(group):
            ordered = {"id": f"{category}-{i + 1:03d}", "split": "holdout" if i in holdout else "tune"}
            ordered.update(item)
            out.append(ordered)
    return out


def main() -> None:
    items = build()
    with OUT.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"{len(items)} items -> {OUT}")


if __name__ == "__main__":
    main()
