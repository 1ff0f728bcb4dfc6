"""The Prometheus config and rules of deploy/prometheus, checked by the real promtool.

`promtool test rules` runs the unit tests of deploy/prometheus/tests/: every alert firing and quiet
(thresholds and for-durations at their edges) and every recording rule's hand-computed value. The tests
here also make sure that no alert or recording rule is added without such a test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy import promql

RULE_TESTS = sorted((promql.PROMETHEUS / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}


def promtool(bin_dir: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "promtool"), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_prometheus_config_is_valid_with_its_rules_and_credential_file(prometheus_bin: Path, tmp_path: Path) -> None:
    # A copy, with the scrape token file the config names (a user creates it; it is never committed).
    config_dir = tmp_path / "prometheus"
    shutil.copytree(promql.PROMETHEUS, config_dir, ignore=shutil.ignore_patterns("secrets"))
    (config_dir / "secrets").mkdir()
    (config_dir / "secrets" / "frugalserve_metrics_token").write_text("a-token\n")
    out = promtool(prometheus_bin, "check", "config", config_dir / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 rule files found" in out.stdout + out.stderr


def test_prometheus_config_scrapes_frugalserve_with_a_bearer_credentials_file() -> None:
    config = yaml.safe_load((promql.PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "frugalserve"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "secrets/frugalserve_metrics_token"}
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["rules/recording.yml", "rules/alerts.yml"]


def test_rule_files_are_valid(prometheus_bin: Path) -> None:
    out = promtool(prometheus_bin, "check", "rules", promql.RECORDING, promql.ALERTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass(prometheus_bin: Path) -> None:
    assert RULE_TESTS, "deploy/prometheus/tests/ holds the promtool unit tests"
    out = promtool(prometheus_bin, "test", "rules", *RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(RULE_TESTS)


def _unit_tests() -> list[dict]:
    return [t for f in RULE_TESTS for t in yaml.safe_load(f.read_text())["tests"]]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in promql.rules(promql.ALERTS)}
    assert alerts - firing == set(), "alerts never seen firing in a unit test"
    assert alerts - quiet == set(), "alerts never seen quiet in a unit test"


def test_every_recording_rule_has_a_value_test() -> None:
    tested = {
        name
        for test in _unit_tests()
        for case in test.get("promql_expr_test", [])
        if case.get("exp_samples")
        for name in promql.metric_names(case["expr"])
    }
    assert promql.recorded_names() - tested == set()


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for rule in promql.rules(promql.ALERTS):
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, f"{rule['alert']}: say what to do"


def test_recording_rules_follow_level_metric_operation_names() -> None:
    for name in promql.recorded_names():
        level, metric, operation = name.split(":")
        assert level and operation and metric.startswith("frugalserve_"), name


def test_rules_use_only_catalogued_metrics_and_defined_recording_rules() -> None:
    known, recorded = promql.catalogue(), promql.recorded_names()
    for path in (promql.RECORDING, promql.ALERTS):
        for rule in promql.rules(path):
            assert promql.unknown_names(rule["expr"], known, recorded) == set(), rule.get("alert") or rule["record"]
