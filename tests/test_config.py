from __future__ import annotations

from pathlib import Path

import pytest

from frugalserve import config as cfg

ROOT = Path(__file__).parent.parent


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
            "pools[1]: name or model 'm' is already used by pool 'a'",
        ),
        ("gateway: {log_level: loud}", "gateway.log_level: must be one of"),
        ("pools: {a: 1}", "pools: must be a list"),
        ("[1, 2]", "must be a mapping"),
        ("gateway: {port: 80", "not valid YAML"),
    ],
)
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_text(text)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read config"):
        cfg.load_file(tmp_path / "absent.yaml")
