"""The demo checkpoint loads through exactly the code path of a real Qwen3-VL / Qwen3 checkpoint."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
pytest.importorskip("torch")

from frugalserve.engine.demo_model import chat_template, ensure_demo_model, is_demo  # noqa: E402


def test_demo_checkpoint_has_real_processor_settings_and_vocabulary(demo_model_dir: Path) -> None:
    from frugalserve.engine.model import load_processor
    from frugalserve.qwen_vocab import SPECIAL_IDS

    processor = load_processor(demo_model_dir)
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (16, 2, 2)
    assert dict(ip.size) == {"shortest_edge": 65536, "longest_edge": 16777216}
    tok = processor.tokenizer
    for token, token_id in SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(token) == token_id
    assert tok.chat_template == chat_template()
    assert is_demo(demo_model_dir)
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert (demo_model_dir / "model.safetensors").exists()
    size = sum(f.stat().st_size for f in demo_model_dir.iterdir())
    assert size < 200e6


def test_ensure_demo_model_reuses_an_existing_checkpoint(demo_model_dir: Path) -> None:
    before = (demo_model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(demo_model_dir) == demo_model_dir
    assert (demo_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_racing_writers_leave_one_complete_text_only_checkpoint(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path / "demo-text"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_demo_model(target, text_only=True))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target, target]
    assert [p.name for p in tmp_path.iterdir()] == ["demo-text"]  # no temporary left behind
    model = AutoModelForCausalLM.from_pretrained(target)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    tok = AutoTokenizer.from_pretrained(target)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 2


def test_decode_keeps_tool_call_tags_and_drops_control_tokens_like_real_qwen(demo_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    ids = tok.encode('<tool_call>\n{"name": "f"}\n</tool_call><think>x</think><|im_end|><|vision_start|>')
    assert tok.decode(ids, skip_special_tokens=True) == '<tool_call>\n{"name": "f"}\n</tool_call><think>x</think>'


def test_an_older_demo_checkpoints_tokenizer_config_is_refreshed(demo_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old-demo"
    old.mkdir()
    shutil.copy(demo_model_dir / "config.json", old / "config.json")
    stale = json.loads((demo_model_dir / "tokenizer_config.json").read_text())
    for entry in stale["added_tokens_decoder"].values():
        entry["special"] = True  # what frugalserve wrote before: every added token special
    (old / "tokenizer_config.json").write_text(json.dumps(stale))
    assert ensure_demo_model(old) == old
    fresh = json.loads((old / "tokenizer_config.json").read_text())
    assert fresh == json.loads((demo_model_dir / "tokenizer_config.json").read_text())
    assert fresh["added_tokens_decoder"]["151657"]["special"] is False  # <tool_call>
    assert fresh["added_tokens_decoder"]["151645"]["special"] is True  # <|im_end|>
