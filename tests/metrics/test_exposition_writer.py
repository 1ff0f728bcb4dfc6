"""Our text-format writer against the client library's: byte for byte the same exposition.

The oracle is ``prometheus_client.generate_latest`` on the same registry: the gateway's own (a Gateway
with a few pools on a manual clock and its series filled in), registries with awkward label values
(quotes, backslashes, newlines, unicode, empty), awkward floats (NaN, infinities, negative, huge, tiny),
histograms, info, untyped families, names outside the legacy character set, and random label values and
floats (hypothesis). The writer's label-set cache is exercised by rendering twice and after values change.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    StateSetMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from frugalserve import config as cfg
from frugalserve.api.app import Gateway
from frugalserve.clock import ManualClock
from frugalserve.metrics.exposition import ExpositionWriter, go_float

AWKWARD_VALUES = ['say "hi"', "back\\slash", "two\nlines", "naïve café 東京 🙂", "", "\\n literal", '\\"', "a=b,c}"]
AWKWARD_FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, 1e-300, 5e-324, -2.5e-7, 123456.0, 999999.0, 999999.99, 1e6, 1234567.0,
    -1234567.0, 12345678.9, 1e16, 1.7976931348623157e308, -1e300, math.inf, -math.inf, math.nan, 42,
]  # fmt: skip


def assert_same(registry: Collector, writer: ExpositionWriter | None = None) -> bytes:
    ours = (writer or ExpositionWriter()).render(registry)
    theirs = generate_latest(registry)
    assert ours.decode() == theirs.decode()
    return ours


class _Families:
    """A collector yielding fixed families: types the gateway's own instruments do not make."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _gateway() -> Gateway:
    config = cfg.load_text(
        "auth: {enabled: true}\npools:\n"
        "  - {name: small, model: m-s, tier: S, backend: {urls: ['http://127.0.0.1:1/v1', 'http://127.0.0.1:2/v1']},"
        " gpu: {usd_per_hour: 1, type: L4}}\n"
        "  - {name: big, model: m-l, tier: L, backend: {url: 'http://127.0.0.1:3/v1'}, gpu: {usd_per_hour: 4}}\n"
    )
    g = Gateway(config, clock=ManualClock())
    m = g.metrics
    for pool, tier in (("small", "S"), ("big", "L")):
        for status in ("200", "429", "503"):
            m.requests.labels(pool, tier, "chat", status).inc(3)
        m.latency.labels(pool, tier, "chat").observe(0.7)
        m.latency.labels(pool, tier, "chat").observe(700)
        m.ttft.labels(pool, tier, "chat").observe(0.01)
        m.itl.labels(pool, tier).observe(0.02)
        m.generation_tokens.labels(pool, tier).inc(12345678)
        m.prompt_tokens.labels(pool, tier, "image").inc(0.1)
        m.in_flight.labels(pool).set(-1)
        m.upstream_errors.labels(pool, "connect").inc()
    return g


def test_gateway_exposition_is_byte_identical_to_the_client_library() -> None:
    g = _gateway()
    writer = ExpositionWriter()
    text = assert_same(g.metrics.registry, writer)
    assert b'frugalserve_requests_total{endpoint="chat",pool="small",status="429",tier="S"} 3.0\n' in text
    assert b"frugalserve_generation_tokens_total" in text and b"1.2345678e+07" in text
    # the second render comes from the label-set cache, after values moved
    g.metrics.requests.labels("small", "S", "chat", "200").inc()
    g.metrics.latency.labels("big", "L", "chat").observe(math.inf)
    assert_same(g.metrics.registry, writer)


def test_gateway_render_serves_the_writer_output() -> None:
    g = _gateway()
    assert g.metrics.render() == generate_latest(g.metrics.registry)


