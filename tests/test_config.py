from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import pytest
import yaml

from frugalserve import config as cfg

ROOT = Path(__file__).parent.parent
URL_POOL = "{name: a, model: m, backend: {url: 'http://x:1'}}"


def test_example_config_loads() -> None:
    config = cfg.load_file(ROOT / "config.example.yaml")
    assert config.pools, "the example declares pools"
    assert config.gateway.port == 8080


def test_builtin_default_config_loads_without_file_or_env() -> None:
    config = cfg.load(None, environ={})
    assert config.source == "<built-in demo config>"
    assert config.pools[0].model


def test_env_variable_chooses_config(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("gateway: {port: 9999}\n")
    assert cfg.load(None, environ={cfg.ENV_CONFIG: str(f)}).gateway.port == 9999


def test_explicit_path_beats_env(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("gateway: {port: 1111}\n")
    b.write_text("gateway: {port: 2222}\n")
    assert cfg.load(str(a), environ={cfg.ENV_CONFIG: str(b)}).gateway.port == 1111


def test_config_is_frozen() -> None:
    config = cfg.load_text("gateway: {port: 1234}")
    with pytest.raises(AttributeError):
        config.gateway.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1'}}\n  - {name: b, model: n, backend: {url: nope}}",
            "pools[1].backend.url: not a URL",
        ),
        ("gateway: {port: 'eighty'}", "gateway.port: must be an integer"),
        ("gateway: {port: 70000}", "gateway.port: must be between"),
        ("gateway: {prot: 80}", "gateway.prot: unknown key"),
        ("pools:\n  - {name: a, backend: {url: 'http://x:1'}}", "pools[0].model: required"),
        ("pools:\n  - {name: a, model: m, backend: {}}", "pools[0].backend.url: required"),
        (
            "pools:\n  - {name: a, model: m, aliases: x, backend: {url: 'http://x:1'}}",
            "pools[0].aliases: must be a list",
        ),
        (
            "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1'}}\n  - {name: b, model: m, backend: {url: 'http://x:1'}}",
            "pools[1].model: 'm' is already used by pools[0].model",
        ),
        (
            "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1'}}\n  - {name: b, model: n, aliases: [o, a], backend: {url: 'http://x:1'}}",
            "pools[1].aliases[1]: 'a' is already used by pools[0].name",
        ),
        (
            "pools:\n  - {name: x, model: m, backend: {url: 'http://x:1'}}\n  - {name: y, model: n, backend: {url: 'http://x:1'}}\n"
            "  - {name: x, model: o, backend: {url: 'http://x:1'}}",
            "pools[2].name: duplicate pool name 'x' (also pools[0])",
        ),
        ("pools: []", "pools: must list at least one pool"),
        (
            "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1'}, lifecycle: {idle_sleep_s: 60}}",
            "pools[0].lifecycle: only for a managed backend (backend.command)",
        ),
        (
            "pools:\n  - {name: a, model: m, backend: {url: 'http://x:1', startup_timeout_s: 5}}",
            "pools[0].backend.startup_timeout_s: only for a managed backend (command)",
        ),
        ("gateway: {max_header_kb: 0}", "gateway.max_header_kb: must be > 0"),
        ("gateway: {header_timeout_s: -1}", "gateway.header_timeout_s: must be > 0"),
        ("gateway: {body_timeout_s: 0}", "gateway.body_timeout_s: must be > 0"),
        ("gateway: {max_connections: 0}", "gateway.max_connections: must be >= 1"),
        ("gateway: {access_log: 'yes'}", "gateway.access_log: must be true or false"),
        ("gateway: {log_level: loud}", "gateway.log_level: must be one of"),
        ("pools: {a: 1}", "pools: must be a list"),
        ("[1, 2]", "must be a mapping"),
        ("gateway: {port: 80", "not valid YAML: line 1, column 19"),
    ],
)
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_text(text)
    assert message in str(info.value)


