"""deploy/services.yaml is the one source: the committed compose file and base manifests are its
render, and the two targets carry the same command, environment and resources per service."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import pytest
import yaml

from openlfr.messages.topics import ALL_TOPICS


def test_committed_files_equal_the_render(render: ModuleType) -> None:
    files = render.render(render.Source.load())
    stale = [str(path.relative_to(render.REPO)) for path, text in files.items() if not path.is_file() or path.read_text() != text]
    assert not stale, f"stale generated files {stale}: run `.venv/bin/python deploy/render.py`"
    # Nothing in base/ that the renderer did not write (a hand-added manifest would escape the source).
    on_disk = {p.name for p in render.K8S_BASE.glob("*.yaml")}
    assert on_disk == {p.name for p in files if p.parent == render.K8S_BASE}


def _source_with(render: ModuleType, change: dict[str, Any]) -> Any:
    raw = yaml.safe_load((render.SOURCE).read_text())
    raw = copy.deepcopy(raw)
    for dotted, value in change.items():
        *path, last = dotted.split(".")
        node = raw
        for key in path:
            node = node[key]
        node[last] = value
    return render.Source(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"services.detect.scaling.max": 7}, "partitions of openlfr.frames.v1 (6)"),
        ({"services.embed.scaling.min": 0}, "1 <= min <= max"),
        ({"services.match.scaling.topic": "openlfr.nope.v1"}, "unknown topic"),
        ({"services.alert.scaling.type": "hpa"}, "scaling type"),
        ({"services.ingest.calls": ["kafka", "registry"]}, "unknown peers"),
    ],
)
def test_source_check_refuses(render: ModuleType, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _source_with(render, change).check()


def test_compose_and_k8s_carry_the_same_service(render: ModuleType) -> None:
    source = render.Source.load()
    compose = yaml.safe_load(render.COMPOSE_FILE.read_text())["services"]
    for name in render.PIPELINE_SERVICES:
        docs = yaml.safe_load_all((render.K8S_BASE / f"{name}.yaml").read_text())
        deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        k8s_env = {e["name"]: e.get("value", "<ref>") for e in container["env"]}
        compose_env = compose[name]["environment"]
        assert container["command"] == compose[name]["command"]
        assert set(k8s_env) == set(compose_env), name
        platform = source.raw["platform"]
        for key, value in k8s_env.items():
            if value == "<ref>":
                assert compose_env[key].startswith("${"), f"{name} {key}: a secret or site value in both"
            elif value == platform["k8s"]["bootstrap"]:
                assert compose_env[key] == platform["compose"]["bootstrap"]
            elif key.startswith("OPENLFR_KAFKA_") and key.endswith("_FILE"):
                # Mounted secrets: compose's /run/secrets, the pod's projected volume.
                assert compose_env[key].startswith("/run/secrets/") and value.startswith("/etc/openlfr/kafka/"), key
            else:
                assert compose_env[key] == value, f"{name} {key}"
        assert container["resources"] == source.services[name]["resources"]


def test_compose_topic_init_creates_every_topic_as_topics_py_says(render: ModuleType) -> None:
    script = yaml.safe_load(render.COMPOSE_FILE.read_text())["services"]["topic-init"]["command"][0]
    for spec in ALL_TOPICS:
        assert f"--topic {spec.name} --partitions {spec.partitions} " in script
        assert f"retention.ms={spec.retention_ms}" in script


def test_prometheus_rule_carries_the_project_rules(render: ModuleType) -> None:
    rule = yaml.safe_load((render.K8S_BASE / "prometheus-rule.yaml").read_text())
    names = {group["name"] for group in rule["spec"]["groups"]}
    for path in render.RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            assert group["name"] in names, f"{path.name}: group {group['name']} missing from the PrometheusRule"
