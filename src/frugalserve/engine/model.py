"""The model, its processor, and batched generation. Used from ONE thread (the scheduler's executor).

``ModelRunner`` owns the torch objects. Its states::

    awake      weights on the target device; generate_batch() runs
    sleeping1  level 1: on CUDA the weights are moved to CPU memory; on CPU they already live there, so
               only caches are dropped (vision cache, allocator caches) and the memory stays resident
    sleeping2  level 2: the weights are dropped; wake reloads them from the checkpoint on disk

Preprocessing (``prepare``) only reads the processor, which never changes after load, so request
handlers may call it from other threads.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalserve.budget.counting import template_messages
from frugalserve.engine.demo_model import DEMO_MARKER
from frugalserve.engine.detokenize import IncrementalDetokenizer, StopMatcher
from frugalserve.engine.vision_cache import VisionCache
from frugalserve.errors import ContextLengthExceeded, InvalidRequest

DTYPES = ("auto", "float32", "bfloat16", "float16")
VISUAL_TOKENS = ("<|image_pad|>", "<|video_pad|>")


@dataclass
class Prepared:
    """One request's model input: its exact prompt tokens and its image tensors."""

    input_ids: list[int]
    pixel_values: Any = None
    image_grid_thw: Any = None
    mm_token_type_ids: list[int] | None = None


@dataclass
class Row:
    """One request inside a batch, as the model thread sees it."""

    prepared: Prepared
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    # Called from the model thread: on_token(text_delta, n_generated) once per step (the delta may be
    # empty), then on_finish(reason, n_generated) once.
    on_token: Callable[[str, int], None]
    on_finish: Callable[[str, int], None]
    cancelled: Callable[[], bool] = lambda: False
    generated: list[int] = field(default_factory=list)
    done: bool = False


