"""Multi-turn conversations, and the hand-written items (each one considered on its own, not from a family)."""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

from builder import Collector, Images, assistant, body, schema, system, tool, user
from corpus import CODE, english


def multi_turn(c: Collector, rng: random.Random) -> None:
    c.add(
        "multi-turn",
        "en",
        "S",
        "Four turns of small talk: depth alone does not make it hard, S.",
        body(
            user("hey"),
            assistant("Hi! How's your day going?"),
            user("pretty good, just got back from a run"),
            assistant("Nice! How far did you go?"),
            user("5k, new personal best :)"),
        ),
    )
    c.add(
        "multi-turn",
        "zh",
        "S",
        "几轮闲聊，只是接话：S。",
        body(
            user("在吗"),
            assistant("在的，有什么可以帮你？"),
            user("没事，就是有点无聊"),
            assistant("要不要我推荐几部电影？"),
            user("好啊，来几部喜剧"),
        ),
    )
    c.add(
        "multi-turn",
        "en",
        "S",
        "A follow-up asking to shorten the previous answer: rewriting, S.",
        body(
            user("What is DNS?"),
            assistant(
                "DNS, the Domain Name System, translates names like example.com into "
                "IP addresses so computers can find each other."
            ),
            user("shorter please, one line"),
        ),
    )
    c.add(
        "multi-turn",
        "en",
        "S",
        "A clarifying follow-up on a simple fact: S.",
        body(user("capital of Canada?"), assistant("Ottawa."), user("and its population?")),
    )
    support = [
        user("My laptop won't connect to the office VPN since this morning."),
        assistant("Sorry to hear that. Which VPN client and OS are you using?"),
        user("GlobalProtect on macOS 14."),
        assistant("Does it fail at 'Connecting' or after you enter credentials?"),
        user("After credentials, it says 'gateway unreachable'."),
        assistant("Can you open the portal URL in a browser?"),
        user("Yes, the portal loads fine."),
        assistant("Then DNS works. Did anything change on the Mac today, like an update?"),
        user("Yes, macOS updated overnight. What now?"),
    ]
    c.add(
        "multi-turn", "en", "M", "Nine-turn technical support with state to track: M.", body(*support, max_tokens=800)
    )
    travel = [
        user("我想五月去日本玩一周，预算一万五。"),
        assistant("好的！你更喜欢城市还是自然风光？"),
        user("都想看看，东京和京都吧。"),
        assistant("可以东京4天、京都3天。需要我安排每天的行程吗？"),
        user("需要，顺便告诉我怎么买新干线票，以及预算够不够。"),
    ]
    c.add("multi-turn", "zh", "M", "五轮中文旅行规划，需要行程、交通和预算：M。", body(*travel, max_tokens=2000))
    code_chat = [
        user(f"Why does this crash?\n```\n{CODE['py_cache']}```"),
        assistant("`expire()` deletes from `_cache` while iterating over it, which raises RuntimeError."),
        user("Ok fixed that. Now how do I make it expire per entry instead of scanning?"),
        assistant("Store (value, expires_at) and check on read; a heap can evict the oldest."),
        user("Show me the full version with a max size too."),
    ]
    c.add(
        "multi-turn",
        "en",
        "M",
        "A code conversation building to a full small implementation: M.",
        body(*code_chat, max_tokens=1500),
    )
    c.add(
        "multi-turn",
        "en",
        "M",
        "Iterating on a cover letter over several turns: writing with feedback, M.",
        body(
            user("Write a cover letter for a junior data analyst role."),
            assistant("Dear Hiring Manager, ..."),
            user("Make it less generic, mention my SQL and Tableau projects."),
            assistant("Dear Hiring Manager, ..."),
            user("Good. Now cut it to 200 words and make the opening stronger."),
            max_tokens=600,
        ),
    )
    im = Images()
    c.add(
        "multi-turn",
        "en",
        "M",
        "A conversation about a chart with a follow-up question: M.",
        body(
            user("What does this chart show?", im("chart", 1200, 800)),
            assistant("It shows weekly signups, rising from about 200 to 900 over the quarter."),
            user("Which week had the biggest jump, and what might explain it?"),
            max_tokens=500,
        ),
        im,
    )
    debug: list[dict[str, object]] = [system("You are a senior backend engineer helping debug production issues.")]
    for i in range(11):
        debug.append(user(f"Step {i}: here is more of the log.\n```\n" + english("postmortem", 250, 200 + i) + "\n```"))
        debug.append(assistant(f"Noted. In step {i} the pool waits grow; let's look at the retry settings next."))
    debug.append(user("Given everything so far, what's the root cause and what exactly should we change?"))
    c.add(
        "multi-turn",
        "en",
        "L",
        "A 23-message debugging session with logs accumulated over turns, asking for a root cause: long context "
        "and reasoning, L.",
        body(*debug, max_tokens=3000),
    )
    math_chat = [
        user("Let's prove the AM-GM inequality for n variables."),
        assistant("We can use induction; the case n = 2 follows from (√a − √b)² ≥ 0."),
        user("OK, and the step from n to 2n?"),
        assistant("Apply the n case to each half and then the 2-variable case to the two means."),
        user("Now how do we get from powers of two to every n? Write out the full backward-induction step rigorously."),
    ]
    c.add(
        "multi-turn",
        "en",
        "L",
        "A rigorous proof built over turns (Cauchy's backward induction): L.",
        body(*math_chat, max_tokens=3000),
    )
    arch = [
        user("我们要把单体电商系统拆成微服务。"),
        assistant("可以先按业务域拆：订单、库存、支付、用户。"),
        user("订单和库存之间的一致性怎么保证？"),
        assistant("常用Saga模式或者事务消息。"),
        user("如果支付回调丢了怎么办？"),
        assistant("需要对账和幂等的补偿任务。"),
        user("综合前面讨论的，请给出完整的拆分方案、数据一致性设计、迁移步骤和风险评估。"),
    ]
    c.add(
        "multi-turn", "zh", "L", "多轮架构讨论后要完整方案：系统设计、一致性和迁移，L。", body(*arch, max_tokens=5000)
    )
    for _ in range(3):
        a, b = rng.randint(2, 9), rng.randint(10, 60)
        c.add(
            "multi-turn",
            "en",
            "S",
            "A recipe follow-up with a simple scaling: S.",
            body(
                user("How long do I boil an egg for a soft yolk?"),
                assistant("About 6 minutes from boiling."),
                user(f"And for {a} eggs in a small pot, {b} seconds more?"),
            ),
        )