@pytest.mark.parametrize("value", AWKWARD_VALUES)
def test_awkward_label_values_are_escaped_like_the_client_library(value: str) -> None:
    r = CollectorRegistry()
    Gauge("g_ratio", 'help with "quotes", \\ and\nnewline', ["a", "b"], registry=r).labels(value, "x").set(1)
    Counter("c", "counter", ["zeta", "alpha"], registry=r).labels(value, value).inc()
    assert_same(r)


def test_awkward_floats_print_like_go() -> None:
    r = CollectorRegistry()
    g = Gauge("g", "gauge", ["i"], registry=r)
    for i, value in enumerate(AWKWARD_FLOATS):
        g.labels(str(i)).set(value)
        assert go_float(value) == go_float(float(value))
    text = assert_same(r).decode()
    expected_lines = ('"0"} 0.0', '"11"} 1e+06', '"12"} 1.234567e+06', '"13"} -1234567.0', '"18"} +Inf', '"19"} -Inf')
    for expected in (*expected_lines, '"20"} NaN', '"21"} 42.0'):
        assert expected + "\n" in text


def test_histograms_info_stateset_and_untyped_match() -> None:
    r = CollectorRegistry()
    h = Histogram("h_seconds", "latency", ["pool"], buckets=(0.001, 1, 2.5, 1e7, math.inf), registry=r)
    h.labels("p").observe(3)
    h.labels("p").observe(math.inf)
    h.labels('q"').observe(-1)
    Histogram("plain_seconds", "no labels", registry=r).observe(0.2)
    Info("build", "build info", registry=r).info({"version": "1.2", "commit": 'a"b'})
    Gauge("bare", "no labels", registry=r).set(2.5)
    gh = GaugeHistogramMetricFamily("queue_gh", "gauge histogram", labels=["pool"])
    gh.add_metric(["p"], [("1.0", 2.0), ("+Inf", 5.0)], gsum_value=7.5)
    ss = StateSetMetricFamily("state", "a state set", labels=["pool"])
    ss.add_metric(["p"], {"on": True, "off": False})
    un = UnknownMetricFamily("odd", "unknown type", labels=["x"])
    un.add_metric(["y"], 1.5, timestamp=1_700_000_000.25)
    ct = CounterMetricFamily("with_created", "counter with created", labels=["x"], created=1_700_000_000.0)
    ct.add_metric(["y"], 1.0, created=1_700_000_000.5)
    weird = GaugeMetricFamily("dotted.name", "a name outside the legacy set", labels=["x"])
    weird.add_metric(["y"], 2.0)
    r.register(_Families([gh, ss, un, ct, weird]))
    text = assert_same(r).decode()
    assert "# TYPE queue_gh histogram\n" in text and "# TYPE queue_gh_gsum gauge\n" in text
    assert 'odd{x="y"} 1.5 1700000000250\n' in text


def test_label_set_cache_stays_within_its_bound() -> None:
    r = CollectorRegistry()
    g = Gauge("g", "gauge", ["i"], registry=r)
    writer = ExpositionWriter(max_label_sets=10)
    for i in range(25):
        g.labels(str(i)).set(i)
        assert_same(r, writer)
        assert len(writer._labels) <= 10


def test_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; .ci/run installs it")
    text = ExpositionWriter().render(_gateway().metrics.registry)
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1, max_size=6),
    number=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20),
)
def test_random_label_values_and_floats_match(values: list[tuple[str, str]], number: float) -> None:
    r = CollectorRegistry()
    g = Gauge("g", "gauge", ["a", "b"], registry=r)
    for a, b in values:
        g.labels(a, b).set(number)
    fam = GaugeMetricFamily("direct", "a collector's own value, not through a Gauge", labels=["v"])
    fam.add_metric([values[0][0]], number)
    r.register(_Families([fam]))
    assert_same(r)


async def test_render_off_loop_writes_the_same_text_in_a_thread() -> None:
    g = _gateway()
    assert await g.metrics.render_off_loop() == generate_latest(g.metrics.registry)
