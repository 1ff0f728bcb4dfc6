"""Code, math, long documents, and tools or JSON schemas. Each entry carries its own tier and the reason for it."""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

from builder import Collector, body, schema, system, tool, user
from corpus import CODE, chinese, english, module


def code(c: Collector, rng: random.Random) -> None:
    quick = [
        ("en", "How do I reverse a list in Python?", "A one-line idiom: S."),
        ("en", "git: undo the last commit but keep the changes?", "One well-known command: S."),
        ("en", "What does `set -euo pipefail` do in bash?", "A short definition of three flags: S."),
        ("en", "How do I check the Node.js version from the terminal?", "One command: S."),
        ("zh", "Python里怎么把字符串转成整数？", "A one-line Python idiom asked in Chinese: S."),
        ("en", "What's the SQL to count rows in a table called events?", "A one-line query: S."),
        ("zh", "docker怎么查看正在运行的容器？", "One command, Chinese question: S."),
    ]
    for lang, text, why in quick:
        c.add("code", lang, "S", why, body(user(text), max_tokens=200))
    fixes = [
        (
            "py_median",
            "en",
            "This median function gives wrong answers for even-length lists. Fix it.",
            "An off-by-one in a short function: find and fix, M.",
        ),
        (
            "js_debounce",
            "en",
            "My debounced handler receives an array instead of the arguments. Why?",
            "Reading a closure bug in a short JS function: M.",
        ),
        (
            "sql_report",
            "en",
            "Customers with no orders are missing from this report even though I used a LEFT JOIN. Why?",
            "The WHERE clause turns the LEFT JOIN into an inner join: a classic SQL subtlety, M.",
        ),
        ("rs_parse", "en", "Review this Rust function and make it robust.", "Error handling and overflow in Rust: M."),
        (
            "py_cache",
            "en",
            "Review this code. Anything wrong?",
            "Mutating a dict while iterating plus an unbounded cache: a code review, M.",
        ),
        (
            "py_async",
            "en",
            "This is slow. Make the requests run concurrently, with at most 10 at a time.",
            "A small async rewrite with a concurrency limit: M.",
        ),
        (
            "ts_reducer",
            "en",
            "My React component doesn't re-render after 'add'. What's wrong with this reducer?",
            "State mutation in a reducer: M.",
        ),
        (
            "py_median",
            "zh",
            "给这个函数写pytest单元测试，覆盖边界情况。",
            "Writing edge-case tests in Chinese context: M.",
        ),
        (
            "go_worker",
            "en",
            "Sometimes results are missing. What's wrong?",
            "A data race on a shared slice in Go: concurrency reasoning on a short snippet, M.",
        ),
        (
            "py_cache",
            "zh",
            "这段代码有什么问题？怎么改成线程安全的带过期时间的缓存？",
            "Review plus a thread-safe redesign: M.",
        ),
        (
            "sql_report",
            "en",
            "Rewrite this query to also show customers with zero revenue as 0.",
            "A small SQL edit: M.",
        ),
        ("js_debounce", "en", "Add TypeScript types to this function.", "Typing a generic higher-order function: M."),
    ]
    for key, lang, text, why in fixes:
        c.add("code", lang, "M", why, body(user(f"{text}\n\n```\n{CODE[key]}```"), max_tokens=1200))
    c.add(
        "code",
        "en",
        "M",
        "A small, well-specified function from scratch (a CLI arg parser): M.",
        body(
            user("Write a Python function that parses '--key=value' and '--flag' arguments into a dict, with tests."),
            max_tokens=1200,
        ),
    )
    c.add(
        "code",
        "en",
        "M",
        "Explain a regex and give a corrected version: M.",
        body(
            user("Explain this regex and fix it so it doesn't match '1.2.3.4.5':\n```\n^(\\d{1,3}\\.){3}\\d{1,3}\n```"),
            max_tokens=800,
        ),
    )
    c.add(
        "code",
        "zh",
        "M",
        "用中文解释一段代码的作用：理解代码、表达清楚，M。",
        body(user(f"帮我逐行解释这段代码在做什么：\n```\n{CODE['go_worker']}```"), max_tokens=1000),
    )
    hard = [
        (
            "Implement a lock-free single-producer single-consumer ring buffer in Rust with unsafe code kept minimal, "
            "explain the memory orderings you chose, and write tests including a loom model check.",
            "Lock-free code with memory-ordering arguments: expert, long, L.",
        ),
        (
            "Design and implement a distributed rate limiter on Redis (sliding window) that stays correct under clock "
            "skew between app servers. Give the Lua script, the client, and an argument for correctness.",
            "Distributed-systems design plus correctness argument: L.",
        ),
        (
            "Implement Raft leader election and log replication in Go (no snapshots). Include a test harness that "
            "simulates partitions.",
            "A substantial, subtle algorithm implementation: L.",
        ),
        (
            "Write a complete tokenizer and recursive-descent parser for arithmetic with variables, functions and "
            "error recovery in TypeScript, with tests.",
            "A complete multi-part program with tests: L.",
        ),
        (
            "我们的Java服务在高峰期偶发死锁。请给出系统的排查方法，并写一个可以自动检测锁顺序问题的工具（包括代码）。",
            "Deadlock methodology plus a tool implementation, in Chinese: L.",
        ),
    ]
    for i, (text, why) in enumerate(hard):
        c.add("code", "zh" if i == 4 else "en", "L", why, body(user(text), max_tokens=6000))
    files = "\n\n".join(f"# file: app/module_{i}.py\n```python\n{module(100 + i, 18)}```" for i in range(4))
    c.add(
        "code",
        "en",
        "L",
        "Refactoring across four pasted modules (about 9k tokens) to a plugin design: long context and design "
        "reasoning, L.",
        body(
            user(
                "Here is our app. Refactor it so each 'verb' becomes a plugin registered by entry points, remove "
                "the duplication, and show the new files in full.\n\n" + files
            ),
            max_tokens=8000,
        ),
    )
    files = "\n\n".join(f"# file: svc/part_{i}.py\n```python\n{module(200 + i, 10)}```" for i in range(2))
    c.add(
        "code",
        "en",
        "M",
        "Two pasted modules and a focused request (add logging context): long-ish input but a local edit, M.",
        body(
            user("Add the request id to every log call in these two files; show only the diff.\n\n" + files),
            max_tokens=2000,
        ),
    )
    rng.random()


