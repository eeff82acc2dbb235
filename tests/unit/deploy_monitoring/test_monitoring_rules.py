"""The Prometheus configuration and rules in deploy/prometheus: promtool accepts them, their unit
tests pass, a broken file is refused, and every series they name is one the code exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from openlfr.testing.prometheus import (
    PROMETHEUS_CONFIG,
    RULE_TESTS_DIR,
    RULES_DIR,
    check_expression,
    find_binary,
    known_series,
    rule_expressions,
    rule_files,
    rule_names,
    yaml_values,
)

PROMTOOL = find_binary("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: Debian's prometheus package (scripts/test-deps.sh)"
)
RULE_FILE = RULES_DIR / "openlfr.rules.yml"
RULE_TEST = RULE_TESTS_DIR / "openlfr.rules.test.yml"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([str(PROMTOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)


def test_the_deployed_files_are_there() -> None:
    assert rule_files() == [RULE_FILE]
    assert RULE_TEST.is_file() and PROMETHEUS_CONFIG.is_file()
    # One job per service (compose DNS name, HTTP port 8080) and Triton's metrics port; the
    # integration test scrapes the same job names on loopback.
    jobs = yaml_values(PROMETHEUS_CONFIG, "job_name")
    assert jobs == ["ingest", "detect", "embed", "match", "alert", "triton"]
    assert yaml_values(PROMETHEUS_CONFIG, "targets") == [f'["{job}:8080"]' for job in jobs[:-1]] + ['["triton:8002"]']


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", *rule_files())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    records, alerts = rule_names(RULE_FILE)
    assert f"SUCCESS: {len(records) + len(alerts)} rules found" in checked.stdout


@needs_promtool
def test_promtool_accepts_the_config_and_finds_the_rules() -> None:
    checked = promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_CONFIG.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", RULE_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("expr: up == 0", "expr: up == = 0", "parse error"),  # not PromQL
        ("for: 2m", "for: two minutes", "not a valid duration"),
        ("{{ $value | humanizePercentage }}", "{{ $value | humanizePercent }}", "function \"humanizepercent\" not defined"),
    ],
)
def test_promtool_refuses_a_broken_rule_file(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    text = RULE_FILE.read_text()
    assert old in text
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(text.replace(old, new, 1))
    checked = promtool("check", "rules", broken)
    assert checked.returncode != 0
    assert complaint in (checked.stdout + checked.stderr).lower()


@needs_promtool
def test_the_rules_unit_tests_fail_when_a_threshold_changes(tmp_path: Path) -> None:
    # The precision alert with a target of 0.2 no longer fires for a deployment at 0.3.
    (tmp_path / "rules").mkdir()
    text = RULE_FILE.read_text()
    assert "openlfr_deployment_alert_precision < 0.5" in text
    (tmp_path / "rules" / RULE_FILE.name).write_text(text.replace("openlfr_deployment_alert_precision < 0.5",
                                                                   "openlfr_deployment_alert_precision < 0.2"))
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TEST, tmp_path / "tests" / RULE_TEST.name)
    tested = promtool("test", "rules", tmp_path / "tests" / RULE_TEST.name)
    assert tested.returncode != 0
    assert "OpenLFRAlertPrecisionUnderTarget" in tested.stdout + tested.stderr


def test_every_rule_names_only_series_the_code_exports() -> None:
    known = known_series(rule_files())
    expressions = rule_expressions(RULE_FILE)
    records, alerts = rule_names(RULE_FILE)
    assert len(expressions) == len(records) + len(alerts)
    problems = [p for expr in expressions for p in check_expression(expr, known)]
    assert problems == []


def test_every_alert_has_a_unit_test_that_sees_it_fire_and_stay_quiet() -> None:
    _, alerts = rule_names(RULE_FILE)
    tested = yaml_values(RULE_TEST, "alertname")
    assert sorted(set(tested)) == sorted(alerts)
    text = RULE_TEST.read_text()
    for alert in alerts:
        # One evaluation that expects nothing (before `for:` or on quiet series), one that
        # expects the alert with its labels and annotations.
        assert tested.count(alert) >= 2, alert
    assert text.count("exp_alerts: []") >= len(alerts)
    assert text.count("exp_annotations:") >= len(alerts)


def test_the_unit_tests_feed_only_series_the_code_exports() -> None:
    known = known_series(rule_files())
    series = yaml_values(RULE_TEST, "series")
    assert series
    problems = [p for s in series for p in check_expression(s, known)]
    assert problems == []


def test_every_alert_has_a_severity_a_duration_and_a_runbook() -> None:
    _, alerts = rule_names(RULE_FILE)
    severities = yaml_values(RULE_FILE, "severity")
    assert len(severities) == len(alerts) and set(severities) <= {"warning", "critical"}
    assert len(yaml_values(RULE_FILE, "for")) == len(alerts)
    assert len(yaml_values(RULE_FILE, "summary")) == len(alerts)
    descriptions = yaml_values(RULE_FILE, "description")
    assert len(descriptions) == len(alerts) and all(len(d) > 150 for d in descriptions)
