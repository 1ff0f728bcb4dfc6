"""Screenshots, charts and scanned documents. Each entry carries its own tier and the reason for it."""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

from builder import Collector, Images, body, schema, user

SCREEN = [(1920, 1080), (2560, 1440), (1366, 768), (2880, 1800), (3840, 2160)]


PHONE = [(1170, 2532), (1080, 2400), (750, 1334)]


def screenshots(c: Collector, rng: random.Random) -> None:
    for i, (w, h) in enumerate([(820, 240), (640, 360), (1000, 300)]):
        im = Images()
        c.add(
            "screenshot",
            "en",
            "S",
            f"Read the text of a small {w}x{h} cropped screenshot: simple OCR, S.",
            body(user("What does the error message in this screenshot say?", im("screenshot", w, h, f"crop{i}"))),
            im,
        )
    for i, (w, h) in enumerate(PHONE):
        im = Images()
        c.add(
            "screenshot",
            "en",
            "S",
            "Copy one phone number from a phone screenshot: a lookup in an image, S reads large UI text.",
            body(user("What's the phone number shown here?", im("screenshot", w, h, f"phone{i}"))),
            im,
        )
    im = Images()
    c.add(
        "screenshot",
        "en",
        "S",
        "A yes/no about a whole UI (dark mode or not): coarse visual cue, S.",
        body(user("Is dark mode on in this screenshot? yes or no", im("screenshot", 1366, 768)), max_tokens=5),
        im,
    )
    tasks = [
        (
            "en",
            "This is my IDE with a stack trace. What's wrong and how do I fix it?",
            800,
            "Reading a stack trace in a screenshot and proposing a fix: OCR plus code reasoning, M.",
        ),
        (
            "en",
            "Describe the layout of this web page and list every button label.",
            600,
            "Dense UI reading that must be complete: M (2B misses small labels).",
        ),
        ("zh", "这个报错截图是什么意思？怎么解决？", 800, "Explaining an error dialog in Chinese with a fix: M."),
        (
            "en",
            "Write the Playwright selectors for the login form fields in this screenshot.",
            500,
            "UI understanding turned into code: M.",
        ),
        (
            "en",
            "Which settings in this screenshot would I change to stop the app from syncing over mobile data?",
            400,
            "Locating the right controls among many in a settings page: M.",
        ),
        (
            "zh",
            "帮我把这个截图里的表格整理成Markdown。",
            1200,
            "Transcribing a table from a screenshot into Markdown, Chinese instructions: M.",
        ),
        (
            "en",
            "Summarise the open pull requests shown in this GitHub screenshot.",
            600,
            "Many small text items to read and group: M.",
        ),
        (
            "en",
            "Our Grafana panel is in this screenshot. What does the p99 latency do after 14:00?",
            400,
            "Reading a time series in a dashboard screenshot: chart reading, M.",
        ),
    ]
    for i, (lang, text, mt, why) in enumerate(tasks):
        w, h = SCREEN[i % len(SCREEN)]
        im = Images()
        c.add("screenshot", lang, "M", why, body(user(text, im("screenshot", w, h)), max_tokens=mt), im)
    for i, (w, h) in enumerate(PHONE[:2]):
        im = Images()
        c.add(
            "screenshot",
            "en",
            "M",
            "Translate and explain every message in a chat app screenshot: many lines of small text, M.",
            body(
                user(
                    "Translate these chat messages to English and tell me what they're arguing about.",
                    im("screenshot", w, h, f"chat{i}"),
                )
            ),
            im,
        )
    big = [
        (
            "Recreate this dashboard as a React + Tailwind component, with every chart as a Recharts component and "
            "realistic mock data. Match spacing and colours.",
            (2560, 1440),
            "Pixel-faithful UI-to-code generation of a whole dashboard: long structured output, L.",
        ),
        (
            "Turn this Figma mockup into a complete, accessible HTML/CSS page (no frameworks).",
            (3840, 2160),
            "A whole page of code from a 4K mockup: long, precise generation, L.",
        ),
        (
            "这是我们系统的监控大盘截图。请分析各个面板之间的关系，找出这次故障的根本原因，并给出详细的排查步骤。",
            (3840, 2160),
            "Root-cause reasoning across many panels of a dashboard, in Chinese: multi-step analysis, L.",
        ),
    ]
    for i, (text, (w, h), why) in enumerate(big):
        im = Images()
        lang = "zh" if i == 2 else "en"
        c.add("screenshot", lang, "L", why, body(user(text, im("screenshot", w, h)), max_tokens=4000), im)
    rng.random()


