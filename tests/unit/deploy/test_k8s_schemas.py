"""Every manifest of every overlay validated offline: core kinds against the Kubernetes schemas
(kubernetes-validate --strict), custom resources against their CRDs' schemas (node,
deploy/validate/validate-crds.mjs), and each check shown to fail on a typo'd field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

#: API groups validated against the CRD schemas; everything else is a core Kubernetes kind.
CRD_GROUPS = ("keda.sh", "monitoring.coreos.com", "kafka.strimzi.io")


def _is_crd(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] in CRD_GROUPS


def _validate_core(kit: Any, docs: list[dict[str, Any]], tmp: Path) -> Any:
    path = tmp / "core.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return kit.run([kit.tool("kubernetes-validate"), "--strict", "--quiet", path], check=False)


def _validate_crds(kit: Any, docs: list[dict[str, Any]], tmp: Path) -> Any:
    kit.tool("node_modules")
    path = tmp / "crds.json"
    path.write_text(json.dumps(docs))
    return kit.run(["node", kit.repo / "deploy" / "validate" / "validate-crds.mjs", path], check=False)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_core_manifests_pass_strict_schemas(kit: Any, built: dict, overlay: str, tmp_path: Path) -> None:
    core = [doc for doc in built[overlay] if not _is_crd(doc)]
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "PodDisruptionBudget"} <= {d["kind"] for d in core}
    proc = _validate_core(kit, core, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_custom_resources_pass_their_crd_schemas(kit: Any, built: dict, overlay: str, tmp_path: Path) -> None:
    crds = [doc for doc in built[overlay] if _is_crd(doc)]
    assert {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "KafkaTopic", "KafkaUser"} == {
        d["kind"] for d in crds
    }
    proc = _validate_crds(kit, crds, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == len(crds)


def test_secrets_pass_strict_schemas(kit: Any, secrets_built: list[dict[str, Any]], tmp_path: Path) -> None:
    assert [(d["kind"], d["metadata"]["name"]) for d in secrets_built] == [("Secret", "openlfr-credentials")]
    assert set(secrets_built[0]["data"]) == {
        "OPENLFR_API_TOKENS", "OPENLFR_REVIEW_REGISTRY_TOKEN", "OPENLFR_DEPLOYMENTS_TOKEN", "OPENLFR_QDRANT_API_KEY",
        "OPENLFR_MATCH_SIGNING_KEY",
    }
    proc = _validate_core(kit, secrets_built, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_secret_a_workload_reads_is_in_the_secret(built: dict, secrets_built: list[dict[str, Any]]) -> None:
    keys = set(secrets_built[0]["data"])
    for doc in built["cpu"]:
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "openlfr-credentials" and ref["key"] in keys, (doc["metadata"]["name"], env)


def _deep_set(doc: dict[str, Any], path: str, key: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[key] = value
    return doc


@pytest.mark.parametrize(
    ("kind", "path", "key", "value"),
    [
        ("Deployment", "spec/template/spec/containers/0", "readinesProbe", {}),  # typo'd field
        ("Deployment", "spec/template/spec", "terminationGracePeriodSeconds", "fifty"),  # wrong type
        ("NetworkPolicy", "spec", "ingres", []),
        ("StatefulSet", "spec", "replica", 1),
    ],
)
def test_core_check_fails_on_a_bad_field(kit: Any, built: dict, tmp_path: Path, kind: str, path: str, key: str, value: Any) -> None:
    doc = next(d for d in built["cpu"] if d["kind"] == kind)
    proc = _validate_core(kit, [_deep_set(doc, path, key, value)], tmp_path)
    assert proc.returncode != 0, f"{kind} with {key}={value!r} passed"


@pytest.mark.parametrize(
    ("kind", "path", "key", "value", "error"),
    [
        ("ScaledObject", "spec", "maxReplicaCont", 3, "/spec/maxReplicaCont: unknown field"),
        ("ScaledObject", "spec", "maxReplicaCount", "six", "must be integer"),
        ("ScaledObject", "spec/triggers/0", "metdata", {}, "unknown field"),
        ("KafkaTopic", "spec", "partitons", 6, "/spec/partitons: unknown field"),
        ("ServiceMonitor", "spec/endpoints/0", "pth", "/metrics", "unknown field"),
        ("PrometheusRule", "spec/groups/0", "rule", [], "unknown field"),
    ],
)
def test_crd_check_fails_on_a_bad_field(
    kit: Any, built: dict, tmp_path: Path, kind: str, path: str, key: str, value: Any, error: str
) -> None:
    doc = next(d for d in built["cpu"] if d["kind"] == kind)
    proc = _validate_crds(kit, [_deep_set(doc, path, key, value)], tmp_path)
    assert proc.returncode != 0 and error in proc.stdout, proc.stdout + proc.stderr
