"""The Grafana dashboard and its provisioning in deploy/grafana: every panel queries only series
the code (or Triton, or the rules) exports, with labels they have, on the provisioned datasource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openlfr import paths
from openlfr.testing.prometheus import (
    DASHBOARDS_DIR,
    DEPLOY_DIR,
    check_expression,
    code_metrics,
    known_series,
    promql_references,
    rule_files,
    yaml_values,
)

DASHBOARD = DASHBOARDS_DIR / "openlfr.json"
PROVISIONING = DEPLOY_DIR / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def test_the_provisioning_points_at_the_dashboard_and_its_datasource(dashboard: dict[str, Any]) -> None:
    datasource = PROVISIONING / "datasources" / "prometheus.yml"
    assert yaml_values(datasource, "type") == ["prometheus"]
    (uid,) = yaml_values(datasource, "uid")
    assert yaml_values(PROVISIONING / "dashboards" / "openlfr.yml", "path") == ["/var/lib/grafana/dashboards"]
    used = {p["datasource"]["uid"] for p in panels(dashboard)}
    used |= {t["datasource"]["uid"] for p in panels(dashboard) for t in p["targets"]}
    used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"] if "datasource" in v}
    assert used == {uid}


def test_the_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
    for p in panels(dashboard):
        assert p["targets"] and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_every_query_names_only_series_the_code_exports(dashboard: dict[str, Any]) -> None:
    known = known_series(rule_files())
    problems = [p for expr in expressions(dashboard) for p in check_expression(expr, known)]
    assert problems == []


def test_the_dashboard_covers_what_the_issue_asks(dashboard: dict[str, Any]) -> None:
    used = set().union(*(promql_references(e).metrics for e in expressions(dashboard)))
    for wanted in (
        "openlfr_stage_messages_in_total",  # throughput per stage
        "openlfr_stage_latency_seconds_bucket",  # latency percentiles
        "openlfr_stage_consumer_lag_messages",  # lag
        "openlfr_stage_messages_dropped_total",  # drops by reason
        "openlfr_ingest_frames_dropped_total",
        "openlfr_stage_batch_size_messages_bucket",  # batch sizes
        "openlfr_stage_messages_dead_lettered_total",  # dead letters
        "nv_inference_queue_duration_us",  # Triton queue time
        "openlfr_deployment_alerts_total",  # alerts per deployment
        "openlfr_deployment_adjudications_total",  # adjudications
        "openlfr_deployment_alert_precision",  # precision
    ):
        assert wanted in used, wanted


def test_a_renamed_metric_or_label_would_fail(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # The same check with the stage counters renamed in the code (a copy of it) finds the panel.
    source = Path(code_metrics()["openlfr_stage_messages_in_total"].source.split(":")[0])
    code = tmp_path / "openlfr"
    code.mkdir()
    renamed = (paths.REPO_ROOT / "libs" / source).read_text().replace(
        '"openlfr_stage_messages_in_total"', '"openlfr_stage_messages_consumed_total"'
    )
    (code / "runner.py").write_text(renamed)
    known = known_series(rule_files(), roots=[code])
    problems = [p for expr in expressions(dashboard) for p in check_expression(expr, known)]
    assert any("openlfr_stage_messages_in_total" in p for p in problems)