def math(c: Collector, rng: random.Random) -> None:
    for _ in range(4):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        c.add(
            "math", "en", "S", "Two-number arithmetic: S (and exact).", body(user(f"What is {a} * {b}?"), max_tokens=20)
        )
    simple = [
        ("en", "What is 15% of 240?", "One percentage: S."),
        ("en", "Convert 72°F to Celsius.", "A unit conversion with a known formula: S."),
        ("zh", "3乘以7等于几？", "Single-digit multiplication in Chinese: S."),
        ("zh", "一公里等于多少英里？", "A unit conversion fact: S."),
        ("en", "Round 3.14159 to two decimals.", "Trivial: S."),
    ]
    for lang, text, why in simple:
        c.add("math", lang, "S", why, body(user(text), max_tokens=50))
    medium = [
        ("en", "Solve 2x^2 - 3x - 5 = 0.", "A quadratic with the formula: routine algebra, M for reliability."),
        ("en", "Differentiate f(x) = x^2 \\sin x.", "Product rule: routine calculus, M."),
        ("en", "Compute $\\int x e^{x}\\,dx$.", "Integration by parts: M."),
        ("en", "Two dice are rolled. What is the probability that the sum is 7 or 11?", "Small probability: M."),
        ("zh", "解方程组：2x + 3y = 12，x - y = 1。", "A linear system in Chinese: M."),
        (
            "en",
            "A loan of $20,000 at 6% annual interest, compounded monthly, repaid over 5 years. Monthly payment?",
            "An annuity formula with care on the rate: M.",
        ),
        ("zh", "求数列 1, 4, 9, 16, ... 前 n 项和的公式，并说明推导过程。", "Sum of squares with derivation: M."),
        ("en", "Find the eigenvalues of [[2, 1], [1, 2]].", "A 2x2 eigenproblem: M."),
        (
            "en",
            "The mean of 5 numbers is 12; four of them are 10, 11, 14, 9. What is the fifth?",
            "A small word problem: M.",
        ),
        ("ru", "Найдите производную функции y = ln(x^2 + 1).", "Chain rule, Russian: M."),
    ]
    for lang, text, why in medium:
        c.add("math", lang, "M", why, body(user(text), max_tokens=800))
    hard = [
        (
            "en",
            "Prove that there are infinitely many primes p with p ≡ 3 (mod 4).",
            "A number-theory proof that needs a construction: L.",
        ),
        (
            "en",
            "Find all functions $f:\\mathbb{R}\\to\\mathbb{R}$ such that $f(x+y) = f(x) + f(y) + xy$ for all real "
            "x, y, and f is continuous. Prove your answer.",
            "A functional equation with a full proof: L.",
        ),
        (
            "en",
            "For positive reals a, b, c with a + b + c = 1, prove that $\\sum \\frac{a}{\\sqrt{b+c}} \\ge \\sqrt{3/2}$.",
            "An olympiad inequality: L.",
        ),
        (
            "en",
            "What is the expected number of fair coin flips until the sequence HHT first appears? Derive it.",
            "A Markov-chain expectation with a derivation: L.",
        ),
        (
            "zh",
            "证明：对任意正整数 n，$n^5 - n$ 能被 30 整除。并给出严谨的证明过程。",
            "A divisibility proof in Chinese: L.",
        ),
        (
            "zh",
            "一个袋子里有 5 个红球和 3 个白球，不放回地依次取球，求取到第一个白球时已取出红球个数的分布与期望，写出完整推导。",
            "A non-trivial probability distribution with a full derivation, Chinese: L.",
        ),
        ("en", "Let A be a real n×n matrix with A^2 = A. Prove that rank(A) = trace(A).", "A linear-algebra proof: L."),
        (
            "en",
            "Solve the ODE y'' + 4y' + 4y = e^{-2x} sin x with y(0)=0, y'(0)=1, showing every step.",
            "A second-order ODE with resonance-adjacent forcing and initial conditions: long, error-prone, L.",
        ),
    ]
    for lang, text, why in hard:
        c.add("math", lang, "L", why, body(user(text), max_tokens=4000))


