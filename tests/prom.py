"""A Prometheus text page as the tests read it: parsed by prometheus_client's own parser, not ours."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# (sample name, its labels) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, prefix: str = "") -> Samples:
    """Every sample of the page whose name starts with ``prefix``."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def value(page: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels (None: absent)."""
    return page.get((name, frozenset(labels.items())))


def total(page: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry at least these labels."""
    want = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and want <= ls)
