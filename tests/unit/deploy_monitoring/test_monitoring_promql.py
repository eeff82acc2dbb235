"""The PromQL scanner and the metric catalogue the monitoring tests check the rules and the
dashboard with (openlfr.testing.prometheus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openlfr.testing.prometheus import MetricDef, check_expression, code_metrics, promql_references

KNOWN = {
    "openlfr_stage_messages_in_total": frozenset({"stage", "topic", "job", "instance"}),
    "openlfr_stage_latency_seconds_bucket": frozenset({"stage", "le", "job", "instance"}),
    "up": frozenset({"job", "instance"}),
}


@pytest.mark.parametrize(
    ("expr", "selectors", "grouping"),
    [
        ("up", [("up", set())], set()),
        ('up{job="detect"} == 0', [("up", {"job"})], set()),
        (
            'sum by (stage) (rate(openlfr_stage_messages_in_total{topic=~"a|b}"}[$__rate_interval]))',
            [("openlfr_stage_messages_in_total", {"topic"})],
            {"stage"},
        ),
        (
            "histogram_quantile(0.99, sum by (stage, le) (rate(x_bucket[5m]))) > on (stage) group_left y:z",
            [("x_bucket", set()), ("y:z", set())],
            {"stage", "le"},
        ),
        ('sum without (instance) (a) / ignoring (reason) b offset 5m and bool c', [("a", set()), ("b", set()), ("c", set())],
         {"instance", "reason"}),
        ('{__name__="up", job="x"}', [("up", {"job"})], set()),
        ("vector(2) * 1e6 + 0.5 - inf", [], set()),
        ("max by(deployment)(p{deployment=~\"${deployment}\"})", [("p", {"deployment"})], {"deployment"}),
    ],
)
def test_references(expr: str, selectors: list[tuple[str, set[str]]], grouping: set[str]) -> None:
    refs = promql_references(expr)
    assert refs.selectors == [(name, frozenset(labels)) for name, labels in selectors]
    assert refs.grouping == grouping


@pytest.mark.parametrize("expr", ['up{job="x}', "sum(rate(up[5m])", "up[5m"])
def test_broken_expressions_raise(expr: str) -> None:
    with pytest.raises(ValueError):
        promql_references(expr)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("sum by (stage) (rate(openlfr_stage_messages_in_total[1m]))", None),
        ("histogram_quantile(0.9, sum by (le, stage) (rate(openlfr_stage_latency_seconds_bucket[1m])))", None),
        ("rate(openlfr_stage_messages_total[1m])", "unknown metric 'openlfr_stage_messages_total'"),
        ('openlfr_stage_messages_in_total{camera_id="c"}', "has no label ['camera_id']"),
        ("sum by (camera_id) (openlfr_stage_messages_in_total)", "grouping by ['camera_id']"),
        ("1 + 1", "selects no metric"),
        ("sum(rate(up[5m])", "unbalanced"),
    ],
)
def test_check_expression(expr: str, complaint: str | None) -> None:
    problems = check_expression(expr, KNOWN)
    if complaint is None:
        assert problems == []
    else:
        assert len(problems) == 1 and complaint in problems[0], problems


def test_the_catalogue_reads_metric_definitions_from_source(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "from collections import Counter as Tally\n"
        "from prometheus_client import Counter, Histogram\n"
        "from prometheus_client.core import GaugeMetricFamily\n"
        "a = Counter('x_events_total', 'doc', ['stage'])\n"
        "b = Histogram('x_seconds', 'doc', labelnames=('camera_id',), buckets=(1, 2))\n"
        "c = GaugeMetricFamily('x_open', 'doc', labels=['deployment'])\n"
        "d = Tally(['not', 'a', 'metric'])\n"
    )
    found = code_metrics([tmp_path])
    assert found == {
        "x_events_total": MetricDef("x_events_total", "counter", frozenset({"stage"}), f"{tmp_path.name}/m.py:4"),
        "x_seconds": MetricDef("x_seconds", "histogram", frozenset({"camera_id"}), f"{tmp_path.name}/m.py:5"),
        "x_open": MetricDef("x_open", "gauge", frozenset({"deployment"}), f"{tmp_path.name}/m.py:6"),
    }
    assert set(found["x_events_total"].samples()) == {"x_events_total", "x_events_created"}
    assert set(found["x_seconds"].samples()) == {"x_seconds_bucket", "x_seconds_sum", "x_seconds_count", "x_seconds_created"}
    assert found["x_seconds"].samples()["x_seconds_bucket"] == {"camera_id", "le"}


def test_the_projects_catalogue_has_every_stage_and_review_metric() -> None:
    found = code_metrics()
    assert found["openlfr_stage_consumer_lag_messages"].labels == {"stage", "topic", "partition"}
    assert found["openlfr_deployment_adjudications"].type == "counter"
    assert found["openlfr_stage_latency_seconds"].type == "histogram"
    assert "openlfr_ingest_frames_dropped_total" in found and "openlfr_deployment_faces_total" in found