def long_documents(c: Collector, rng: random.Random) -> None:
    c.add(
        "long-document",
        "en",
        "S",
        "Finding one date in a 1,200-word transcript: a lookup, not analysis; S reads it fine.",
        body(
            user("When is the next review meeting according to these notes?\n\n" + english("meeting", 1200, 1)),
            max_tokens=50,
        ),
    )
    c.add(
        "long-document",
        "en",
        "S",
        "Yes/no whether a 1,500-word postmortem mentions a rollback: a lookup, S.",
        body(user("Did they roll back a deploy? yes/no.\n\n" + english("postmortem", 1500, 2)), max_tokens=5),
    )
    c.add(
        "long-document",
        "zh",
        "S",
        "在一份约1500字的报告中找一个数字：查找任务，S。",
        body(user("这份报告里客户满意度是多少分？\n\n" + chinese("report", 1500, 3)), max_tokens=30),
    )
    summaries = [
        ("postmortem", 3000, "Summarise this incident postmortem for executives in 5 bullets."),
        ("meeting", 4000, "Summarise these meeting notes: decisions, owners, open questions."),
        ("paper", 5000, "Summarise this paper's method and results in one paragraph."),
        ("postmortem", 6000, "List the contributing factors and action items in this postmortem."),
        ("meeting", 2500, "Write the follow-up email for this meeting."),
        ("paper", 3500, "What are the limitations the authors admit? Quote them."),
        ("contract", 3000, "Summarise the payment and termination terms of this agreement."),
    ]
    for i, (topic, words, ask) in enumerate(summaries):
        c.add(
            "long-document",
            "en",
            "M",
            f"Summary or extraction over a {words:,}-word {topic}: most documents are M's work.",
            body(user(ask + "\n\n" + english(topic, words, 10 + i)), max_tokens=1000),
        )
    for i, (topic, chars, ask) in enumerate(
        [
            ("report", 4000, "总结这份季度报告的要点，分条列出。"),
            ("contract", 3000, "这份合同里甲方和乙方各有哪些主要义务？"),
            ("report", 6000, "请为管理层写一段300字的摘要。"),
        ]
    ):
        c.add(
            "long-document",
            "zh",
            "M",
            f"约{chars}字的中文文档做摘要或抽取：中等难度，M。",
            body(user(ask + "\n\n" + chinese(topic, chars, 30 + i)), max_tokens=1000),
        )
    deep = [
        (
            "contract",
            12000,
            "List every obligation of each party with clause references, then identify the five "
            "clauses that carry the most risk for the Customer and propose redlines.",
            "A 12,000-word contract analysed clause by clause with redlines: long context and legal reasoning, L.",
        ),
        (
            "paper",
            15000,
            "Critique the methodology of this paper: threats to validity, whether the ablations support "
            "the claims, and what experiment is missing.",
            "A critical review of a 15,000-word paper: L.",
        ),
        (
            "postmortem",
            10000,
            "Across these incident reports, find the recurring systemic causes and write a "
            "prioritised reliability plan with reasoning.",
            "Synthesis across 10,000 words of incidents into a plan: L.",
        ),
        (
            "meeting",
            20000,
            "These are a month of meeting transcripts. Reconstruct how the launch decision evolved, "
            "who argued what, and where commitments were broken.",
            "20,000 words of transcripts and a narrative analysis: long context, L.",
        ),
    ]
    for i, (topic, words, ask, why) in enumerate(deep):
        c.add(
            "long-document", "en", "L", why, body(user(ask + "\n\n" + english(topic, words, 50 + i)), max_tokens=4000)
        )
    c.add(
        "long-document",
        "zh",
        "L",
        "约1.5万字的中文合同做风险分析并提出修改意见：长上下文加法律推理，L。",
        body(
            user("请逐条分析这份合同对乙方的风险，给出修改建议和理由。\n\n" + chinese("contract", 15000, 60)),
            max_tokens=4000,
        ),
    )
    contract_a = english("contract", 6000, 70)
    contract_b = english("contract", 6000, 71)
    c.add(
        "long-document",
        "en",
        "L",
        "Two 6,000-word contracts compared term by term for differences that matter: L.",
        body(
            user(
                "Compare these two versions of the agreement. Which changes shift risk, and to whom?\n\n"
                f"VERSION A\n\n{contract_a}\n\nVERSION B\n\n{contract_b}"
            ),
            max_tokens=3000,
        ),
    )
    c.add(
        "long-document",
        "en",
        "M",
        "A low-priority batch summary of a 5,000-word report: M by content; the caller says it can wait.",
        body(user("Summarise in 3 bullets.\n\n" + english("paper", 5000, 80)), max_tokens=300),
        headers={"x-frugalserve-priority": "low"},
    )


