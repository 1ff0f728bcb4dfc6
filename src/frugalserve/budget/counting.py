"""Exact prompt token counts: render Qwen3-VL's chat template, tokenize as Qwen's tokenizer does, expand
each visual pad to its count.

The template (``templates/qwen3_vl_chat.jinja``) is the one Qwen publishes with Qwen3-VL-Instruct, byte
for byte (see ``templates/README.md``); the demo checkpoint ships it too. Messages are first put in the
form vLLM hands a template (:func:`template_messages`), so the count is what a vLLM backend's model sees.
Each image or video stands in the rendered text as one pad token between vision markers; the processor
later repeats that pad, which is what we add here.

Text is tokenized with tiktoken over Qwen's vocabulary, with one exception: a long run of blanks
(whitespace other than line breaks) at the end of a whitespace run. tiktoken's regex engine overflows
its stack on such a run of about a million characters (a ``PanicException``, which is not an
``Exception``); the pre-tokenizer's result for it is known in closed form, so the run is cut out and
byte-pair encoded here without the regex. Any other failure of the tokenizer becomes a 400.

Long text is counted in pieces of about :data:`PIECE_CHARS` characters, cut only where neither the
special-token split, NFC nor the pre-tokenizer can join across the cut (:data:`_SAFE_CUT`), so that no
single call holds the GIL for long (a count runs in a worker thread beside the event loop) and no
list of millions of ids is built. The rendered prompt is never joined into one string to count it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalserve import qwen_vocab
from frugalserve.budget.vision import MARKER_TOKENS, VideoTokens
from frugalserve.errors import InvalidRequest

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "templates" / "qwen3_vl_chat.jinja"
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in qwen_vocab.SPECIAL_TOKENS) + ")")
# Never turned into a 400: the process or the task is being stopped.
_CONTROL = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)

# Unicode White_Space (what \s means to the pre-tokenizer) less \r and \n: a "blank".
_BLANK = "\t\x0b\x0c \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANKS = frozenset("\t\x0b\x0c \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000").union(map(chr, range(0x2000, 0x200B)))
_BLANK_RUN = re.compile(f"[{_BLANK}]+")
_TRAILING_BLANKS = re.compile(f"[{_BLANK}]+\\Z")
# Blank runs at least this long that no line break follows are encoded without the regex. Far below
# where the regex fails (~800,000), far above what ordinary text holds.
LONG_BLANK_RUN = 1024
_STRIDE = LONG_BLANK_RUN // 2  # a run this long covers two consecutive multiples of the stride
# A run of one blank character is byte-pair encoded as whole blocks of this many characters plus the
# rest (Qwen's longest runs: 128 spaces, 32 newlines, 16 tabs); tested against direct encoding.
_BLOCK = 512

# Characters per counted piece: a few milliseconds of GIL per call (NFC, the special-token split, tiktoken's
# id list), while a piece rarely ends mid-way through where a cut is allowed.
PIECE_CHARS = 256 * 1024
_CUT_WINDOW = 64 * 1024  # characters searched per regex call while looking for a cut
# A cut is allowed just after the match (tests/budget/test_counting.py checks each against whole counts):
#  - a "\n" followed by a character that is not whitespace (Unicode White_Space, the pre-tokenizer's
#    \s): every pre-token that holds that "\n" ends there, and no pre-token can start before the cut and
#    reach past it (a whitespace run before it is matched by `\s*[\r\n]+`, which stops at the "\n");
#  - an ASCII digit followed by anything: a digit is always a pre-token of its own;
#  - an ASCII letter followed by a space: a word (`\p{L}+`, or a contraction) stops at the space.
# NFC cannot join across any of them: "\n", " " and ASCII digits are in no canonical decomposition and an
# ASCII letter is never a decomposition's second character, so nothing composes or reorders across the
# cut, and a character that is not whitespace never normalises to whitespace. No special token holds a
# "\n", a space or a digit, so none spans a cut. The lookahead needs the next character to be present,
# so a search bounded to a window never reports a cut at the window's end.
_WHITE_SPACE = _BLANK + "\r\n"
_SAFE_CUT = re.compile(f"\n(?=[^{_WHITE_SPACE}])|[0-9](?=.)|[A-Za-z](?= )", re.DOTALL)


@functools.cache
def chat_template() -> Any:
    """The compiled template, in an environment like transformers' ``apply_chat_template``."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # transformers' tojson: json.dumps, not HTML-escaped, non-ASCII kept.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as vLLM gives them to a chat template (``vllm.entrypoints.chat_utils``): null
    content is empty, image and video parts are ``{"type": "image"}`` / ``{"type": "video"}`` (the
    published template does not know ``video_url``), and tool-call arguments sent as a JSON string are
    parsed into an object (the template then writes them with ``tojson``)."""
    out = []
    for m in messages:
        msg = dict(m)
        content = msg.get("content")
        if content is None:
            msg["content"] = ""
        elif isinstance(content, list):
            msg["content"] = [_template_part(p) for p in content]
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            msg["tool_calls"] = [_template_call(c) for c in calls]
        out.append(msg)
    return out


def _template_part(part: Any) -> Any:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in ("image_url", "image"):
        return {"type": "image"}
    if kind in ("video_url", "video"):
        return {"type": "video"}
    return part


def _template_call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    fn = call.get("function")
    if isinstance(fn, Mapping) and isinstance(fn.get("arguments"), str):
        try:
            arguments = json.loads(fn["arguments"])
        except ValueError:
            return call  # rendered as sent
        return {**call, "function": {**fn, "arguments": arguments}}
    return call


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The prompt text the model sees; ``tools`` are the request's tool definitions, as sent."""
    return "".join(render_parts(messages, add_generation_prompt, tools))