def load_processor(path: str | Path) -> Any:
    """The checkpoint's own processor: ``AutoProcessor``, or for Qwen3-VL without torchvision the same
    processor minus its video half (transformers' video processor needs torchvision; images do not)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen3VLProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError) as exc:
        if "torchvision" not in str(exc).lower():
            raise

    class Qwen3VLImageProcessorOnly(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, name: str, arg: Any) -> Any:
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    tokenizer = AutoTokenizer.from_pretrained(path)
    return Qwen3VLImageProcessorOnly(
        image_processor=AutoImageProcessor.from_pretrained(path),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tokenizer.chat_template,
    )


def _malloc_trim() -> None:
    # glibc keeps freed heap pages; trimming is what makes a dropped model show up as lower RSS.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ModelRunner:
    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        vision_cache_mb: float = 256,
        on_cache_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = Path(path)
        config = json.loads((self.path / "config.json").read_text())
        self.is_demo = bool(config.get(DEMO_MARKER))
        self.is_vision = "vision_config" in config
        text = config.get("text_config", config)
        self.max_context = int(text.get("max_position_embeddings", 32768))
        self.vocab_size = int(text.get("vocab_size", 0))
        self.device = device
        self.dtype = dtype
        self.state = "awake"
        self.vision_cache = VisionCache(vision_cache_mb, on_cache_lookup)
        self.processor, self.tokenizer = self._load_processor()
        self.model: Any = None
        self._load_weights()
        eos = [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.eos_ids = {i for i in eos if isinstance(i, int) and i >= 0}
        # Ids that stand for pixels: in a prompt without its images they would crash the vision tower.
        visual = [self.tokenizer.convert_tokens_to_ids(t) for t in VISUAL_TOKENS] if self.is_vision else []
        self.visual_ids = {i for i in visual if isinstance(i, int) and i >= 0}
        self.vocab_size = self.vocab_size or len(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)

    # -- loading ---------------------------------------------------------------------------------------
    def _load_processor(self) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        if not self.is_vision:
            tok = AutoTokenizer.from_pretrained(self.path)
            return tok, tok
        processor = load_processor(self.path)
        return processor, processor.tokenizer

    def _load_weights(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        cls = AutoModelForImageTextToText if self.is_vision else AutoModelForCausalLM
        dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        self.model = cls.from_pretrained(self.path, dtype=dtype).to(self.device).eval()  # type: ignore[arg-type]
        if self.is_vision:
            inner = self.model.model
            inner.get_image_features = self.vision_cache.wrap(inner.get_image_features)

    # -- preprocessing (any thread) -------------------------------------------------------------------------
    def prepare(
        self, messages: list[dict[str, Any]], images: list[Any], tools: list[dict[str, Any]] | None = None
    ) -> Prepared:
        try:
            # the messages as vLLM hands them to a template, as the gateway counts them (budget/counting.py)
            text = self.tokenizer.apply_chat_template(
                template_messages(messages), tools=tools, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # a template error is the request's fault (e.g. a role it refuses)
            raise InvalidRequest(f"the chat template refused the messages: {exc}", param="messages") from None
        if not self.is_vision:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prepared = Prepared(input_ids=list(ids))
        else:
            if self._visual_text(text) != len(images):
                raise InvalidRequest(
                    "message text must not contain the image or video placeholder tokens", param="messages"
                )
            out = self.processor(text=[text], images=images or None, return_tensors="pt")
            prepared = Prepared(
                input_ids=out["input_ids"][0].tolist(),
                pixel_values=out.get("pixel_values"),
                image_grid_thw=out.get("image_grid_thw"),
                mm_token_type_ids=out["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in out else None,
            )
        return self._within_context(prepared, "messages")

    def prepare_prompt(self, prompt: str | list[int]) -> Prepared:
        """A text completion's prompt, as given: no chat template, no images."""
        ids: list[int] = (
            list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) if isinstance(prompt, str) else prompt
        )
        if self.visual_ids.intersection(ids):
            raise InvalidRequest("the prompt must not contain image or video placeholder tokens", param="prompt")
        return self._within_context(Prepared(input_ids=list(ids)), "prompt")

    def _visual_text(self, text: str) -> int:
        # Placeholders the template wrote for image parts, plus any a client typed into its text.
        return sum(text.count(t) for t in VISUAL_TOKENS)

    def _within_context(self, prepared: Prepared, param: str) -> Prepared:
        if len(prepared.input_ids) >= self.max_context:
            raise ContextLengthExceeded(
                f"the prompt is {len(prepared.input_ids)} tokens; this model's context is {self.max_context}",
                param=param,
            )
        return prepared

    # -- sleep mode (model thread) ----------------------------------------------------------------------
    def sleep(self, level: int) -> None:
        import torch

        self.vision_cache.clear()
        if level == 1:
            if self.device != "cpu":
                self.model.to("cpu")
        else:
            self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _malloc_trim()
        self.state = f"sleeping{level}"

    def wake(self) -> float:
        started = time.perf_counter()
        if self.state == "sleeping2":
            self._load_weights()
        elif self.state == "sleeping1" and self.device != "cpu":
            self.model.to(self.device)
        self.state = "awake"
        return time.perf_counter() - started

    # -- generation (model thread) -----------------------------------------------------------------------
    def generate_batch(self, rows: list[Row]) -> None:
        """Generate for all rows at once (left-padded); each row stops on its own EOS, stop or limit."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        width = max(len(r.prepared.input_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        kwargs: dict[str, Any] = {}
        for i, r in enumerate(rows):
            n = len(r.prepared.input_ids)
            ids[i, width - n :] = torch.tensor(r.prepared.input_ids)
            mask[i, width - n :] = 1
        if self.is_vision:
            types = torch.zeros((len(rows), width), dtype=torch.int)
            for i, r in enumerate(rows):
                if r.prepared.mm_token_type_ids is not None:
                    types[i, width - len(r.prepared.mm_token_type_ids) :] = torch.tensor(r.prepared.mm_token_type_ids)
            kwargs["mm_token_type_ids"] = types.to(self.device)
            with_images = [r.prepared for r in rows if r.prepared.pixel_values is not None]
            if with_images:
                kwargs["pixel_values"] = torch.cat([p.pixel_values for p in with_images]).to(self.device)
                kwargs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in with_images]).to(self.device)
        config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in rows),
            do_sample=False,  # RowSampler picks each row's token; greedy then takes it
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList(self.logits_processors(rows)),
                stopping_criteria=StoppingCriteriaList([RowEmitter(rows, self.decode, self.eos_ids)]),
                **kwargs,
            )
        for r in rows:  # rows the model stopped without our say (max_new_tokens reached together)
            if not r.done:
                r.done = True
                r.on_finish("length", len(r.generated))

    def logits_processors(self, rows: list[Row]) -> list[Any]:
        return [RowSampler(rows)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


class RowSampler:
    """Per-row temperature / top_p / seed, which ``generate`` only offers per batch."""

    def __init__(self, rows: list[Row]) -> None:
        import torch

        self.rows = rows
        self.generators = []
        for r in rows:
            g = torch.Generator()
            g.manual_seed(r.seed if r.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
            self.generators.append(g)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for i, r in enumerate(self.rows):
            if r.done or r.temperature == 0.0:
                continue  # greedy: argmax of the unchanged scores
            probs = torch.softmax(scores[i].float().cpu() / r.temperature, dim=-1)
            if r.top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                keep = torch.cumsum(sorted_p, 0) - sorted_p < r.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            token = int(torch.multinomial(probs, 1, generator=self.generators[i]))
            scores[i].fill_(float("-inf"))
            scores[i, token] = 0.0
        return scores


class RowEmitter:
    """Called by ``generate`` after every step: hands each row its new text and says which rows are done.

    Each row's text comes from an :class:`IncrementalDetokenizer` and passes a :class:`StopMatcher`, so a
    step costs the same at the 2,000th token as at the 10th.
    """

    def __init__(self, rows: list[Row], decode: Callable[[Sequence[int]], str], eos_ids: set[int]) -> None:
        self.rows, self.eos_ids = rows, eos_ids
        self.detoks = [IncrementalDetokenizer(decode) for _ in rows]
        self.stops = [StopMatcher(r.stop) for r in rows]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1].tolist()
        for i, (r, token) in enumerate(zip(self.rows, last, strict=True)):
            if not r.done:
                self._step(i, r, token)
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)

    def _step(self, i: int, r: Row, token: int) -> None:
        if r.cancelled():
            return self._finish(r, "abort")
        r.generated.append(token)
        detok, stops = self.detoks[i], self.stops[i]
        ended = token in self.eos_ids or len(r.generated) >= r.max_tokens
        text = detok.flush() if token in self.eos_ids else detok.push(token)
        if ended and token not in self.eos_ids:
            text += detok.flush()
        out, hit = stops.feed(text)
        if hit:
            r.on_token(out, len(r.generated))
            return self._finish(r, "stop")
        if ended:
            r.on_token(out + stops.flush(), len(r.generated))
            return self._finish(r, "stop" if token in self.eos_ids else "length")
        # Called once per step, even with no new text, so the receiver sees every token (TTFT, counts).
        r.on_token(out, len(r.generated))
        return None

    @staticmethod
    def _finish(r: Row, reason: str) -> None:
        r.done = True
        r.on_finish(reason, len(r.generated))