def hand_written(c: Collector) -> None:
    """Items written one at a time for the cases a family does not reach: traps and boundaries."""
    h = "hand"
    c.add(
        "factual",
        "en",
        "M",
        "Short question, but the honest answer needs nuance (medical dosing): M, not S.",
        body(user("Can I take ibuprofen and paracetamol together?")),
        source=h,
    )
    c.add(
        "factual",
        "en",
        "L",
        "Short prompt that hides a logic puzzle with a proof: the text is tiny but the reasoning is not, L.",
        body(
            user(
                "Three boxes are labelled apples, oranges and mixed, and every label is wrong. You may "
                "draw one fruit from one box without looking inside. How do you relabel all three? "
                "Prove that it always works."
            )
        ),
        source=h,
    )
    c.add(
        "math",
        "en",
        "L",
        "Looks like a quick question, but it is a known hard problem requiring a proof: L.",
        body(user("Is 2^61 - 1 prime? Prove your answer without a computer.")),
        source=h,
    )
    c.add(
        "code",
        "en",
        "S",
        "A code block pasted only to ask which language it is: trivial, S despite the code.",
        body(user(f"What language is this?\n```\n{CODE['rs_parse']}```"), max_tokens=10),
        source=h,
    )
    c.add(
        "code",
        "en",
        "M",
        "Long pasted code but a narrow question (which line raises): M, the length is input only.",
        body(
            user(f"Which line raises KeyError here?\n```python\n{CODE['py_cache']}\n{CODE['py_median']}```"),
            max_tokens=100,
        ),
        source=h,
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "Long rambling message that is still small talk: length is not difficulty, S.",
        body(user("So today was such a day. " * 40 + "Anyway, how was yours?"), max_tokens=200),
        source=h,
    )
    im = Images()
    c.add(
        "screenshot",
        "en",
        "S",
        "A 4K screenshot, but the question is about one big word on it: S.",
        body(user("What's the big headline on this page?", im("screenshot", 3840, 2160)), max_tokens=30),
        im,
        source=h,
    )
    im = Images()
    c.add(
        "photo",
        "en",
        "M",
        "A tiny image but an expert question (skin lesion): the answer must be careful, M.",
        body(user("Does this mole look like melanoma?", im("photo", 400, 400)), max_tokens=500),
        im,
        source=h,
    )
    c.add(
        "tools",
        "en",
        "S",
        "Tools offered but the user only says hi: no call needed, S.",
        body(user("hi there"), tools=[WEATHER_T]),
        source=h,
    )
    c.add(
        "translation",
        "zh",
        "M",
        "短句但有文化负载（成语的翻译）：需要解释含义，M。",
        body(user("‘画蛇添足’怎么翻译成英文比较地道？给几个译法并解释差别。")),
        source=h,
    )
    c.add(
        "math",
        "zh",
        "M",
        "应用题：两步计算加单位，M。",
        body(user("一辆车以每小时60公里行驶了2.5小时，又以每小时80公里行驶了1.5小时，平均速度是多少？")),
        source=h,
    )
    c.add(
        "long-document",
        "en",
        "M",
        "A 2,000-word text with a rewrite request (make it plain English): M.",
        body(
            user("Rewrite this in plain English for customers.\n\n" + english("contract", 2000, 300)), max_tokens=2500
        ),
        source=h,
    )
    c.add(
        "multi-turn",
        "en",
        "M",
        "Short turns, but the last one asks for a careful comparison: M.",
        body(
            user("I have $10k savings."),
            assistant("Great start! What's your goal?"),
            user("Should I pay off my 7% car loan or invest in an index fund? Explain the trade-off."),
        ),
        source=h,
    )
    im = Images()
    c.add(
        "chart",
        "en",
        "M",
        "A small chart but a quantitative question (growth rate): M.",
        body(user("What's the compound annual growth rate shown here?", im("chart", 640, 480)), max_tokens=300),
        im,
        source=h,
    )
    c.add(
        "tools",
        "en",
        "M",
        "A JSON schema with nested fields extracted from a paragraph: M.",
        body(
            user("Acme will ship 3 pallets (SKU 44-A, 44-B) to Lyon on 4 June; contact: j.martin@acme.fr."),
            response_format=schema("shipment", sku="array", city="string", date="string", email="string"),
            max_tokens=200,
        ),
        source=h,
    )
    c.add(
        "code",
        "zh",
        "L",
        "用中文提出的编译器优化问题：需要正确的算法和证明，L。",
        body(
            user("请实现一个SSA形式下的常量传播（稀疏条件常量传播SCCP），用Python写，并证明算法会终止。"),
            max_tokens=6000,
        ),
        source=h,
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "The caller asks for a tier hint of S for a greeting; the content agrees: S.",
        body(user("yo")),
        headers={"x-frugalserve-tier": "S"},
        source=h,
    )
    c.add(
        "factual",
        "en",
        "L",
        "The caller pins L (compliance review) on a question that is itself a careful legal comparison: L either way.",
        body(
            user("Compare GDPR and CCPA obligations for a processor handling health data, with citations."),
            max_tokens=3000,
        ),
        headers={"x-frugalserve-tier": "L", "x-frugalserve-priority": "high"},
        source=h,
    )