def charts(c: Collector, rng: random.Random) -> None:
    sizes = [(1200, 800), (1600, 900), (800, 600), (1000, 1000)]
    for w, h in sizes[:3]:
        im = Images()
        c.add(
            "chart",
            "en",
            "S",
            "Reading a chart's title only: large text, no values, S.",
            body(user("What is the title of this chart?", im("chart", w, h)), max_tokens=30),
            im,
        )
    im = Images()
    c.add(
        "chart",
        "zh",
        "S",
        "只问图表类型（柱状图还是折线图）：粗粒度识别，小模型即可。",
        body(user("这是柱状图还是折线图？", im("chart", 800, 600)), max_tokens=10),
        im,
    )
    reads = [
        (
            "en",
            "What was the revenue in Q3 according to this bar chart?",
            "Reading a value off an axis reliably needs the 8B; 2B often misreads scales.",
        ),
        (
            "en",
            "Describe the trend in this line chart and point out any anomalies.",
            "Trend plus anomalies over a whole series: chart reasoning, M.",
        ),
        ("zh", "这张图表显示了什么趋势？哪个月份最高？", "Trend and argmax in a Chinese chart question: M."),
        ("en", "Convert this chart into a markdown table of its values.", "Extracting every data point: M."),
        (
            "en",
            "Which product line grew fastest between 2022 and 2024 in this chart?",
            "Comparing slopes of several series: M.",
        ),
        ("zh", "请把这张饼图里每个部分的百分比列出来。", "Reading every slice label of a pie chart: M."),
        ("en", "Does this scatter plot suggest a correlation? Roughly how strong?", "Judging correlation visually: M."),
        ("en", "Is the y-axis of this chart truncated in a misleading way?", "A critique of chart design: M."),
        ("ja", "このグラフから読み取れる主な傾向を説明してください。", "Japanese chart trend explanation: M."),
        ("en", "What's the difference between the highest and lowest bar?", "Two readings and a subtraction: M."),
    ]
    for i, (lang, text, why) in enumerate(reads):
        w, h = sizes[i % len(sizes)]
        im = Images()
        c.add("chart", lang, "M", why, body(user(text, im("chart", w, h)), max_tokens=600), im)
    im = Images()
    c.add(
        "chart",
        "en",
        "L",
        "Two charts combined into a per-month derived metric, a fitted trend and a forecast: multi-step quantitative "
        "reasoning on visual data, L.",
        body(
            user(
                "The first chart is monthly active users, the second monthly revenue. Compute ARPU for each month, "
                "fit a trend and forecast the next quarter. Show your reasoning.",
                im("chart", 1600, 900, "mau"),
                im("chart", 1600, 900, "revenue"),
            ),
            max_tokens=2500,
        ),
        im,
    )
    im = Images()
    c.add(
        "chart",
        "zh",
        "L",
        "用三张财务图表做交叉分析并给出投资建议：多图、多步推理，L。",
        body(
            user(
                "这三张图分别是公司的营收、利润率和现金流。请综合分析公司的财务健康状况，指出风险，并给出是否值得投资的判断和理由。",
                im("chart", 1200, 800, "rev"),
                im("chart", 1200, 800, "margin"),
                im("chart", 1200, 800, "cash"),
            ),
            max_tokens=3000,
        ),
        im,
    )
    im = Images()
    c.add(
        "chart",
        "en",
        "L",
        "Statistical critique of an experiment's result chart with error bars, needing careful inference: L.",
        body(
            user(
                "This chart shows our A/B test results with 95% confidence intervals for 6 variants. Which "
                "differences are significant, is there a multiple-comparisons problem, and what should we ship?",
                im("chart", 1600, 1000),
            ),
            max_tokens=2000,
        ),
        im,
    )
    rng.random()


