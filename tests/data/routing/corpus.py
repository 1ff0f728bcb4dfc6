"""Deterministic filler for the labelled routing set: long documents in English and Chinese, and code.

The text only has to be realistic in shape (sentence length, vocabulary, script) so that the real tokenizer
counts what a pasted document of that length costs; its content is generated from seeded templates.
"""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

_EN_TOPICS = {
    "postmortem": (
        ["the checkout service", "the payments queue", "the primary database", "the edge proxy", "the batch scheduler"],
        [
            "At {t}, {a} began returning errors for roughly {n} percent of requests.",
            "The on-call engineer paged {a} owners after the error budget alert fired at {t}.",
            "We rolled back the deploy of {a}, which reduced but did not remove the errors.",
            "Connection pool exhaustion in {a} was visible in the dashboards {n} minutes before the alert.",
            "A retry storm from {b} amplified the load on {a} by a factor of {k}.",
            "The runbook for {a} did not mention the feature flag that was changed that morning.",
            "Customers in two regions saw timeouts while {b} kept retrying without backoff.",
            "The fix was to cap retries in {b} and to raise the pool size of {a} from {k}0 to {n}0.",
        ],
    ),
    "contract": (
        ["the Supplier", "the Customer", "either Party", "the Service Provider", "the Licensee"],
        [
            "{a} shall deliver the Services described in Schedule {k} within {n} business days of the Order.",
            "Any invoice not disputed in writing within {n} days shall be deemed accepted by {b}.",
            "{a} may terminate this Agreement for convenience on {n} days' written notice to {b}.",
            "Liability of {a} under this clause is limited to the fees paid in the {k} months before the claim.",
            "{a} shall keep Confidential Information secret for {n} years after termination.",
            "Service credits of {k} percent apply when monthly availability falls below 99.{n} percent.",
            "Neither {a} nor {b} is liable for delay caused by an event of force majeure lasting under {n} days.",
            "{a} indemnifies {b} against third-party claims that the Deliverables infringe intellectual property.",
        ],
    ),
    "meeting": (
        ["Priya", "Marco", "the design team", "finance", "the platform group"],
        [
            "{a} said the launch date of the {k}th of next month still holds if QA signs off by Friday.",
            "{a} asked whether {b} had reviewed the cost estimate of {n} thousand dollars per month.",
            "The group agreed that {a} will own the migration plan and report back in {k} weeks.",
            "{a} raised a concern that the GPU budget is already {n} percent spent this quarter.",
            "{b} proposed to move the nightly batch jobs to the cheaper region to save {k}0 percent.",
            "There was no decision on hiring; {a} will bring numbers to the next meeting.",
            "{a} noted that customer tickets about slow image uploads rose by {n} percent in a month.",
        ],
    ),
    "paper": (
        ["the baseline", "our method", "the ablation", "the larger model", "the distilled student"],
        [
            "Table {k} shows that {a} improves accuracy by {n}.{k} points over {b} on the held-out split.",
            "We train {a} for {n} thousand steps with a cosine schedule and a peak learning rate of {k}e-4.",
            "When the image resolution is halved, {a} loses only {k}.{n} points while using a quarter of the tokens.",
            "The variance across {k} seeds is small compared to the gap between {a} and {b}.",
            "We attribute the remaining errors of {a} to small text in scanned documents and dense charts.",
            "Compared with {b}, {a} needs {n} percent fewer GPU hours to reach the same validation loss.",
        ],
    ),
}

_ZH_TOPICS = {
    "report": (
        ["华东区", "线上渠道", "新客户", "核心产品线", "海外业务"],
        [
            "本季度{a}营业收入同比增长{n}%，主要来自{b}的订单增加。",
            "{a}的毛利率下降了{k}个百分点，原因是原材料价格上涨。",
            "管理层计划在下半年将{a}的投入提高{n}%，并控制{b}的费用。",
            "{a}的客户满意度调查得分为{k}.{n}分，较上季度有所提升。",
            "由于物流成本上升，{b}的交付周期延长了{k}天。",
            "公司预计{a}在明年第一季度实现盈亏平衡。",
        ],
    ),
    "contract": (
        ["甲方", "乙方", "双方", "服务提供方", "采购方"],
        [
            "{a}应在收到订单后{n}个工作日内完成交付，逾期每日按合同金额的千分之{k}支付违约金。",
            "{a}对因本合同产生的保密信息负有{n}年的保密义务。",
            "如{a}未能按期付款，{b}有权暂停服务并要求支付利息。",
            "本合同任何条款的修改须经{a}书面同意方为有效。",
            "{a}的赔偿责任以本合同项下已支付费用的{k}0%为上限。",
            "因不可抗力导致无法履行合同的，{a}应在{k}日内书面通知{b}。",
        ],
    ),
}


