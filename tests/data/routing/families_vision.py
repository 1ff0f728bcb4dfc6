"""Chit-chat, short factual Q&A and every family with images: screenshots, charts, scans, photos, and
multi-image comparisons. Each entry carries its own tier and reason."""

from __future__ import annotations

import random

from builder import Collector, Images, body, schema, system, user


def chit_chat(c: Collector, rng: random.Random) -> None:
    s = "S"
    small = [
        ("en", "hi!", "A greeting: any model answers it; the smallest tier is fastest and cheapest."),
        ("en", "good morning, how are you doing today?", "Small talk with no task in it; S answers it well."),
        ("en", "tell me a joke about cats", "A short joke needs fluency, not reasoning; S is enough."),
        ("en", "thanks, that helped a lot!", "An acknowledgement; the reply is one friendly sentence."),
        ("en", "what's a fun name for a goldfish?", "Light creative suggestion, a few words of output."),
        ("en", "I'm bored, suggest three things to do tonight", "A short list of casual ideas; S does this fine."),
        ("en", "write a two-line birthday wish for my colleague Anna", "Two lines of friendly text: S."),
        ("en", "lol ok", "A filler message; the cheapest tier answers it."),
        ("en", "Can you recommend a cozy sci-fi book?", "One recommendation from common knowledge: S."),
        ("en", "Say something nice to cheer me up, I failed my driving test", "Short empathetic reply: S."),
        ("zh", "你好！", "中文问候，小模型即可流畅回答。"),
        ("zh", "今天心情不太好，陪我聊聊天吧", "Casual Chinese chat; Qwen's 2B is fluent in Chinese small talk."),
        ("zh", "给我讲个笑话", "A joke in Chinese: short, no reasoning, S."),
        ("zh", "周末去哪里玩比较好？推荐一下", "Casual weekend suggestions in Chinese; S is enough."),
        ("zh", "谢谢你的帮助！", "A thank-you; one sentence reply."),
        ("zh", "帮我给同事写一句生日祝福", "One line of Chinese greeting text: S."),
        ("es", "¡Hola! ¿Qué tal tu día?", "Spanish greeting; S handles common languages for small talk."),
        ("fr", "Merci beaucoup, bonne soirée !", "A French thank-you; trivial reply."),
        ("ja", "こんにちは、元気？", "Japanese greeting; S is fluent enough for this."),
        ("de", "Erzähl mir einen kurzen Witz", "A short German joke; S."),
    ]
    for lang, text, why in small:
        c.add("chit-chat", lang, s, why, body(user(text)))
    c.add(
        "chit-chat",
        "en",
        "M",
        "Emotional, open-ended advice about a career decision: a nuanced, careful answer is worth the 8B.",
        body(
            user(
                "I've been feeling burned out at work for months. My manager is supportive but the workload "
                "isn't changing. I'm thinking of quitting without another job lined up. Can you help me think "
                "it through?"
            ),
            max_tokens=800,
        ),
    )
    c.add(
        "chit-chat",
        "zh",
        "M",
        "Relationship advice in Chinese with context to weigh; a thoughtful reply is worth M, not S.",
        body(user("我和室友因为家务分配吵了好几次，他总说自己很忙。我不想搬走，但也不想一直忍着。你觉得我该怎么和他沟通？")),
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "A persona system prompt and a greeting: still small talk, S.",
        body(system("You are Pip, a cheerful assistant for a bakery's website."), user("hey pip! what's good today?")),
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "Casual roleplay for a couple of lines; no task, S.",
        body(user("pretend you're a pirate and say good night to me"), max_tokens=60),
    )
    rng.random()


