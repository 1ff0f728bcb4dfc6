"""Fixtures for the budget tests: transformers' own Qwen3-VL processor, built in-process.

No checkpoint: the tokenizer is written from the Qwen vocabulary, the image processor gets Qwen3-VL's
settings, and the chat template is ours. The video processor class needs torchvision to be
instantiated, which the engine extra does not install, so its module is loaded from source and its
functions are called directly.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests import procs

from frugalserve.budget.counting import TEMPLATE_PATH


@pytest.fixture(scope="session")
def qwen3_vl_processor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    from frugalserve import qwen_vocab

    class Processor(Qwen3VLProcessor):
        # The (absent) video processor is None; skip the class check for it only.
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    directory = tmp_path_factory.mktemp("qwen3-vl-tokenizer")
    qwen_vocab.write_tokenizer_json(directory)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=TEMPLATE_PATH.read_text(encoding="utf-8"),
    )


@pytest.fixture(scope="session")
def qwen3_vl_video_module() -> ModuleType:
    """transformers' ``video_processing_qwen3_vl`` loaded from its source (see the module docstring)."""
    pytest.importorskip("torch")
    qwen3_vl = pytest.importorskip("transformers.models.qwen3_vl")
    name = "transformers.models.qwen3_vl._frugalserve_video_source"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(qwen3_vl.__file__).parent / "video_processing_qwen3_vl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


FIXTURES = Path(__file__).parent / "fixtures"


def load_oracle() -> ModuleType:
    """The independent Qwen tokenizer (fixtures/qwen_oracle.py; a fixtures folder, not a package)."""
    name = "qwen_oracle_fixture"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "qwen_oracle.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def oracle() -> Any:
    """The oracle module, its tokenizer built."""
    pytest.importorskip("transformers")
    module = load_oracle()
    module.tokenizer()
    return module


@pytest.fixture(scope="session")
def hf(oracle: Any) -> Any:
    """transformers' tokenizer (the independent one) with the published template."""
    return oracle.tokenizer()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real gateway process with one counted Qwen3-VL pool, in front of the fake upstream."""
    tmp = tmp_path_factory.mktemp("gateway")
    with procs.fake_upstream(tmp) as up:
        config = f"pools:\n  - {{name: vl, model: qwen3-vl, backend: {{url: '{up}'}}}}\n"
        with procs.gateway(tmp, config) as (gw, _proc):
            yield gw