def scans(c: Collector, rng: random.Random) -> None:
    small = [
        ("en", "Transcribe this receipt.", ("scan", 600, 1400), "OCR of a small receipt, printed text: S."),
        ("en", "What's the total on this receipt?", ("scan", 576, 1200), "One number off a small receipt: S."),
        (
            "en",
            "Extract the name, email and phone from this business card.",
            ("scan", 1050, 600),
            "Three fields off a business card: simple OCR of a small image, S.",
        ),
        ("zh", "这张小票的总金额是多少？", ("scan", 600, 1300), "One number from a small Chinese receipt: S."),
        (
            "en",
            "What's the tracking number on this shipping label?",
            ("scan", 1200, 800),
            "One printed code from a label: S.",
        ),
        ("zh", "识别这张名片上的姓名和电话。", ("scan", 1050, 600), "名片上两个字段的简单识别：S。"),
    ]
    for i, (lang, text, (kind, w, h), why) in enumerate(small):
        im = Images()
        c.add("scan", lang, "S", why, body(user(text, im(kind, w, h, f"s{i}")), max_tokens=300), im)
    a4 = [(2480, 3508), (2550, 3300), (1700, 2200), (1240, 1754)]
    medium = [
        (
            "en",
            "OCR this page into markdown. Keep the headings and the table.",
            2000,
            "A full A4 page with a table to markdown: dense OCR and layout, M.",
        ),
        (
            "zh",
            "请识别这张增值税发票，提取发票号码、开票日期、金额和税额。",
            600,
            "Chinese VAT invoice fields: dense CJK print and a fixed layout, M.",
        ),
        ("en", "Transcribe this handwritten letter.", 1500, "Handwriting is hard OCR: M at least."),
        (
            "en",
            "Is this scanned form signed and dated? Quote the date.",
            200,
            "Locating a signature and a date on a full page: M (a page at budget is small print for S).",
        ),
        ("zh", "把这份扫描的合同第一页转成文字，保留条款编号。", 2500, "Chinese contract page OCR with structure: M."),
        (
            "en",
            "Summarise this scanned letter from the tax office and tell me what I need to do.",
            800,
            "OCR plus understanding an official letter: M.",
        ),
        (
            "de",
            "Bitte lies diesen gescannten Mietvertrag (Seite 1) und nenne Miete, Kaution und Kündigungsfrist.",
            600,
            "German contract page, three facts to find: M.",
        ),
        (
            "en",
            "Convert this scanned table of lab results into CSV.",
            1500,
            "Tabular OCR with numbers that must be exact: M.",
        ),
    ]
    for i, (lang, text, mt, why) in enumerate(medium):
        w, h = a4[i % len(a4)]
        im = Images()
        c.add("scan", lang, "M", why, body(user(text, im("scan", w, h)), max_tokens=mt), im)
    im = Images()
    c.add(
        "scan",
        "en",
        "M",
        "Invoice line items into a strict JSON schema: structured extraction from a full page, M.",
        body(
            user("Extract the invoice.", im("scan", 2480, 3508)),
            response_format=schema("invoice", number="string", date="string", total="number", lines="array"),
        ),
        im,
    )
    im = Images()
    pages = [im("scan", 2480, 3508, f"p{p}") for p in range(1, 9)]
    c.add(
        "scan",
        "en",
        "L",
        "Eight scanned contract pages read together to find conflicting clauses and assess risk: many images and "
        "legal reasoning, L.",
        body(
            user(
                "These are the 8 pages of a supplier contract. Find clauses that conflict with each other and "
                "rate the risks for us as the buyer.",
                *pages,
            ),
            max_tokens=3000,
        ),
        im,
    )
    im = Images()
    pages = [im("scan", 1700, 2200, f"p{p}") for p in range(1, 7)]
    c.add(
        "scan",
        "zh",
        "L",
        "六页扫描的审计报告，需要跨页核对数字并判断异常：多图加推理，L。",
        body(
            user("这是六页扫描的审计报告。请核对各页之间的数字是否一致，列出所有不一致之处并分析可能的原因。", *pages),
            max_tokens=3000,
        ),
        im,
    )
    im = Images()
    c.add(
        "scan",
        "en",
        "L",
        "A dense scanned engineering drawing whose tolerances must be checked against a spec: expert reasoning, L.",
        body(
            user(
                "Check every dimension and tolerance on this scanned drawing against ISO 2768-m and list any "
                "that are out of spec, with your reasoning.",
                im("scan", 3508, 2480),
            ),
            max_tokens=2500,
        ),
        im,
    )
    rng.random()