def factual(c: Collector, rng: random.Random) -> None:
    short = [
        ("en", "What is the capital of Australia?", "A single fact from common knowledge: S."),
        ("en", "At what temperature does water boil at sea level in Fahrenheit?", "One well-known number: S."),
        ("en", "Who wrote 'Pride and Prejudice'?", "Simple recall: S."),
        ("en", "What does HTTP status 429 mean?", "A well-known definition in one sentence: S."),
        ("en", "How many bytes are in a kibibyte?", "A definition with one number: S."),
        ("en", "What's the difference between a virus and a bacterium, in one sentence?", "Asked for one sentence: S."),
        ("en", "Which planet has the most moons?", "Short factual recall: S."),
        ("en", "What year did the Berlin Wall fall?", "One date: S."),
        ("en", "what port does postgres use by default", "A one-word technical fact: S."),
        ("zh", "长城有多长？", "简单事实问答，小模型即可。"),
        ("zh", "光速是多少？", "One physical constant, asked in Chinese: S."),
        ("zh", "水的化学式是什么？", "Trivial chemistry fact in Chinese: S."),
        ("zh", "李白是哪个朝代的诗人？", "Short Chinese literature fact: S."),
        ("zh", "HTTPS默认端口是多少？", "A one-number technical fact: S."),
        ("ko", "서울의 인구는 대략 얼마인가요?", "Korean short factual question: S."),
        ("ar", "ما هي عاصمة كندا؟", "Arabic one-fact question: S."),
    ]
    for lang, text, why in short:
        c.add("factual", lang, "S", why, body(user(text)))
    medium = [
        (
            "en",
            "Explain how TCP congestion control works: slow start, congestion avoidance (AIMD), fast retransmit "
            "and fast recovery. Use an example with numbers.",
            1500,
            "A multi-part technical explanation with a worked example; 8B is accurate where 2B blurs details.",
        ),
        (
            "en",
            "Compare PostgreSQL and MySQL for a write-heavy workload with many small transactions. What would "
            "you pick and why?",
            1200,
            "A trade-off comparison that must be correct on details (MVCC, locking): M.",
        ),
        (
            "zh",
            "请详细解释一下量子纠缠是什么，为什么它不能用来超光速传递信息？",
            1200,
            "Conceptual physics explanation in Chinese with a subtle point (no-signalling): M.",
        ),
        (
            "en",
            "Why do vaccines sometimes need booster doses? Explain the immunology simply but accurately.",
            900,
            "An explanatory answer where accuracy matters (medicine); M rather than S.",
        ),
        (
            "zh",
            "Kubernetes里的Deployment和StatefulSet有什么区别？各自适合什么场景？",
            1000,
            "Technical comparison in Chinese with scenarios: M.",
        ),
    ]
    for lang, text, mt, why in medium:
        c.add("factual", lang, "M", why, body(user(text), max_tokens=mt))
    c.add(
        "factual",
        "en",
        "L",
        "Evaluate competing explanations with evidence and a conclusion: long, careful reasoning, L.",
        body(
            user(
                "What caused the 2008 financial crisis? Present the three main competing explanations, the evidence "
                "for and against each, and say which you find most convincing and why. About 1500 words."
            ),
            max_tokens=3000,
        ),
    )
    c.add(
        "factual",
        "en",
        "S",
        "A short yes/no fact with a one-word answer requested: S.",
        body(user("Is a tomato a fruit? Answer yes or no."), max_tokens=5),
    )
    rng.random()


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
        ("en", "This is my IDE with a stack trace. What's wrong and how do I fix it?", 800,
         "Reading a stack trace in a screenshot and proposing a fix: OCR plus code reasoning, M."),
        ("en", "Describe the layout of this web page and list every button label.", 600,
         "Dense UI reading that must be complete: M (2B misses small labels)."),
        ("zh", "这个报错截图是什么意思？怎么解决？", 800,
         "Explaining an error dialog in Chinese with a fix: M."),
        ("en", "Write the Playwright selectors for the login form fields in this screenshot.", 500,
         "UI understanding turned into code: M."),
        ("en", "Which settings in this screenshot would I change to stop the app from syncing over mobile data?", 400,
         "Locating the right controls among many in a settings page: M."),
        ("zh", "帮我把这个截图里的表格整理成Markdown。", 1200,
         "Transcribing a table from a screenshot into Markdown, Chinese instructions: M."),
        ("en", "Summarise the open pull requests shown in this GitHub screenshot.", 600,
         "Many small text items to read and group: M."),
        ("en", "Our Grafana panel is in this screenshot. What does the p99 latency do after 14:00?", 400,
         "Reading a time series in a dashboard screenshot: chart reading, M."),
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
            body(user("Translate these chat messages to English and tell me what they're arguing about.",
                      im("screenshot", w, h, f"chat{i}"))),
            im,
        )
    big = [
        ("Recreate this dashboard as a React + Tailwind component, with every chart as a Recharts component and "
         "realistic mock data. Match spacing and colours.", (2560, 1440),
         "Pixel-faithful UI-to-code generation of a whole dashboard: long structured output, L."),
        ("Turn this Figma mockup into a complete, accessible HTML/CSS page (no frameworks).", (3840, 2160),
         "A whole page of code from a 4K mockup: long, precise generation, L."),
        ("这是我们系统的监控大盘截图。请分析各个面板之间的关系，找出这次故障的根本原因，并给出详细的排查步骤。", (3840, 2160),
         "Root-cause reasoning across many panels of a dashboard, in Chinese: multi-step analysis, L."),
    ]
    for i, (text, (w, h), why) in enumerate(big):
        im = Images()
        lang = "zh" if i == 2 else "en"
        c.add("screenshot", lang, "L", why, body(user(text, im("screenshot", w, h)), max_tokens=4000), im)
    rng.random()


