"""Photos and multi-image comparisons. Each entry carries its own tier and the reason for it."""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

from builder import Collector, Images, body, user


def photos(c: Collector, rng: random.Random) -> None:
    sizes = [(4032, 3024), (1600, 1200), (1080, 1080), (640, 480), (3000, 4000)]
    simple = [
        ("en", "What animal is this?", "Naming the main object in a photo: S."),
        ("en", "Write alt text for this photo, one sentence.", "A one-sentence caption: S."),
        ("en", "What colour is the car?", "One coarse visual attribute: S."),
        ("zh", "这张照片里是什么花？", "Identify a common flower, Chinese: S."),
        ("zh", "给这张照片写一句朋友圈文案。", "One casual caption line in Chinese: S."),
        ("en", "Is it day or night in this picture?", "Coarse scene attribute: S."),
        ("es", "¿Qué comida es esta?", "Naming a dish, Spanish: S."),
        ("en", "Give this photo a short title for my album.", "A few words of caption: S."),
    ]
    for i, (lang, text, why) in enumerate(simple):
        w, h = sizes[i % len(sizes)]
        im = Images()
        c.add("photo", lang, "S", why, body(user(text, im("photo", w, h)), max_tokens=80), im)
    detailed = [
        (
            "en",
            "Count the people in this photo and describe what each group is doing.",
            "Counting and describing several groups: fine-grained perception, M.",
        ),
        ("zh", "照片里的路牌写的是什么？翻译成英文。", "Reading a Chinese street sign in a photo and translating: M."),
        ("en", "Estimate the calories of this meal, item by item.", "Identifying several foods and estimating: M."),
        ("en", "What's wrong with this plant? The leaves are turning yellow.", "Diagnosis from visual symptoms: M."),
        ("en", "Describe this room in detail for a real-estate listing.", "A detailed, accurate description: M."),
        ("ja", "この写真の看板に書いてある内容を教えてください。", "Reading Japanese signage in a photo: M."),
        (
            "en",
            "Read the nutrition label in this photo and tell me the sugar per serving.",
            "Small print on a product photo: M.",
        ),
        ("zh", "这道菜怎么做？根据照片推测一下做法。", "Recognising a dish and inferring a recipe: M."),
    ]
    for i, (lang, text, why) in enumerate(detailed):
        w, h = sizes[(i + 2) % len(sizes)]
        im = Images()
        c.add("photo", lang, "M", why, body(user(text, im("photo", w, h)), max_tokens=700), im)
    im = Images()
    c.add(
        "photo",
        "en",
        "L",
        "A whiteboard architecture photo turned into a full Terraform plan: perception plus long expert code, L.",
        body(
            user(
                "This is a photo of our whiteboard architecture diagram. Write the Terraform for it on AWS, "
                "with networking, IAM and autoscaling.",
                im("photo", 4032, 3024),
            ),
            max_tokens=5000,
        ),
        im,
    )
    im = Images()
    c.add(
        "photo",
        "en",
        "L",
        "A physics problem photographed from a textbook, asking for a full derivation: multi-step reasoning, L.",
        body(
            user(
                "Solve the problem in this photo step by step, deriving every formula you use.", im("photo", 3024, 4032)
            ),
            max_tokens=3000,
        ),
        im,
    )
    rng.random()


def multi_image(c: Collector, rng: random.Random) -> None:
    two = [
        (
            "en",
            "Compare these two screenshots: what changed in the UI?",
            "screenshot",
            (1920, 1080),
            "Diffing two full screenshots: M.",
        ),
        (
            "en",
            "Which of these two product photos is better for a listing, and why?",
            "photo",
            (1600, 1200),
            "A comparative judgement between two photos: M.",
        ),
        ("zh", "这两张发票的金额一样吗？", "scan", (1240, 1754), "Reading and comparing two Chinese invoices: M."),
        (
            "en",
            "Are these two photos of the same person?",
            "photo",
            (1080, 1080),
            "A comparison with care required: M (and the answer should be cautious).",
        ),
        (
            "en",
            "Spot the differences between these two charts.",
            "chart",
            (1200, 800),
            "Comparing two charts series by series: M.",
        ),
    ]
    for lang, text, kind, (w, h), why in two:
        im = Images()
        c.add(
            "multi-image",
            lang,
            "M",
            why,
            body(user(text, im(kind, w, h, "a"), im(kind, w, h, "b")), max_tokens=600),
            im,
        )
    im = Images()
    receipts = [im("scan", 600, 1400, f"r{i}") for i in range(3)]
    c.add(
        "multi-image",
        "en",
        "M",
        "Three small receipts summed: several OCR reads and an addition, M.",
        body(user("Add up the totals of these three receipts.", *receipts), max_tokens=300),
        im,
    )
    im = Images()
    shots = [im("photo", 1600, 1200, f"{i}") for i in range(4)]
    c.add(
        "multi-image",
        "en",
        "M",
        "Pick the best of four photos for a listing: comparison across images, M.",
        body(user("Which of these four photos should be the cover of my Airbnb listing?", *shots), max_tokens=400),
        im,
    )
    im = Images()
    shots = [im("screenshot", 1170, 2532, f"{i}") for i in range(3)]
    c.add(
        "multi-image",
        "zh",
        "M",
        "三张手机截图串起来理解一个操作流程：多图但任务中等，M。",
        body(user("这三张截图是我的操作步骤，为什么最后支付失败了？", *shots), max_tokens=600),
        im,
    )
    im = Images()
    shots = [im("photo", 640, 480, f"{i}") for i in range(2)]
    c.add(
        "multi-image",
        "en",
        "S",
        "Two small photos, a yes/no on whether they show the same object: easy, S.",
        body(user("Same mug in both pictures? yes or no", *shots), max_tokens=5),
        im,
    )
    big = [
        (
            "en",
            8,
            "scan",
            (2480, 3508),
            "These are 8 pages of a scanned quarterly report. Summarise and reconcile "
            "every number that appears on more than one page.",
            "Eight full pages cross-referenced for consistency: many images and careful reasoning, L.",
        ),
        (
            "en",
            12,
            "photo",
            (4032, 3024),
            "Photos from a house inspection. Write an inspection report: every defect, "
            "its severity and the estimated repair cost.",
            "Twelve photos turned into a structured expert report: L.",
        ),
        (
            "en",
            6,
            "chart",
            (1600, 900),
            "These six charts are our product KPIs. What story do they tell together, "
            "and what would you investigate first?",
            "Cross-chart analysis of six charts: L.",
        ),
        (
            "zh",
            10,
            "screenshot",
            (1920, 1080),
            "这是十张用户操作录屏的截图。请还原用户的完整操作路径，指出体验问题并给出改进方案。",
            "十张截图还原流程并做体验分析：多图、长推理，L。",
        ),
        (
            "en",
            16,
            "photo",
            (1080, 1080),
            "Here are 16 product photos. Group them by product, flag duplicates and pick the best shot of each.",
            "Sixteen images compared against each other: L.",
        ),
        (
            "en",
            7,
            "scan",
            (1700, 2200),
            "Seven scanned pages of handwritten lab notebook. Transcribe them and "
            "reconstruct the experiment's procedure and results.",
            "Handwriting over seven pages plus reconstruction: L.",
        ),
    ]
    for lang, n, kind, (w, h), text, why in big:
        im = Images()
        refs = [im(kind, w, h, f"{i}") for i in range(n)]
        c.add("multi-image", lang, "L", why, body(user(text, *refs), max_tokens=4000), im)
    rng.random()
