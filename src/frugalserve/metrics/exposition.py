"""The Prometheus text format (0.0.4) of a registry, written cheaply: what GET /metrics serves.

Why our own writer: ``prometheus_client.generate_latest`` escapes and checks every label name and value
again on every sample line and formats each float through a general routine. With 20 pools and 200 keys
(some 3,700 series) that was about two thirds of a scrape's cost, on the event loop. The label sets of a
gateway hardly change between scrapes, so :class:`ExpositionWriter` renders each distinct label set once
and keeps the string (a bounded cache), and formats floats with ``repr`` and a check for Go's forms.

The output is byte for byte what ``generate_latest`` prints for the same families (its default escaping:
metric and label names outside the legacy character set have their other characters replaced by ``_``);
tests/metrics/test_exposition_writer.py holds the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector

# OpenMetrics types as the 0.0.4 text format names them; the suffix is added to the family's name.
_TYPES = {
    "counter": ("_total", "counter"),
    "info": ("_info", "gauge"),
    "stateset": ("", "gauge"),
    "gaugehistogram": ("", "histogram"),
    "unknown": ("", "untyped"),
}
# Samples that OpenMetrics puts in the family and the 0.0.4 format moves to a gauge family of their own.
_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")

_INF = math.inf


def go_float(value: float) -> str:
    """A sample value as Go's strconv prints it (what ``floatToGoString`` of the client library gives)."""
    if type(value) is not float:
        value = float(value)
    if value != value:
        return "NaN"
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    s = repr(value)
    if value >= 1e6:  # below 1e6, repr has at most 6 digits before its dot
        dot = s.find(".")
        if dot > 6:  # Go switches to an exponent sooner than Python
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class ExpositionWriter:
    """Writes a registry's families in the text format, remembering rendered names and label sets.

    ``max_label_sets`` bounds the cache: past it, the cache is emptied and fills again (label sets of a
    gateway are bounded by its pools, keys and replicas, so this only happens when they change a lot).
    """

    def __init__(self, max_label_sets: int = 50_000) -> None:
        self.max_label_sets = max_label_sets
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}
        self._names: dict[str, str] = {}

    def render(self, registry: Collector) -> bytes:
        return self.write(registry.collect())

    def write(self, families: Iterable[Metric]) -> bytes:
        out: list[str] = []
        append = out.append
        labels_cache = self._labels
        names = self._names
        for family in families:
            suffix, mtype = _TYPES.get(family.type, ("", family.type))
            mname = self._name(family.name + suffix)
            help_text = _escape_help(family.documentation)
            append(f"# HELP {mname} {help_text}\n# TYPE {mname} {mtype}\n")
            moved: dict[str, list[str]] = {}
            for sample in family.samples:
                name = sample.name
                target = out
                if name.endswith(_MOVED_SUFFIXES):
                    for moved_suffix in _MOVED_SUFFIXES:
                        if name == family.name + moved_suffix:
                            target = moved.setdefault(moved_suffix, [])
                            break
                sample_name = names.get(name) or self._name(name)
                if sample.labels:
                    key = tuple(sample.labels.items())
                    labelstr = labels_cache.get(key)
                    if labelstr is None:
                        labelstr = self._label_set(key)
                    line = f"{sample_name}{labelstr} {go_float(sample.value)}"
                else:
                    line = f"{sample_name} {go_float(sample.value)}"
                if sample.timestamp is not None:
                    line = f"{line} {int(float(sample.timestamp) * 1000):d}"
                target.append(line + "\n")
            for moved_suffix, lines in sorted(moved.items()):
                moved_name = self._name(family.name + moved_suffix)
                append(f"# HELP {moved_name} {help_text}\n# TYPE {moved_name} gauge\n")
                out.extend(lines)
        return "".join(out).encode("utf-8")

    def _name(self, name: str) -> str:
        rendered = self._names.get(name)
        if rendered is None:
            rendered = escape_metric_name(name)
            if len(self._names) >= self.max_label_sets:
                self._names.clear()
            self._names[name] = rendered
        return rendered

    def _label_set(self, key: tuple[tuple[str, str], ...]) -> str:
        rendered = "{" + ",".join(f'{escape_label_name(k)}="{_escape_value(v)}"' for k, v in sorted(key)) + "}"
        if len(self._labels) >= self.max_label_sets:
            self._labels.clear()
        self._labels[key] = rendered
        return rendered