WEATHER = tool("get_weather", "Current weather for a city", city="City name")


TIMER = tool("set_timer", "Start a countdown timer", duration="ISO 8601 duration")


TRAVEL = [
    tool("search_flights", "Search flights", origin="IATA code", destination="IATA code", date="YYYY-MM-DD"),
    tool("book_flight", "Book a flight by offer id", offer_id="Offer id"),
    tool("search_hotels", "Search hotels", city="City", check_in="YYYY-MM-DD", check_out="YYYY-MM-DD"),
    tool("book_hotel", "Book a hotel by offer id", offer_id="Offer id"),
    tool("get_calendar", "Events on a date", date="YYYY-MM-DD"),
]


def tools(c: Collector, rng: random.Random) -> None:
    simple = [
        ("en", "What's the weather in Paris?", [WEATHER], "One obvious tool call with one argument: S."),
        ("zh", "帮我查一下上海明天的天气", [WEATHER], "One tool call from a Chinese request: S."),
        ("en", "Set a timer for 10 minutes", [TIMER], "One tool, one argument: S."),
        ("ja", "大阪の天気は？", [WEATHER], "One tool call from a Japanese request: S."),
        ("en", "timer 25 min pls", [TIMER, WEATHER], "Picking the obvious one of two tools: S."),
    ]
    for lang, text, ts, why in simple:
        c.add("tools", lang, "S", why, body(user(text), tools=ts, max_tokens=100))
    c.add(
        "tools",
        "en",
        "S",
        "Sentiment of a one-line review into a one-field schema: S.",
        body(
            user("Review: 'Arrived late and the box was crushed.'"),
            response_format=schema("sentiment", label="string"),
            max_tokens=20,
        ),
    )
    c.add(
        "tools",
        "zh",
        "S",
        "一句评论的情感分类，单字段JSON：S。",
        body(
            user("评论：‘物流很快，包装也很好！’"), response_format=schema("sentiment", label="string"), max_tokens=20
        ),
    )
    medium = [
        (
            "en",
            "Book me a flight from SFO to JFK next Tuesday morning and a hotel near Central Park for two nights, "
            "but check my calendar first.",
            "Planning over five tools with dependencies between calls: M.",
        ),
        (
            "zh",
            "下周三从北京飞上海，帮我订最早的航班和机场附近的酒店，先看看我那天有没有安排。",
            "Multi-tool planning in Chinese: M.",
        ),
        ("en", "Find the cheapest flight to Lisbon in the first week of May and book it.", "Search then book: M."),
    ]
    for lang, text, why in medium:
        c.add("tools", lang, "M", why, body(user(text), tools=TRAVEL, max_tokens=500))
    extractions = [
        (
            "en",
            "Hi, I'm Dana Reyes from Acme Ltd. Our PO 7731 for 40 units is late; please call me on +1 415 555 0199.",
            schema("lead", name="string", company="string", phone="string", po="string", quantity="number"),
            "Five fields from a short email into a strict schema: M for exactness.",
        ),
        (
            "zh",
            "您好，我是华信科技的王磊，订单号A2391的200件货物还没到，请尽快联系我，电话13800138000。",
            schema("lead", name="string", company="string", phone="string", order="string", quantity="number"),
            "Chinese email into a strict schema: M.",
        ),
        (
            "en",
            english("meeting", 1500, 90),
            schema("minutes", decisions="array", owners="array", risks="array"),
            "Meeting notes into lists of decisions, owners and risks: M.",
        ),
    ]
    for lang, text, fmt, why in extractions:
        c.add("tools", lang, "M", why, body(user(text), response_format=fmt, max_tokens=800))
    many = [
        tool(f"crm_{n}", f"CRM operation {n}", id="Record id", payload="JSON payload")
        for n in ("get", "search", "create", "update", "merge", "delete", "note", "task", "email", "export")
    ]
    history = [
        system("You are an operations agent. Think before each tool call; never delete without confirming."),
        user("Clean up the duplicate accounts for Globex and move their open deals to the surviving record."),
    ]
    for i in range(6):
        history.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "crm_search", "arguments": f'{{"id": "globex-{i}", "payload": "{{}}"}}'},
                    }
                ],
            }
        )
        history.append(
            {
                "role": "tool",
                "tool_call_id": f"call_{i}",
                "content": f'{{"accounts": [{{"id": "A{i}1", "deals": {i}}}, {{"id": "A{i}2", "deals": 1}}]}}',
            }
        )
    c.add(
        "tools",
        "en",
        "L",
        "A long agentic loop over ten tools with irreversible operations and accumulated state: L.",
        body(*history, tools=many, max_tokens=1500),
    )
    c.add(
        "tools",
        "en",
        "L",
        "Planning a data migration through tools with a strict schema for the plan, many constraints: L.",
        body(
            user(
                "Plan the migration of 40 tables from MySQL to Postgres with zero downtime: order, dual writes, "
                "backfill, verification and rollback for each step."
            ),
            response_format=schema("plan", steps="array", risks="array", rollback="array"),
            max_tokens=4000,
        ),
    )
