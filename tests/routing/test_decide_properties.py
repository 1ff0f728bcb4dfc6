"""decide() over generated snapshots: whatever the pools' states, a route never goes to a pool that would
refuse the request, never below what fits, and the same inputs give the same route (the planner replays it)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from frugalserve.errors import APIError
from frugalserve.routing.config import RoutingConfig
from frugalserve.routing.policy import REASONS, decide, fit_grade
from frugalserve.routing.snapshot import PoolsSnapshot
from tests.routing.helpers import feats, pv

CFG = RoutingConfig()
STATES = ("ready", "starting", "waking", "sleeping", "stopped", "failed", "external")


@st.composite
def pool_views(draw: Any, name: str, tier: str) -> Any:
    state = draw(st.sampled_from(STATES))
    return pv(
        name,
        tier,
        state,
        context_tokens=draw(st.sampled_from((None, 4096, 32768))),
        max_new_tokens=draw(st.sampled_from((None, 512, 4096))),
        clamps=draw(st.booleans()),
        modalities=draw(st.sampled_from((("text",), ("text", "image"), ("text", "image", "video")))),
        in_flight=draw(st.integers(0, 12)),
        held=draw(st.integers(0, 6)),
        eta_s=0.0 if state in ("ready", "external") else draw(st.floats(0.1, 120)),
        usd_per_hour=draw(st.sampled_from((0.0, 1.0, 32.0))),
        min_warm_s=draw(st.sampled_from((0.0, 600.0))),
    )


features = st.builds(
    feats,
    prompt_tokens=st.integers(1, 40_000),
    images=st.integers(0, 3),
    videos=st.integers(0, 1),
    max_tokens=st.none() | st.integers(1, 8000),
    code_blocks=st.integers(0, 5),
    math=st.integers(0, 5),
    priority=st.sampled_from(("low", "normal", "high")),
)


@settings(max_examples=300, deadline=None)
@given(
    f=features,
    views=st.tuples(pool_views("s", "S"), pool_views("m", "M"), pool_views("m2", "M"), pool_views("l", "L")),
    session=st.none() | st.sampled_from(("S", "M", "L")),
)
def test_a_route_always_goes_to_a_pool_that_serves_the_request_best(f: Any, views: Any, session: Any) -> None:
    snapshot = PoolsSnapshot(0.0, views)
    try:
        route = decide(f, snapshot, CFG, session_tier=session)
    except APIError as exc:
        assert exc.status in (400, 503)
        if exc.status == 400:
            assert all(fit_grade(v, f, CFG) == 0 for v in views)
        return
    chosen = snapshot.get(route.pool)
    assert chosen is not None and route.reason in REASONS
    assert fit_grade(chosen, f, CFG) == max(fit_grade(v, f, CFG) for v in views)
    if f.priority == "low":
        assert route.action != "woke"
    assert decide(f, snapshot, CFG, session_tier=session) == route
