"""The ``engine`` and ``demo-model`` subcommands: cheap to import, and demo-model writes a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SRC


def test_subcommands_do_not_import_torch_until_run() -> None:
    code = (
        "import sys; from frugalserve.cli import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | {"PYTHONPATH": str(SRC)})


@pytest.mark.engine
@pytest.mark.integration
def test_demo_model_command_writes_a_text_checkpoint_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "frugalserve", "demo-model", str(tmp_path / "m"), "--text-only"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "demo Qwen3 (text) checkpoint" in done.stdout
    assert (tmp_path / "m" / "model.safetensors").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds a checkpoint" in again.stderr


def parse_engine_args(*argv: str):
    import argparse

    from frugalserve.engine.cli import configure

    p = argparse.ArgumentParser()
    configure(p)
    return p.parse_args(["--model", "m", *argv])


def test_image_flags_reach_the_fetch_limits() -> None:
    from frugalserve.engine.cli import settings_from_args

    args = parse_engine_args(
        "--allow-remote-images",
        "--image-fetch-allow-host",
        "images.internal",
        "--image-fetch-allow-host",
        "*.corp.example",
        "--max-image-mb",
        "2.5",
        "--image-fetch-timeout-s",
        "4",
        "--image-max-redirects",
        "1",
    )
    limits = settings_from_args(args, Path("m")).fetch_limits()
    assert limits.allow_http is True
    assert limits.allow_hosts == ("images.internal", "*.corp.example")
    assert (limits.max_bytes, limits.timeout_s, limits.max_redirects) == (int(2.5 * 1024 * 1024), 4.0, 1)


def test_remote_images_are_off_unless_asked_for() -> None:
    from frugalserve.engine.cli import settings_from_args

    limits = settings_from_args(parse_engine_args(), Path("m")).fetch_limits()
    assert limits.allow_http is False and limits.max_bytes == 20 * 1024 * 1024


def test_a_bad_image_flag_exits_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    env = os.environ | {"PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "frugalserve", "engine", "--model", str(tmp_path), "--max-image-mb", "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--max-image-mb must be > 0" in done.stdout
