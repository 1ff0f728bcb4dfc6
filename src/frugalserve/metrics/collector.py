"""The shape of a collector that computes its series at scrape time from state someone else owns."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class ScrapeCollector(Collector):
    """Subclasses build their families in :meth:`families`; ``collecting`` False asks for the empty families
    only (what the registry's ``describe`` needs to check names once, at registration)."""

    def describe(self) -> Iterable[Metric]:
        return list(self.families(collecting=False))

    def collect(self) -> Iterator[Metric]:
        return self.families(collecting=True)

    @abstractmethod
    def families(self, collecting: bool) -> Iterator[Metric]:
        """The collector's families, filled in when ``collecting``."""