def charts(c: Collector, rng: random.Random) -> None:
    sizes = [(1200, 800), (1600, 900), (800, 600), (1000, 1000)]
    for i, (w, h) in enumerate(sizes[:3]):
        im = Images()
        c.add("chart", "en", "S", "Reading a chart's title only: large text, no values, S.",
              body(user("What is the title of this chart?", im("chart", w, h)), max_tokens=30), im)
    im = Images()
    c.add("chart", "zh", "S", "只问图表类型（柱状图还是折线图）：粗粒度识别，小模型即可。",
          body(user("这是柱状图还是折线图？", im("chart", 800, 600)), max_tokens=10), im)
    reads = [
        ("en", "What was the revenue in Q3 according to this bar chart?",
         "Reading a value off an axis reliably needs the 8B; 2B often misreads scales."),
        ("en", "Describe the trend in this line chart and point out any anomalies.",
         "Trend plus anomalies over a whole series: chart reasoning, M."),
        ("zh", "这张图表显示了什么趋势？哪个月份最高？", "Trend and argmax in a Chinese chart question: M."),
        ("en", "Convert this chart into a markdown table of its values.", "Extracting every data point: M."),
        ("en", "Which product line grew fastest between 2022 and 2024 in this chart?",
         "Comparing slopes of several series: M."),
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
        body(user("The first chart is monthly active users, the second monthly revenue. Compute ARPU for each month, "
                  "fit a trend and forecast the next quarter. Show your reasoning.",
                  im("chart", 1600, 900, "mau"), im("chart", 1600, 900, "revenue")), max_tokens=2500),
        im,
    )
    im = Images()
    c.add(
        "chart",
        "zh",
        "L",
        "用三张财务图表做交叉分析并给出投资建议：多图、多步推理，L。",
        body(user("这三张图分别是公司的营收、利润率和现金流。请综合分析公司的财务健康状况，指出风险，并给出是否值得投资的判断和理由。",
                  im("chart", 1200, 800, "rev"), im("chart", 1200, 800, "margin"), im("chart", 1200, 800, "cash")),
             max_tokens=3000),
        im,
    )
    im = Images()
    c.add(
        "chart",
        "en",
        "L",
        "Statistical critique of an experiment's result chart with error bars, needing careful inference: L.",
        body(user("This chart shows our A/B test results with 95% confidence intervals for 6 variants. Which "
                  "differences are significant, is there a multiple-comparisons problem, and what should we ship?",
                  im("chart", 1600, 1000)), max_tokens=2000),
        im,
    )
    rng.random()


