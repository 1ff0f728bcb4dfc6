from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from frugalserve.cli import main


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    path = tmp_path / "shot.png"
    Image.new("RGB", (1920, 1080)).save(path)
    return path


def test_json_output_lists_sizes_and_costs(screenshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokens", "--json", str(screenshot)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert set(row) == {
        "file",
        "width",
        "height",
        "resized_width",
        "resized_height",
        "tokens_before",
        "tokens_after",
    }
    assert (row["width"], row["height"], row["tokens_before"]) == (1920, 1080, 2042)
    assert row["tokens_after"] == row["resized_width"] * row["resized_height"] // 1024 + 2 <= 1026


def test_max_image_tokens_changes_the_budget(screenshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokens", "--json", "--max-image-tokens", "256", str(screenshot)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["tokens_after"] <= 258


def test_text_output_and_unreadable_file(screenshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["tokens", str(screenshot), str(bad)]) == 1
    out = capsys.readouterr()
    assert "1920x1080 ->" in out.out and "2042 ->" in out.out
    assert "bad.png" in out.err
