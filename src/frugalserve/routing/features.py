"""What the router knows about a request: the budget stage's exact counts plus cheap text signals.

:func:`extract` runs on the event loop, once per request, after the budget stage. Token and image counts
are taken from that stage, never recounted. The text signals (code, math, reasoning words, language)
come from regular expressions over bounded windows: at most :data:`MESSAGE_WINDOW` characters of each
message (its head and tail) and :data:`TOTAL_WINDOW` characters in all, newest messages first, so a
megabyte prompt costs the same as a 100 KB one. Reasoning words are read in the ask only (the head and
tail of the last user message and of the system prompt): in pasted papers, code and earlier turns they
describe the material, not the work asked for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from frugalserve.errors import InvalidRequest

Priority = Literal["low", "normal", "high"]
TIER_HEADER = "x-frugalserve-tier"
PRIORITY_HEADER = "x-frugalserve-priority"
SESSION_HEADER = "x-frugalserve-session"

MESSAGE_WINDOW = 32 * 1024  # characters of one message scanned: the first 24 K and the last 8 K
_HEAD = 24 * 1024
TOTAL_WINDOW = 64 * 1024  # characters scanned over the whole request
# The ask: an instruction opens its message ("Summarise this: <paper>") or closes it ("<code> Why does this
# fail?"); a paragraph is under 1,000 characters, and what lies between the two ends is pasted material.
ASK_HEAD = 1024
ASK_TAIL = 512
LANGUAGE_SAMPLE = 512  # characters of the last user message (else of any text) the language is read from
SESSION_PREFIX = 4096  # characters of each opening message hashed into a session key
_COUNT_CAP = 1000  # signal counts are capped: they only ever saturate a weight


class Counts(Protocol):
    """What the budget stage counted (``frugalserve.budget.prepare.Prepared`` has these)."""

    prompt_tokens: int
    text_tokens: int
    image_tokens: int
    video_tokens: int
    images: int
    videos: int
    max_tokens_requested: int | None


@dataclass(frozen=True, slots=True)
class Features:
    prompt_tokens: int
    text_tokens: int
    image_tokens: int
    video_tokens: int
    images: int
    videos: int
    max_tokens: int | None  # what the client asked for (None: not given)
    code_blocks: int  # fenced ``` blocks plus code-like lines
    math: int  # math notation and vocabulary signals
    tools: bool  # tools / functions given
    json_schema: bool  # response_format json_schema
    depth: int  # messages in the conversation
    language: str  # "en", "zh", "ja", "ko", "ru", "ar", "hi", "th", "he", "el", "fr", "de", "es", "pt", "it"
    tier_hint: str | None  # x-frugalserve-tier
    priority: Priority  # x-frugalserve-priority
    session: str | None  # x-frugalserve-session, else `user`, else a hash of the first messages
    reasoning: int = 0  # words asking for proof, derivation, analysis, debugging...
    affinity: str | None = None  # replica affinity key: the first image's hash, else the session


_FENCE = "```"
# Each pattern starts with a literal or a small set, so the regex engine skips ahead with a fast search; a
# single alternation of all of them is ten times slower. Words are counted with str.count on lower case.
_CODE_LINE = re.compile(
    r"\n[ \t]*(?:def |class |import |from [\w.]+ import |#include|function\b|const |let |var |public |private |"
    r"fn |func |package |SELECT |INSERT |CREATE TABLE|return\b|if ?\(|for ?\(|while ?\()"
)
_CODE_ENDINGS = (";\n", "{\n", ";\r\n", "{\r\n")  # a line ending in ; or { is code, not prose
_TEX = re.compile(
    r"\\(?:frac|sum|int|sqrt|lim|prod|partial|nabla|mathbb|mathbf|begin\{(?:equation|align|matrix|pmatrix)|"
    r"cdot|infty|alpha|beta|gamma|theta|lambda|sigma|leq|geq|neq)(?![A-Za-z])"
)
_POWER = re.compile(r"\^\s*[\d{(]")  # x^2, e^{i}
_EQUATION = re.compile(r"\d\s*[-+*/\u00d7]\s*\d+\s*=")  # 12 + 3 =
_MATH_MARKS = ("$$", "∑", "∫", "√", "∞", "≈", "≠", "≤", "≥", "∂", "∇", "∏", "±", "÷")
_MATH_WORDS = (
    "integral", "derivative", "equation", "eigenvalue", "matrix", "matrices", "theorem", "lemma", "probability",
    "polynomial", "logarithm", "方程", "积分", "导数", "矩阵", "概率", "定理",
)  # fmt: skip
# Words that ask for multi-step work: proof, derivation, analysis, debugging, design, or a whole artefact
# built and tested. Latin-script ones are whole words (not inside "improves"), and not an identifier
# ("log.debug(", "debug_mode"); Chinese has no spaces between words, so a substring is the word (实现,
# "implement", is left out: it is also "achieve", common in business prose).
_REASONING = re.compile(
    r"(?<![\w.])(?:prov(?:e|ing)|proofs?|deriv(?:e|ing|ation)|step[ -]by[ -]step|explain why|analy[sz](?:e|ing)|"
    r"analysis|debug(?:ging)?|optimi[sz](?:e|ing)|refactor(?:ing)?|trade-?offs?|architecture|evaluate|critique|"
    r"root cause|rigorous(?:ly)?|implement|from scratch|with tests|unit tests|test (?:suite|harness))(?![\w(])"
)
_REASONING_CJK = (
    "证明", "推导", "分析", "为什么", "优化", "架构", "调试", "重构", "权衡", "根本原因", "逐步", "单元测试",
)  # fmt: skip


def _signals(window: str) -> tuple[int, int]:
    """(code, math) signal counts of one window of text."""
    code = window.count(_FENCE) // 2 + len(_CODE_LINE.findall("\n" + window))
    code += sum(window.count(e) for e in _CODE_ENDINGS) + window.endswith((";", "{"))
    math = len(_TEX.findall(window)) + len(_POWER.findall(window)) + len(_EQUATION.findall(window))
    math += sum(window.count(m) for m in _MATH_MARKS) + sum(window.lower().count(w) for w in _MATH_WORDS)
    return code, math


def _reasoning(ask: str) -> int:
    """Reasoning words in the ask (:func:`_ask`): at most ASK_HEAD + ASK_TAIL characters."""
    lower = ask.lower()
    return len(_REASONING.findall(lower)) + sum(lower.count(w) for w in _REASONING_CJK)


# Scripts, by Unicode block: the language follows the script with most characters.
_SCRIPTS = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana: Japanese even when written mostly in kanji
    ("zh", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")),
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
)
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_WORD = re.compile(r"[a-z\u00e0-\u00ff]+")
# Latin-script languages, told apart by their commonest short words.
_LATIN_WORDS = (
    ("en", "the and is are of to what how with this that you"),
    ("fr", "le la les et est des une pour que avec dans vous"),
    ("de", "der die das und ist nicht mit ein eine ich sie wie"),
    ("es", "el los las y es una por para que con del cómo"),
    ("pt", "os as e é um uma para com não do da você"),
    ("it", "il gli e è un una per che con non della sono"),
)
# word -> the languages it counts for (a word may count for several)
_STOPWORDS: Mapping[str, tuple[str, ...]] = {
    word: tuple(code for code, words in _LATIN_WORDS if word in words.split())
    for _, words in _LATIN_WORDS
    for word in words.split()
}
_LATIN_ORDER = tuple(code for code, _ in _LATIN_WORDS)  # a tie goes to the first


def extract(body: Mapping[str, Any], counts: Counts, headers: Mapping[str, str]) -> Features:
    """The request's features, for :func:`frugalserve.routing.policy.decide`.

    ``body`` is the chat (``messages``) or completions (``prompt``) body after the budget stage;
    ``headers`` is looked up by lower-case name (Starlette's ``Headers`` is case-insensitive). Cheap by
    construction: regexes run over bounded windows only (see the module docstring).
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = [{"role": "user", "content": body.get("prompt")}]
    code = math = reasoning = 0
    budget = TOTAL_WINDOW
    last_user: str | None = None
    any_text: str | None = None
    asked = False  # the last user message's reasoning words are counted
    for message in reversed(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if (role == "user" and not asked) or role in ("system", "developer"):
            reasoning += _reasoning(_ask(list(_texts(message))))
            asked = asked or role == "user"
        if budget <= 0:
            continue
        for text in _texts(message):
            window = _window(text, min(MESSAGE_WINDOW, budget))
            budget -= len(window)
            signals = _signals(window)
            code, math = code + signals[0], math + signals[1]
            if any_text is None:
                any_text = window
            if last_user is None and role == "user":
                last_user = window
    tools = bool(body.get("tools") or body.get("functions"))
    fmt = body.get("response_format")
    json_schema = isinstance(fmt, Mapping) and fmt.get("type") == "json_schema"
    session = _session(body, messages, headers)
    return Features(
        prompt_tokens=counts.prompt_tokens,
        text_tokens=counts.text_tokens,
        image_tokens=counts.image_tokens,
        video_tokens=counts.video_tokens,
        images=counts.images,
        videos=counts.videos,
        max_tokens=counts.max_tokens_requested,
        code_blocks=min(code, _COUNT_CAP),
        math=min(math, _COUNT_CAP),
        tools=tools,
        json_schema=json_schema,
        depth=len(messages),
        language=language((last_user or any_text or "")[:LANGUAGE_SAMPLE]),
        tier_hint=(headers.get(TIER_HEADER) or "").strip() or None,
        priority=_priority(headers.get(PRIORITY_HEADER)),
        session=session,
        reasoning=min(reasoning, _COUNT_CAP),
        affinity=_first_image_key(messages) or session,
    )


def language(sample: str) -> str:
    """A language code from the script of ``sample`` (Latin: the language with most common short words;
    none found: "en"); "other" when the text has no letters of a known script."""
    best, most = "", 0
    for code, pattern in _SCRIPTS:
        n = len(pattern.findall(sample))
        if n > most:
            best, most = code, n
    latin = len(_LATIN.findall(sample))
    # One CJK character carries about a word: a few in a Latin text still mean a CJK language.
    if most and most * 3 >= latin:
        if best == "zh" and _SCRIPTS[0][1].search(sample):
            return "ja"
        return best
    if not latin:
        return "other"
    votes = dict.fromkeys(_LATIN_ORDER, 0)
    for word in _WORD.findall(sample.lower()):
        for code in _STOPWORDS.get(word, ()):
            votes[code] += 1
    best = max(_LATIN_ORDER, key=lambda c: votes[c])
    return best if votes[best] else "en"


def _texts(message: Any) -> Iterator[str]:
    if not isinstance(message, Mapping):
        return
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                yield part["text"]
            elif isinstance(part, str):
                yield part


def _ask(texts: list[str]) -> str:
    """The first ASK_HEAD and last ASK_TAIL characters of a message's text parts joined by newlines,
    without copying the middle of a long one."""
    if sum(len(t) + 1 for t in texts) <= ASK_HEAD + ASK_TAIL + 1:
        return "\n".join(texts)
    head: list[str] = []
    need = ASK_HEAD
    for t in texts:
        if need <= 0:
            break
        head.append(t[:need])
        need -= len(t) + 1
    tail: list[str] = []
    need = ASK_TAIL
    for t in reversed(texts):
        if need <= 0:
            break
        tail.append(t[-need:])
        need -= len(t) + 1
    return "\n".join(head) + "\n" + "\n".join(reversed(tail))


def _window(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = min(_HEAD, limit)
    tail = limit - head
    return text[:head] + "\n" + text[len(text) - tail :] if tail else text[:head]


def _priority(value: str | None) -> Priority:
    if value is None:
        return "normal"
    v = value.strip().lower()
    if v in ("low", "normal", "high"):
        return v  # type: ignore[return-value]
    raise InvalidRequest(
        f"header {PRIORITY_HEADER} must be low, normal or high, got {value[:40]!r}",
        param=PRIORITY_HEADER,
        code="invalid_value",
    )


def affinity_key(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The replica affinity key of a request, as :attr:`Features.affinity` (for requests that are not routed)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = [{"role": "user", "content": body.get("prompt")}]
    return _first_image_key(messages) or _session(body, messages, headers)


def _session(body: Mapping[str, Any], messages: list[Any], headers: Mapping[str, str]) -> str | None:
    given = (headers.get(SESSION_HEADER) or "").strip()
    if given:
        return "h:" + given[:256]
    user = body.get("user")
    if isinstance(user, str) and user:
        return "u:" + user[:256]
    # The messages up to the first user message: every later turn of the conversation starts with them.
    h = hashlib.blake2b(digest_size=8)
    for message in messages[:8]:
        role = message.get("role") if isinstance(message, Mapping) else None
        h.update(str(role).encode())
        for text in _texts(message):
            h.update(text[:SESSION_PREFIX].encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        if role == "user":
            break
    return "m:" + h.hexdigest()


def _first_image_key(messages: list[Any]) -> str | None:
    """A hash of the first image's URL (a data URL after the budget stage): its length and three 1 KB
    samples, so a megabyte image costs microseconds, and the same image lands on the replica that has
    it in its vision cache."""
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "image_url":
                continue
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, Mapping) else ref
            if isinstance(url, str) and url:
                n = len(url)
                mid = n // 2
                sample = f"{n}|{url[:1024]}|{url[mid : mid + 1024]}|{url[-1024:]}"
                return "i:" + hashlib.blake2b(sample.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return None