def scans(c: Collector, rng: random.Random) -> None:
    small = [
        ("en", "Transcribe this receipt.", ("scan", 600, 1400), "OCR of a small receipt, printed text: S."),
        ("en", "What's the total on this receipt?", ("scan", 576, 1200), "One number off a small receipt: S."),
        ("en", "Extract the name, email and phone from this business card.", ("scan", 1050, 600),
         "Three fields off a business card: simple OCR of a small image, S."),
        ("zh", "这张小票的总金额是多少？", ("scan", 600, 1300), "One number from a small Chinese receipt: S."),
        ("en", "What's the tracking number on this shipping label?", ("scan", 1200, 800),
         "One printed code from a label: S."),
        ("zh", "识别这张名片上的姓名和电话。", ("scan", 1050, 600), "名片上两个字段的简单识别：S。"),
    ]
    for i, (lang, text, (kind, w, h), why) in enumerate(small):
        im = Images()
        c.add("scan", lang, "S", why, body(user(text, im(kind, w, h, f"s{i}")), max_tokens=300), im)
    a4 = [(2480, 3508), (2550, 3300), (1700, 2200), (1240, 1754)]
    medium = [
        ("en", "OCR this page into markdown. Keep the headings and the table.", 2000,
         "A full A4 page with a table to markdown: dense OCR and layout, M."),
        ("zh", "请识别这张增值税发票，提取发票号码、开票日期、金额和税额。", 600,
         "Chinese VAT invoice fields: dense CJK print and a fixed layout, M."),
        ("en", "Transcribe this handwritten letter.", 1500, "Handwriting is hard OCR: M at least."),
        ("en", "Is this scanned form signed and dated? Quote the date.", 200,
         "Locating a signature and a date on a full page: M (a page at budget is small print for S)."),
        ("zh", "把这份扫描的合同第一页转成文字，保留条款编号。", 2500, "Chinese contract page OCR with structure: M."),
        ("en", "Summarise this scanned letter from the tax office and tell me what I need to do.", 800,
         "OCR plus understanding an official letter: M."),
        ("de", "Bitte lies diesen gescannten Mietvertrag (Seite 1) und nenne Miete, Kaution und Kündigungsfrist.", 600,
         "German contract page, three facts to find: M."),
        ("en", "Convert this scanned table of lab results into CSV.", 1500, "Tabular OCR with numbers that must be exact: M."),
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
        body(user("Extract the invoice.", im("scan", 2480, 3508)),
             response_format=schema("invoice", number="string", date="string", total="number", lines="array")),
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
        body(user("These are the 8 pages of a supplier contract. Find clauses that conflict with each other and "
                  "rate the risks for us as the buyer.", *pages), max_tokens=3000),
        im,
    )
    im = Images()
    pages = [im("scan", 1700, 2200, f"p{p}") for p in range(1, 7)]
    c.add(
        "scan",
        "zh",
        "L",
        "六页扫描的审计报告，需要跨页核对数字并判断异常：多图加推理，L。",
        body(user("这是六页扫描的审计报告。请核对各页之间的数字是否一致，列出所有不一致之处并分析可能的原因。", *pages),
             max_tokens=3000),
        im,
    )
    im = Images()
    c.add(
        "scan",
        "en",
        "L",
        "A dense scanned engineering drawing whose tolerances must be checked against a spec: expert reasoning, L.",
        body(user("Check every dimension and tolerance on this scanned drawing against ISO 2768-m and list any "
                  "that are out of spec, with your reasoning.", im("scan", 3508, 2480)), max_tokens=2500),
        im,
    )
    rng.random()


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
        ("en", "Count the people in this photo and describe what each group is doing.",
         "Counting and describing several groups: fine-grained perception, M."),
        ("zh", "照片里的路牌写的是什么？翻译成英文。", "Reading a Chinese street sign in a photo and translating: M."),
        ("en", "Estimate the calories of this meal, item by item.", "Identifying several foods and estimating: M."),
        ("en", "What's wrong with this plant? The leaves are turning yellow.", "Diagnosis from visual symptoms: M."),
        ("en", "Describe this room in detail for a real-estate listing.", "A detailed, accurate description: M."),
        ("ja", "この写真の看板に書いてある内容を教えてください。", "Reading Japanese signage in a photo: M."),
        ("en", "Read the nutrition label in this photo and tell me the sugar per serving.",
         "Small print on a product photo: M."),
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
        body(user("This is a photo of our whiteboard architecture diagram. Write the Terraform for it on AWS, "
                  "with networking, IAM and autoscaling.", im("photo", 4032, 3024)), max_tokens=5000),
        im,
    )
    im = Images()
    c.add(
        "photo",
        "en",
        "L",
        "A physics problem photographed from a textbook, asking for a full derivation: multi-step reasoning, L.",
        body(user("Solve the problem in this photo step by step, deriving every formula you use.",
                  im("photo", 3024, 4032)), max_tokens=3000),
        im,
    )
    rng.random()