WEATHER_T = tool("get_weather", "Current weather for a city", city="City name")


FX = tool(
    "convert_currency", "Convert an amount between currencies", amount="Amount", source="ISO code", target="ISO code"
)
JIRA = [
    tool("jira_search", "Search issues", jql="JQL query"),
    tool("jira_create", "Create an issue", project="Project key", summary="Summary", description="Description"),
    tool("jira_assign", "Assign an issue", key="Issue key", user="User name"),
]
CALENDAR = [
    tool("find_free_slots", "Free slots shared by people", people="Comma-separated names", week="ISO week"),
    tool("create_event", "Create an event", title="Title", start="ISO datetime", people="Comma-separated names"),
]


def more(c: Collector, rng: random.Random) -> None:
    """Further items for the families that were thinnest (tools, turns, translation, multi-image)."""
    c.add(
        "tools",
        "en",
        "S",
        "One currency conversion call with three obvious arguments: S.",
        body(user("How much is 250 USD in euros?"), tools=[FX], max_tokens=100),
    )
    c.add(
        "tools",
        "en",
        "M",
        "Search for a duplicate, then create and assign a ticket: a three-tool plan, M.",
        body(
            user("The export button crashes on Safari. File a bug in WEB unless one exists, and assign it to Lena."),
            tools=JIRA,
            max_tokens=500,
        ),
    )
    c.add(
        "tools",
        "zh",
        "M",
        "找共同空闲时间再建会议：两步工具调用，M。",
        body(user("帮我和张伟、李娜约一个下周一小时的评审会，找大家都有空的时间。"), tools=CALENDAR, max_tokens=400),
    )
    c.add(
        "tools",
        "en",
        "L",
        "A long pasted policy checked item by item with tool calls per finding: long context "
        "plus a multi-step agent plan, L.",
        body(
            user(
                "Read this policy, and file one Jira issue per requirement we do not meet yet, with a precise "
                "description.\n\n" + english("contract", 5000, 400)
            ),
            tools=JIRA,
            max_tokens=3000,
        ),
    )
    c.add(
        "multi-turn",
        "zh",
        "S",
        "追问一个简单事实：S。",
        body(user("珠穆朗玛峰有多高？"), assistant("约8848.86米。"), user("在哪个国家？")),
    )
    c.add(
        "multi-turn",
        "en",
        "M",
        "A tenant's multi-turn question that needs a careful, practical answer: M.",
        body(
            user("My landlord kept my whole deposit."),
            assistant("Sorry to hear that. Did you get an itemised list?"),
            user("No, nothing. I'm in California and moved out 30 days ago."),
            assistant("California requires an itemised statement within 21 days."),
            user("So what exactly should I do now, step by step?"),
            max_tokens=800,
        ),
    )
    c.add(
        "multi-turn",
        "ja",
        "M",
        "Japanese multi-turn planning of a study schedule: M.",
        body(
            user("JLPT N2に合格したいです。"),
            assistant("いつ受験する予定ですか？"),
            user("7月です。今はN3レベルです。"),
            assistant("あと約7か月ですね。"),
            user("毎週の勉強計画を作ってください。"),
            max_tokens=1200,
        ),
    )
    review: list[dict[str, object]] = [system("You review pull requests for a Python service.")]
    for i in range(6):
        review.append(user(f"Next file:\n```python\n{english('postmortem', 60, 500 + i)}\n" + CODE["py_cache"] + "```"))
        review.append(assistant(f"File {i}: the cache is unbounded and expire() mutates while iterating."))
    review.append(
        user(
            "Now write the final review: group the issues by severity, and propose one design that fixes "
            "them all, with code."
        )
    )
    c.add(
        "multi-turn",
        "en",
        "L",
        "A 13-message review across files ending in a design with code: L.",
        body(*review, max_tokens=4000),
    )
    c.add(
        "translation",
        "ko",
        "S",
        "A short Korean sentence to English: S.",
        body(user("영어로 번역해 주세요: 내일 회의는 취소되었습니다."), max_tokens=40),
    )
    c.add("translation", "zh", "S", "一个标识牌短语翻译：S。", body(user("‘小心地滑’英文怎么说？"), max_tokens=30))
    c.add(
        "translation",
        "ja",
        "M",
        "A Japanese paragraph into Chinese: two non-English languages, M.",
        body(
            user(
                "次の文章を中国語に翻訳してください：\n\n弊社の新しいサービスは、画像の自動認識により請求書の処理時間を"
                "大幅に短縮します。導入企業では平均で作業時間が六割減りました。"
            ),
            max_tokens=600,
        ),
    )
    c.add(
        "translation",
        "en",
        "M",
        "Subtitle lines translated with timing kept: format-preserving, M.",
        body(
            user(
                "Translate these SRT subtitles to Spanish, keep the numbering and timestamps:\n\n1\n00:00:01,000 --> "
                "00:00:03,000\nWhere were you last night?\n\n2\n00:00:03,500 --> 00:00:06,000\nI told you, I was "
                "at work.\n\n3\n00:00:06,500 --> 00:00:09,000\nUntil three in the morning?"
            ),
            max_tokens=500,
        ),
    )
    im = Images()
    c.add(
        "multi-image",
        "zh",
        "M",
        "两页中文扫描件找出不同：多图比较，M。",
        body(
            user("这两页合同有哪些地方不一样？", im("scan", 1240, 1754, "v1"), im("scan", 1240, 1754, "v2")),
            max_tokens=800,
        ),
        im,
    )
    im = Images()
    c.add(
        "multi-image",
        "en",
        "S",
        "Which of two small photos shows a cat: coarse recognition, S.",
        body(
            user("Which picture has the cat, first or second?", im("photo", 512, 512, "a"), im("photo", 512, 512, "b")),
            max_tokens=10,
        ),
        im,
    )
    im = Images()
    shots = [im("screenshot", 1440, 900, f"{i}") for i in range(9)]
    c.add(
        "multi-image",
        "en",
        "L",
        "Nine screenshots of a flow turned into a full test plan with edge cases: L.",
        body(
            user(
                "These 9 screenshots are our checkout flow. Write a complete end-to-end test plan with edge cases "
                "for each step.",
                *shots,
            ),
            max_tokens=4000,
        ),
        im,
    )
