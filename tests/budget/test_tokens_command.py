"""``frugalserve tokens`` run as users run it: the real CLI in a subprocess."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests import procs


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "frugalserve.cli", "tokens", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=procs.spawn_env({"PYTHONWARNINGS": "default"}),  # show every warning that is not handled
        check=False,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp_path = tmp_path_factory.mktemp("images")
    out = {
        "shot": tmp_path / "shot.png",
        "missing": tmp_path / "missing.png",
        "junk": tmp_path / "junk.png",
        "big": tmp_path / "big.png",  # 100 MP: over the gateway's limit and Pillow's warning size
        "huge": tmp_path / "huge.png",  # 400 MP: over Pillow's decompression-bomb error size
        "tag": tmp_path / "tag.tif",  # a TIFF tag claims more data than the file has: Pillow warns
        "thin": tmp_path / "thin.png",
    }
    Image.new("RGB", (1920, 1080)).save(out["shot"])
    out["junk"].write_bytes(b"not an image")
    Image.new("1", (10_000, 10_000)).save(out["big"])
    Image.new("1", (20_000, 20_000)).save(out["huge"])
    Image.new("RGB", (300, 200)).save(out["tag"], "TIFF", dpi=(72, 72))
    data = bytearray(out["tag"].read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 282:  # XResolution: not needed for the size
            struct.pack_into("<I", data, entry + 4, 1 << 28)
    out["tag"].write_bytes(bytes(data))
    Image.new("RGB", (8000, 20)).save(out["thin"])
    return out


def _rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return list(json.loads(result.stdout))


def test_json_lists_sizes_and_costs(files: dict[str, Path]) -> None:
    result = _cli("--json", str(files["shot"]))
    assert result.returncode == 0 and result.stderr == ""
    [row] = _rows(result)
    assert set(row) == {
        "file",
        "width",
        "height",
        "resized_width",
        "resized_height",
        "tokens_before",
        "tokens_after",
        "note",
        "error",
    }
    # 1920x1080 -> 1920x1088 by smart_resize: 60 x 34 tokens + 2 markers.
    assert (row["width"], row["height"], row["tokens_before"]) == (1920, 1080, 2042)
    assert row["tokens_after"] == row["resized_width"] * row["resized_height"] // 1024 + 2 <= 1026
    assert row["note"] is None and row["error"] is None


def test_one_row_per_file_in_order_and_errors_do_not_sink_the_others(files: dict[str, Path]) -> None:
    names = ["junk", "shot", "missing", "huge", "big", "tag", "thin", "shot"]
    result = _cli("--json", *(str(files[n]) for n in names))
    assert result.returncode == 1
    rows = _rows(result)
    assert [r["file"] for r in rows] == [str(files[n]) for n in names]
    by_name = dict(zip(names, rows, strict=True))
    assert "unknown format" in by_name["junk"]["error"]
    assert by_name["missing"]["error"] == "No such file or directory"
    assert "aspect ratio" in by_name["thin"]["error"] and "would refuse" in by_name["thin"]["error"]
    for name, side in (("big", 10_000), ("huge", 20_000)):
        row = by_name[name]
        assert row["error"] is None and (row["width"], row["height"]) == (side, side)
        # Over the processor's 16,777,216-pixel maximum: 4096x4096, 16,384 pads + 2.
        assert row["tokens_before"] == 16_386 and row["tokens_after"] == 24 * 24 + 2
        assert row["note"] == f"{side * side} pixels, over the gateway's limit of 50000000: the gateway would refuse it"
    assert by_name["tag"]["error"] is None and (by_name["tag"]["width"], by_name["tag"]["height"]) == (300, 200)
    assert rows[1] == rows[-1]


def test_no_library_warning_is_printed(files: dict[str, Path]) -> None:
    result = _cli(str(files["big"]), str(files["huge"]), str(files["tag"]))
    assert result.returncode == 0
    assert result.stderr == ""


def test_text_output_has_a_line_per_file_and_a_total(files: dict[str, Path]) -> None:
    result = _cli(str(files["shot"]), str(files["junk"]), str(files["big"]))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{files['shot']}: 1920x1080 -> 1344x768, 2042 -> 1010 tokens"
    assert lines[1].startswith(f"{files['junk']}: error: not a readable image")
    assert lines[2].startswith(f"{files['big']}: 10000x10000 -> 768x768, 16386 -> 578 tokens (100000000 pixels")
    assert lines[3] == "total: 18428 -> 1588 tokens (91% fewer)"


def test_budget_options_change_the_result(files: dict[str, Path]) -> None:
    [row] = _rows(_cli("--json", "--max-image-tokens", "256", "--short-edge", "0", str(files["shot"])))
    assert row["tokens_after"] <= 258
    [row] = _rows(_cli("--json", "--max-input-pixels", "1000000", str(files["shot"])))
    assert "over the gateway's limit of 1000000" in row["note"]
    assert _cli("--max-image-tokens", "10", str(files["shot"])).returncode == 2