def multi_image(c: Collector, rng: random.Random) -> None:
    two = [
        ("en", "Compare these two screenshots: what changed in the UI?", "screenshot", (1920, 1080),
         "Diffing two full screenshots: M."),
        ("en", "Which of these two product photos is better for a listing, and why?", "photo", (1600, 1200),
         "A comparative judgement between two photos: M."),
        ("zh", "这两张发票的金额一样吗？", "scan", (1240, 1754), "Reading and comparing two Chinese invoices: M."),
        ("en", "Are these two photos of the same person?", "photo", (1080, 1080),
         "A comparison with care required: M (and the answer should be cautious)."),
        ("en", "Spot the differences between these two charts.", "chart", (1200, 800),
         "Comparing two charts series by series: M."),
    ]
    for lang, text, kind, (w, h), why in two:
        im = Images()
        c.add("multi-image", lang, "M", why,
              body(user(text, im(kind, w, h, "a"), im(kind, w, h, "b")), max_tokens=600), im)
    im = Images()
    receipts = [im("scan", 600, 1400, f"r{i}") for i in range(3)]
    c.add("multi-image", "en", "M", "Three small receipts summed: several OCR reads and an addition, M.",
          body(user("Add up the totals of these three receipts.", *receipts), max_tokens=300), im)
    im = Images()
    shots = [im("photo", 1600, 1200, f"{i}") for i in range(4)]
    c.add("multi-image", "en", "M", "Pick the best of four photos for a listing: comparison across images, M.",
          body(user("Which of these four photos should be the cover of my Airbnb listing?", *shots), max_tokens=400), im)
    im = Images()
    shots = [im("screenshot", 1170, 2532, f"{i}") for i in range(3)]
    c.add("multi-image", "zh", "M", "三张手机截图串起来理解一个操作流程：多图但任务中等，M。",
          body(user("这三张截图是我的操作步骤，为什么最后支付失败了？", *shots), max_tokens=600), im)
    im = Images()
    shots = [im("photo", 640, 480, f"{i}") for i in range(2)]
    c.add("multi-image", "en", "S", "Two small photos, a yes/no on whether they show the same object: easy, S.",
          body(user("Same mug in both pictures? yes or no", *shots), max_tokens=5), im)
    big = [
        ("en", 8, "scan", (2480, 3508), "These are 8 pages of a scanned quarterly report. Summarise and reconcile "
         "every number that appears on more than one page.",
         "Eight full pages cross-referenced for consistency: many images and careful reasoning, L."),
        ("en", 12, "photo", (4032, 3024), "Photos from a house inspection. Write an inspection report: every defect, "
         "its severity and the estimated repair cost.",
         "Twelve photos turned into a structured expert report: L."),
        ("en", 6, "chart", (1600, 900), "These six charts are our product KPIs. What story do they tell together, "
         "and what would you investigate first?", "Cross-chart analysis of six charts: L."),
        ("zh", 10, "screenshot", (1920, 1080), "这是十张用户操作录屏的截图。请还原用户的完整操作路径，指出体验问题并给出改进方案。",
         "十张截图还原流程并做体验分析：多图、长推理，L。"),
        ("en", 16, "photo", (1080, 1080), "Here are 16 product photos. Group them by product, flag duplicates and "
         "pick the best shot of each.", "Sixteen images compared against each other: L."),
        ("en", 7, "scan", (1700, 2200), "Seven scanned pages of handwritten lab notebook. Transcribe them and "
         "reconstruct the experiment's procedure and results.", "Handwriting over seven pages plus reconstruction: L."),
    ]
    for lang, n, kind, (w, h), text, why in big:
        im = Images()
        refs = [im(kind, w, h, f"{i}") for i in range(n)]
        c.add("multi-image", lang, "L", why, body(user(text, *refs), max_tokens=4000), im)
    rng.random()
