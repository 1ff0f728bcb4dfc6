"""Policies to compare: the config file changed by ``--policy KEY=VALUE`` and ``--sweep KEY=V1,V2,...``.

A key is a path into the config file as it is written, with pools named instead of numbered
(``pools.small.lifecycle.idle_stop_s``), or into a pool's performance model (``pools.small.perf.start_s``,
see :mod:`frugalserve.sim.perf`). Values are YAML (``600``, ``null``, ``auto``). Every changed config is
parsed and validated exactly as ``frugalserve up`` would, so a bad key or value fails with the same
message naming it. Several ``--sweep`` options give every combination; each policy is named by its
settings.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from frugalserve.config import Config, ConfigError, parse

PERF = "perf"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # as the user wrote it: pools.small.lifecycle.idle_stop_s
    value: Any  # parsed as YAML

    def __str__(self) -> str:
        return f"{self.key}={_show(self.value)}"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    settings: tuple[Setting, ...]
    config: Config
    perf_overrides: Mapping[str, Mapping[str, Any]]  # pool -> perf field -> value


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _yaml_value(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(key, f"{text!r} is not a YAML value") from None


def parse_setting(text: str) -> Setting:
    """``KEY=VALUE`` from ``--policy``."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError("--policy", f"expected KEY=VALUE, got {text!r}")
    return Setting(key.strip(), _yaml_value(value, key.strip()))


def parse_sweep(text: str) -> tuple[Setting, ...]:
    """``KEY=V1,V2,...`` from ``--sweep``: one setting per value (a value may not contain a comma)."""
    key, eq, values = text.partition("=")
    key = key.strip()
    if not eq or not key or not values.strip():
        raise ConfigError("--sweep", f"expected KEY=V1,V2,..., got {text!r}")
    return tuple(Setting(key, _yaml_value(v, key)) for v in values.split(","))


def _pool_entry(data: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    pools = data.get("pools") or []
    for entry in pools:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    known = ", ".join(str(p.get("name")) for p in pools if isinstance(p, dict)) or "none"
    raise ConfigError(key, f"no pool named {name!r} in the config (pools: {known})")


def _apply(data: dict[str, Any], setting: Setting, perf: dict[str, dict[str, Any]]) -> None:
    parts = setting.key.split(".")
    node: dict[str, Any] = data
    path = parts
    if parts[0] == "pools":
        if len(parts) < 3:
            raise ConfigError(setting.key, "name a pool and a key in it: pools.NAME.KEY")
        if parts[2] == PERF:
            _pool_entry(data, parts[1], setting.key)
            if len(parts) != 4:
                raise ConfigError(setting.key, "a performance model key is pools.NAME.perf.FIELD")
            perf.setdefault(parts[1], {})[parts[3]] = setting.value
            return
        node = _pool_entry(data, parts[1], setting.key)
        path = parts[2:]
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(setting.key, f"{'.'.join(path[: i + 1])} is not a mapping in the config")
        node = child
    node[path[-1]] = setting.value


def policy_name(settings: Sequence[Setting], varying: Sequence[str]) -> str:
    """Named by its settings; the swept keys by their last part when that is unambiguous."""
    if not settings:
        return "as configured"
    shown = [s for s in settings if s.key in varying] or list(settings)
    lasts = [s.key.rsplit(".", 1)[-1] for s in shown]
    short = len(set(lasts)) == len(lasts)
    return ", ".join(f"{last if short else s.key}={_show(s.value)}" for last, s in zip(lasts, shown, strict=True))


def build(raw: Mapping[str, Any], fixed: Sequence[Setting], sweeps: Sequence[Sequence[Setting]]) -> list[Policy]:
    """One policy per combination of the swept values, each with the fixed settings applied first."""
    varying = [sweep[0].key for sweep in sweeps if sweep]
    out = []
    for combo in itertools.product(*sweeps) if sweeps else [()]:
        settings = (*fixed, *combo)
        data = copy.deepcopy(dict(raw))
        perf: dict[str, dict[str, Any]] = {}
        for s in settings:
            _apply(data, s, perf)
        config = parse(Config, data)
        out.append(Policy(policy_name(settings, varying), tuple(settings), config, perf))
    return out
