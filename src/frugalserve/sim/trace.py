"""Traffic to replay: a trace file (CSV or JSONL), a synthetic generator, or the gateway's usage records.

A trace is held column by column (:class:`Trace`): a month at 230,000 requests a day is millions of rows,
and a Python object per row would cost more memory and time than the simulation itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PRIORITIES = ("low", "normal", "high")  # as x-frugalserve-priority (frugalserve.routing.features.Priority)


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests in arrival order. Row i is (t[i], models[model[i]], prompt_tokens[i], ...)."""

    t: npt.NDArray[np.float64]  # arrival, epoch seconds, non-decreasing
    model: npt.NDArray[np.int32]  # index into models
    prompt_tokens: npt.NDArray[np.int64]  # text tokens of the prompt
    image_tokens: npt.NDArray[np.int64]  # visual tokens of its images (Qwen3-VL's rule), or as recorded
    output_tokens: npt.NDArray[np.int64]
    priority: npt.NDArray[np.int8]  # index into PRIORITIES
    key: npt.NDArray[np.int32]  # index into keys (0: "" when the trace names none)
    models: tuple[str, ...]
    keys: tuple[str, ...] = ("",)
    source: str = ""  # one line for the report: the file, the generator and its seed, or the database window

    def __len__(self) -> int:
        return len(self.t)

    @property
    def start(self) -> float:
        return float(self.t[0]) if len(self.t) else 0.0

    @property
    def end(self) -> float:
        return float(self.t[-1]) if len(self.t) else 0.0