def render_parts(
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
    """:func:`render_chat`'s text as the template writes it out, unjoined: each message's text is its own
    part (the same string object), so a long prompt is not copied (joining 15 MB holds the GIL ~100 ms)."""
    try:
        gen = chat_template().generate(
            messages=template_messages(messages), tools=tools, add_generation_prompt=add_generation_prompt
        )
        return [str(part) for part in gen]
    except _CONTROL:
        raise
    except Exception as exc:  # a message shape the template cannot render
        raise InvalidRequest(f"cannot render the messages: {exc}", param="messages") from None


def pieces(parts: Iterable[str], size: int = PIECE_CHARS) -> Iterator[str]:
    """The concatenation of ``parts`` in pieces of about ``size`` characters or more, each cut where
    :data:`_SAFE_CUT` allows; text with no allowed cut stays whole. Only cuts inside a part are used."""
    pending: list[str] = []
    pending_len = 0
    for part in parts:
        start = 0
        while pending_len + len(part) - start >= size:
            cut = _find_cut(part, max(start, start + size - pending_len - 1))
            if cut < 0:
                break
            pending.append(part[start:cut])
            yield "".join(pending)
            pending, pending_len, start = [], 0, cut
        rest = part[start:] if start else part
        if rest:
            pending.append(rest)
            pending_len += len(rest)
    if pending:
        yield "".join(pending)


def _find_cut(text: str, pos: int) -> int:
    """The first allowed cut after ``text[pos]`` (a position in 1..len-1), or -1; bounded regex calls."""
    while pos < len(text) - 1:
        m = _SAFE_CUT.search(text, pos, min(len(text), pos + _CUT_WINDOW))
        if m is not None:
            return m.end()
        pos += _CUT_WINDOW - 1  # the window's last character again: its cut needs the next one
    return -1


def _encode_pieces(parts: Iterable[str]) -> Iterator[tuple[str, list[int]]]:
    """Per special token ``(token, [id])``, per ordinary text ``("", ids)``: special tokens split out
    first, then the text between them NFC-normalised and byte-pair encoded, piece by piece."""
    for piece in pieces(parts, PIECE_CHARS):
        for i, text in enumerate(_SPECIAL_SPLIT.split(piece)):
            if i % 2:
                yield text, [qwen_vocab.SPECIAL_IDS[text]]
            elif text:
                yield "", _encode_ordinary(unicodedata.normalize("NFC", text))


def _tokenize(parts: Iterable[str], param: str, ids: list[int] | None = None) -> tuple[int, dict[str, int]]:
    """Count the tokens of the concatenated ``parts`` (appending the ids to ``ids`` if given) and the
    special tokens among them. A tokenizer failure is a 400 naming ``param``."""
    n = 0
    specials: dict[str, int] = {}
    try:
        for special, run in _encode_pieces(parts):
            n += len(run)
            if special:
                specials[special] = specials.get(special, 0) + 1
            if ids is not None:
                ids += run
    except _CONTROL:
        raise
    except BaseException as exc:  # Rust panics are BaseException (pyo3_runtime.PanicException)
        raise InvalidRequest(f"the tokenizer could not read this text ({type(exc).__name__})", param=param) from None
    return n, specials


def encode(text: str, param: str = "messages") -> list[int]:
    """Token ids as Hugging Face's Qwen tokenizer gives them: special tokens split out first, then each
    ordinary piece NFC-normalised and byte-pair encoded. A tokenizer failure is a 400 naming ``param``."""
    ids: list[int] = []
    _tokenize((text,), param, ids)
    return ids


def _encode_ordinary(text: str) -> list[int]:
    enc = qwen_vocab.encoding()
    ids: list[int] = []
    start = 0
    for run_start, run_end in _long_blank_tails(text):
        # The pre-tokenizer makes such a run one piece (its `\s+(?!\S)`), less its last character when
        # text follows: that one goes with what follows (" word", " !") or stands alone. Nothing before
        # the run reaches into it, and nothing after it looks back.
        end = run_end if run_end == len(text) else run_end - 1
        ids += enc.encode_ordinary(text[start:run_start])
        ids += _encode_blank(text[run_start:end])
        start = end
    ids += enc.encode_ordinary(text[start:])
    return ids


def _long_blank_tails(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal blank run of at least LONG_BLANK_RUN characters that no line break
    follows. Only every _STRIDE-th character is looked at until two in a row are blank."""
    samples = text[::_STRIDE]
    i, done = 0, 0
    while i < len(samples) - 1:
        if samples[i] not in _BLANKS or samples[i + 1] not in _BLANKS:
            i += 1
            continue
        at = i * _STRIDE
        # The run began after the last sample that was not blank (or after the previous run).
        before = _TRAILING_BLANKS.search(text, max(done, at - _STRIDE), at + 1)
        start = before.start() if before is not None else at
        end = _BLANK_RUN.match(text, at).end()  # type: ignore[union-attr]
        if end - start >= LONG_BLANK_RUN and (end == len(text) or text[end] not in "\r\n"):
            yield start, end
        done = end
        i = -(-end // _STRIDE)


def _encode_blank(run: str) -> list[int]:
    """Byte-pair encode one pre-tokenized piece of blanks, without the regex."""
    enc = qwen_vocab.encoding()
    if len(run) >= 3 * _BLOCK and run.count(run[0]) == len(run):
        whole = len(run) // _BLOCK - 1  # leaves a rest of _BLOCK to 2 * _BLOCK - 1 characters
        rest = run[0] * (len(run) - whole * _BLOCK)
        return _blank_block(run[0]) * whole + enc._encode_single_piece(rest.encode())
    return enc._encode_single_piece(run.encode())


@functools.cache
def _blank_block(char: str) -> list[int]:
    return qwen_vocab.encoding()._encode_single_piece((char * _BLOCK).encode())


def count_text(text: str, param: str = "prompt") -> int:
    """``len(encode(text))``, without building the whole id list."""
    return _tokenize((text,), param)[0]


@dataclass(frozen=True)
class TokenCount:
    """A prompt's tokens by kind. Image and video tokens include their vision markers (and a video's
    timestamps); ``text`` is everything else, template and tool definitions included."""

    total: int
    text: int
    image: int
    video: int


def video_prompt_tokens(video: VideoTokens) -> int:
    """Tokens one video adds in place of its pad: per frame pair a timestamp text, markers and pads;
    plus the outer markers the template writes."""
    stamps = sum(count_text(t) for t in video.timestamp_texts())
    return MARKER_TOKENS + stamps + video.groups * (MARKER_TOKENS + video.tokens_per_group)


def count_chat(
    messages: Sequence[Mapping[str, Any]],
    image_pads: Sequence[int] = (),
    videos: Sequence[VideoTokens] = (),
    add_generation_prompt: bool = True,
    tools: Any = None,
) -> TokenCount:
    """Count a chat prompt whose image and video parts appear, in order, with these costs.

    ``image_pads[i]`` is the pad count of the i-th image part (``vision.image_pad_tokens`` or the budget
    size); ``videos[i]`` the i-th video part's cost; ``tools`` the request's ``tools`` (rendered into the
    system block, as the template does).
    """
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
        raise InvalidRequest("'tools' must be a list of tool objects", param="tools")
    rendered, specials = _tokenize(render_parts(messages, add_generation_prompt, tools), "messages")
    n_images = specials.get("<|image_pad|>", 0)
    n_videos = specials.get("<|video_pad|>", 0)
    if n_images != len(image_pads) or n_videos != len(videos):
        raise InvalidRequest(
            f"the request has {len(image_pads)} image and {len(videos)} video parts but the chat template "
            f"renders {n_images} and {n_videos}: Qwen3-VL's template shows images and videos only in user and "
            "tool messages (and text must not contain vision tokens)",
            param="messages",
        )
    image = sum(image_pads) + MARKER_TOKENS * n_images
    video = sum(video_prompt_tokens(v) for v in videos)
    # Each visual part rendered as 3 tokens (markers + one pad); replace those with the real cost.
    total = rendered - 3 * (n_images + n_videos) + image + video
    return TokenCount(total=total, text=total - image - video, image=image, video=video)
