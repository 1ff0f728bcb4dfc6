"""Token-count outliers per key and pool ("who sent the 40k-token screenshot"), by median/MAD.

A request is an anomaly when its total tokens sit more than ``threshold`` robust standard deviations
(1.4826 x MAD) from the median of the last ``history`` requests of the same key and pool. Median and MAD
ignore the outliers they are looking for, unlike mean and standard deviation. The detector is owned by
the usage writer's task and sees records in the order they are written.
"""

from __future__ import annotations

import statistics
from collections import deque

MAD_TO_SIGMA = 1.4826


def robust_z(value: float, history: list[float]) -> float:
    med = statistics.median(history)
    mad = statistics.median(abs(x - med) for x in history)
    # A perfectly steady history has MAD 0: a one-token scale keeps the score finite and meaningful.
    return abs(value - med) / max(MAD_TO_SIGMA * mad, 1.0)


class AnomalyDetector:
    def __init__(self, threshold: float = 6.0, history: int = 200, min_history: int = 20) -> None:
        self.threshold = threshold
        self.min_history = min_history
        self._size = history
        self._recent: dict[tuple[str | None, str | None], deque[float]] = {}

    def check(self, key_id: str | None, pool: str | None, tokens: int) -> bool:
        """Is ``tokens`` an outlier for this key and pool? Then remember it as history."""
        recent = self._recent.get((key_id, pool))
        if recent is None:
            recent = self._recent[(key_id, pool)] = deque(maxlen=self._size)
        flagged = len(recent) >= self.min_history and robust_z(tokens, list(recent)) > self.threshold
        recent.append(float(tokens))
        return flagged
