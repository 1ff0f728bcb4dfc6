"""The planner runs the gateway's own decision code, imported, not copied (issue: 'no copies of the policies')."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import frugalserve.sim as sim_pkg
from frugalserve.lifecycle import autoscale, cron, policy, prewarm, scaler
from frugalserve.routing import policy as routing_policy
from frugalserve.routing import replicas, snapshot
from frugalserve.sim import core

# The live decision modules the simulator must take its decisions from.
LIVE: tuple[ModuleType, ...] = (policy, autoscale, prewarm, cron, scaler, routing_policy, replicas, snapshot)


def test_the_simulator_calls_the_live_functions_themselves() -> None:
    assert core.idle_decision is policy.idle_decision
    assert core.PoolScaler is scaler.PoolScaler  # the autoscaler's own tick(), which calls desired_replicas
    assert scaler.desired_replicas is autoscale.desired_replicas
    assert core.learn_profile is prewarm.learn_profile
    assert core.next_prewarm is cron.next_prewarm
    assert core.choose_replica is replicas.choose_replica
    assert core.decide is routing_policy.decide
    assert core.pool_view is snapshot.pool_view


def _defined_names(module: ModuleType) -> set[str]:
    """The module's own functions and classes (its policies and their types), not their methods."""
    tree = ast.parse(inspect.getsource(module))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def test_no_module_of_the_simulator_defines_a_live_policy_of_the_same_name() -> None:
    live = set().union(*(_defined_names(m) for m in LIVE))
    # methods the simulated pool shares with ManagedPool on purpose: the live PoolScaler calls them
    interface = {"add", "remove", "counted", "view", "waiting", "__init__", "wall", "monotonic", "sleep", "submit"}
    for path in Path(sim_pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        copies = (names & live) - interface
        assert not copies, f"{path.name} defines {sorted(copies)}, which the live code already has"