def test_error_from_a_file_names_the_path_once_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text(f"pools:\n  - {URL_POOL}\n  - {{name: b, model: n, backend: {{url: nope}}}}\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_file(f)
    text = str(info.value)
    assert text.startswith("pools[1].backend.url: not a URL: 'nope'")
    assert text.count("pools[1].backend.url") == 1
    assert text.endswith(f"(in {f})")
    assert info.value.path == "pools[1].backend.url"


def test_yaml_error_from_a_file_names_the_file_once(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("gateway: {port: 80\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_file(f)
    assert str(info.value).count(str(f)) == 1
    assert "not valid YAML: line 2" in str(info.value)


def test_a_config_without_pools_parses_for_the_database_commands() -> None:
    assert cfg.load_text("gateway: {database: 'sqlite:///x.db'}").pools == ()


def test_lifecycle_and_managed_keys_are_accepted_on_a_managed_pool() -> None:
    config = cfg.load_text(
        "pools:\n  - {name: a, model: m, backend: {command: 'serve --port {port}', startup_timeout_s: 5},"
        " lifecycle: {idle_sleep_s: 60}}"
    )
    assert config.pools[0].lifecycle.idle_sleep_s == 60
    assert config.pools[0].backend.startup_timeout_s == 5


def test_config_error_lives_in_a_leaf_module_that_sections_import_without_config() -> None:
    # A fresh interpreter: importing a section must not need frugalserve.config (no import cycle), and the
    # class re-exported by frugalserve.config must be the very same.
    code = (
        "import sys\n"
        "import frugalserve.config_errors as e\n"
        "assert not [m for m in sys.modules if m.startswith('frugalserve.') and m != 'frugalserve.config_errors'], "
        "sorted(sys.modules)\n"
        "import frugalserve.lifecycle.config, frugalserve.accounting.config\n"
        "assert 'frugalserve.config' not in sys.modules\n"
        "import frugalserve.config as c, frugalserve.budget.limits as l\n"
        "assert c.ConfigError is e.ConfigError is l.ConfigError\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_section_raises_the_one_config_error_class() -> None:
    from frugalserve.config_errors import ConfigError

    with pytest.raises(ConfigError, match=r"pools\[0\]\.lifecycle\.max_queue: must be >= 1"):
        cfg.load_text("pools:\n  - {name: a, model: m, backend: {command: 'x {port}'}, lifecycle: {max_queue: 0}}")


# ---------------------------------------------------------------------------------------------------------
# config.example.yaml documents every key


def _dataclass_in(tp: Any) -> Any:
    """The config dataclass a field holds (directly, optionally, or as a list of them), else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        found = [_dataclass_in(a) for a in typing.get_args(tp)]
        return next((f for f in found if f is not None), None)
    return None


def _declared_keys(cls: Any, prefix: str = "") -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}{f.name}"
        yield key
        tp = hints[f.name]
        if typing.get_origin(tp) is tuple and _dataclass_in(typing.get_args(tp)[0]) is not None:
            yield from _declared_keys(_dataclass_in(typing.get_args(tp)[0]), f"{key}[].")
        elif (inner := _dataclass_in(tp)) is not None:
            yield from _declared_keys(inner, f"{key}.")


def _keys_in(data: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield f"{prefix}{k}"
            yield from _keys_in(v, f"{prefix}{k}.")
    elif isinstance(data, list):
        for item in data:
            yield from _keys_in(item, prefix[:-1] + "[].")


def test_declared_keys_walk_finds_nested_sections() -> None:
    keys = set(_declared_keys(cfg.Config))
    assert {"gateway.port", "pools[].backend.url", "pools[].limits.image.max_tokens", "devices[].name"} <= keys
    assert "source" not in keys


def test_example_config_documents_every_key() -> None:
    text = (ROOT / "config.example.yaml").read_text()
    present = set(_keys_in(yaml.safe_load(text)))
    missing = sorted(set(_declared_keys(cfg.Config)) - present)
    assert not missing, f"config.example.yaml lacks {missing}"
    undeclared = sorted(
        k for k in present - set(_declared_keys(cfg.Config)) if ".env." not in k and ".headers." not in k
    )
    assert not undeclared, undeclared


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read config"):
        cfg.load_file(tmp_path / "absent.yaml")