def english(topic: str, words: int, seed: int) -> str:
    """Paragraphs of about ``words`` words on ``topic`` (a key of the English topics)."""
    actors, sentences = _EN_TOPICS[topic]
    return _fill(actors, sentences, words, seed, " ", lambda s: len(s.split()))


def chinese(topic: str, chars: int, seed: int) -> str:
    """Paragraphs of about ``chars`` Chinese characters on ``topic`` (a key of the Chinese topics)."""
    actors, sentences = _ZH_TOPICS[topic]
    return _fill(actors, sentences, chars, seed, "", len)


def _fill(actors: list[str], sentences: list[str], size: int, seed: int, sep: str, measure: object) -> str:
    rng = random.Random(seed)
    paragraphs: list[str] = []
    total = 0
    while total < size:
        para: list[str] = []
        for _ in range(rng.randint(3, 6)):
            a, b = rng.sample(actors, 2)
            s = rng.choice(sentences).format(a=a, b=b, n=rng.randint(2, 95), k=rng.randint(2, 9), t=_clock(rng))
            para.append(s[0].upper() + s[1:] if sep else s)
            total += measure(s)  # type: ignore[operator]
        paragraphs.append(sep.join(para))
    return "\n\n".join(paragraphs)


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.choice((0, 5, 10, 20, 35, 50)):02d} UTC"


CODE = {
    "py_median": """def median(values):
    values.sort()
    n = len(values)
    if n % 2:
        return values[n // 2]
    return (values[n // 2] + values[n // 2 + 1]) / 2
""",
    "py_cache": """import time

_cache = {}

def get_user(user_id, db):
    if user_id in _cache:
        return _cache[user_id]
    user = db.fetch_user(user_id)
    _cache[user_id] = user
    return user

def expire():
    for key in _cache:
        if _cache[key].loaded_at < time.time() - 300:
            del _cache[key]
""",
    "js_debounce": """function debounce(fn, ms) {
  let timer;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn(args), ms);
  };
}
""",
    "go_worker": """func process(jobs []Job) []Result {
	results := []Result{}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results = append(results, run(j))
		}()
	}
	wg.Wait()
	return results
}
""",
    "sql_report": """SELECT c.name, SUM(o.total) AS revenue
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id
WHERE o.created_at >= '2025-01-01'
GROUP BY c.name
ORDER BY revenue DESC;
""",
    "rs_parse": """fn parse_port(s: &str) -> u16 {
    let n: u32 = s.trim().parse().unwrap();
    n as u16
}
""",
    "py_async": """import asyncio

async def fetch_all(client, urls):
    results = []
    for url in urls:
        task = asyncio.create_task(client.get(url))
        results.append(await task)
    return results
""",
    "ts_reducer": """type State = { items: Item[]; total: number };

function reducer(state: State, action: Action): State {
  switch (action.type) {
    case "add":
      state.items.push(action.item);
      state.total += action.item.price;
      return state;
    case "remove":
      return { ...state, items: state.items.filter((i) => i.id !== action.id) };
  }
}
""",
}


def module(seed: int, functions: int) -> str:
    """A plausible Python module of ``functions`` small functions (for long multi-file code requests)."""
    rng = random.Random(seed)
    nouns = ["order", "invoice", "user", "session", "replica", "batch", "image", "token", "pool", "record"]
    verbs = ["load", "save", "validate", "merge", "split", "price", "expire", "render", "count", "route"]
    out = ["from __future__ import annotations", "", "import logging", "", "log = logging.getLogger(__name__)", ""]
    for i in range(functions):
        v, n = rng.choice(verbs), rng.choice(nouns)
        out += [
            "",
            f"def {v}_{n}_{i}({n}, limit={rng.randint(1, 64)}):",
            f'    """{v.capitalize()} one {n}; refuses more than limit items."""',
            f"    if len({n}.items) > limit:",
            f'        raise ValueError("too many items in {n}")',
            "    total = 0",
            f"    for item in {n}.items:",
            f"        total += item.{rng.choice(['price', 'size', 'weight', 'tokens'])} * {rng.randint(1, 9)}",
            f'    log.debug("{v} %s: %d", {n}.id, total)',
            "    return total",
        ]
    return "\n".join(out) + "\n"
