"""A tiny Qwen3-VL (or Qwen3) checkpoint with random weights, written offline.

It uses the real Qwen vocabulary (special tokens at their real ids), Qwen3-VL's real processor settings
(patch 16, merge 2, temporal patch 2, default pixel limits) and frugalserve's chat template, and is saved
with ``save_pretrained`` so that it loads through exactly the code path of a real checkpoint. Its answers
are meaningless: ``config.json`` carries ``"frugalserve_demo": true`` and the engine says so.

Torch and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from frugalserve import qwen_vocab

DEMO_MARKER = "frugalserve_demo"
SEED = 1234
# The default pixel limits of Qwen3-VL's image processor (and the gateway's smart_resize).
IMAGE_SIZE = {"shortest_edge": 65536, "longest_edge": 16777216}
VIDEO_SIZE = {"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32}


def chat_template() -> str:
    return resources.files("frugalserve").joinpath("templates/qwen3_vl_chat.jinja").read_text()


def default_cache_dir() -> Path:
    """``$FRUGALSERVE_HOME/demo-model`` or ``~/.cache/frugalserve/demo-model``."""
    home = os.environ.get("FRUGALSERVE_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "frugalserve"
    return base / "demo-model"


def is_demo(model_dir: str | Path) -> bool:
    try:
        return bool(json.loads((Path(model_dir) / "config.json").read_text()).get(DEMO_MARKER))
    except (OSError, ValueError):
        return False


def ensure_demo_model(directory: str | Path | None = None, *, text_only: bool = False) -> Path:
    """Return a directory holding the demo checkpoint, writing it first if missing.

    Written into a temporary sibling and renamed into place, so a reader never sees half a checkpoint and
    two processes racing both end up with one complete directory (the loser discards its copy).
    """
    target = Path(directory) if directory is not None else default_cache_dir()
    if (target / "config.json").exists():
        if is_demo(target):
            _refresh_tokenizer_files(target)  # a checkpoint written by an older frugalserve
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_demo_model(tmp, text_only=text_only)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race (the target now exists and is not empty).
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _text_config(vl: bool) -> dict:
    # head_dim 32 -> 16 rotary frequencies; mrope splits them over (t, h, w) like the real 24/20/20.
    rope: dict = {"rope_type": "default", "rope_theta": 5000000.0}
    if vl:
        rope |= {"mrope_section": [6, 5, 5], "mrope_interleaved": True}
    return {
        "vocab_size": qwen_vocab.VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        "tie_word_embeddings": True,
        "bos_token_id": qwen_vocab.ENDOFTEXT,
        "eos_token_id": qwen_vocab.IM_END,
        "pad_token_id": qwen_vocab.ENDOFTEXT,
    }


def write_demo_model(directory: str | Path, *, text_only: bool = False) -> Path:
    """Write the checkpoint into ``directory`` (created if needed) and return it."""
    import torch
    from transformers import GenerationConfig

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    if text_only:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        config = Qwen3Config(**_text_config(vl=False))
        model = Qwen3ForCausalLM(config)
    else:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        vision = {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [0],
        }
        config = Qwen3VLConfig(text_config=_text_config(vl=True), vision_config=vision, tie_word_embeddings=True)  # type: ignore[assignment]
        model = Qwen3VLForConditionalGeneration(config)  # type: ignore[assignment,arg-type]
    setattr(config, DEMO_MARKER, True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=qwen_vocab.ENDOFTEXT,
        eos_token_id=[qwen_vocab.IM_END, qwen_vocab.ENDOFTEXT],
        pad_token_id=qwen_vocab.ENDOFTEXT,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
    ).save_pretrained(out)
    _write_tokenizer_files(out)
    if not text_only:
        _write_processor_files(out)
    return out


def _tokenizer_config() -> dict:
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t not in qwen_vocab.TEXT_TOKENS,
        }
        for t, i in qwen_vocab.SPECIAL_IDS.items()
    }
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "add_prefix_space": False,
    }


def _write_tokenizer_files(out: Path) -> None:
    qwen_vocab.write_tokenizer_json(out)
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2))
    (out / "chat_template.jinja").write_text(chat_template())


def _refresh_tokenizer_files(target: Path) -> None:
    """The tokenizer config and chat template the gateway counts with, also in an older checkpoint."""
    _replace_if_different(target / "tokenizer_config.json", json.dumps(_tokenizer_config(), indent=2))
    _replace_if_different(target / "chat_template.jinja", chat_template())


def _replace_if_different(path: Path, wanted: str) -> None:
    try:
        if path.read_text() == wanted:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(wanted)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one


def _write_processor_files(out: Path) -> None:
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_resize": True,
        "do_convert_rgb": True,
    }
    image = common | {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "size": IMAGE_SIZE,
        "processor_class": "Qwen3VLProcessor",
    }
    video = common | {
        "video_processor_type": "Qwen3VLVideoProcessor",
        "size": VIDEO_SIZE,
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
        "do_sample_frames": True,
        "processor_class": "Qwen3VLProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}, indent=2))


# -- ``frugalserve demo-model DIR [--text-only]`` ---------------------------------------------------------
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", help=f"where to write it (default: {default_cache_dir()})")
    p.add_argument("--text-only", action="store_true", help="a Qwen3 text model instead of Qwen3-VL")
    p.add_argument("--force", action="store_true", help="write even if DIR already holds a checkpoint")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    target = Path(args.directory) if args.directory else default_cache_dir()
    if (target / "config.json").exists() and not args.force:
        print(f"{target} already holds a checkpoint (use --force to overwrite)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    if args.force and target.exists():
        shutil.rmtree(target)
    ensure_demo_model(target, text_only=args.text_only)
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    kind = "Qwen3 (text)" if args.text_only else "Qwen3-VL"
    print(
        f"wrote a demo {kind} checkpoint (random weights) to {target}: {size:.0f} MB in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0
