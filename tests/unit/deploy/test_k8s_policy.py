"""What the built overlays must say beyond their schemas: probes, limits, a locked-down pod,
a drain that can commit, scaling within the topics' partitions, and network peers."""

from __future__ import annotations

from typing import Any

import pytest

from openlfr.messages.topics import ALL_TOPICS

PARTITIONS = {spec.name: spec.partitions for spec in ALL_TOPICS}
PIPELINE = ("ingest", "detect", "embed", "match", "alert")
#: Flush timeout (OPENLFR_FLUSH_TIMEOUT_S default) + preStop + margin to commit and exit.
MIN_GRACE_S = 30 + 5 + 5

#: Who may open a connection to whom (besides Prometheus scraping). Written out, not derived:
#: a new caller must be added here on purpose.
PEERS = {
    "ingest": set(),
    "detect": set(),
    "embed": set(),
    "match": {"ingest", "alert"},
    "alert": set(),
    "triton": {"detect", "embed", "match"},
    "qdrant": {"match"},
}
#: Reached from outside the pipeline (namespaces labelled openlfr.io/api-access=true).
API = {"match", "alert"}


def _workloads(kit: Any, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return kit.of_kind(docs, "Deployment") | kit.of_kind(docs, "StatefulSet")


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_workload_is_probed_limited_and_locked_down(kit: Any, built: dict, overlay: str) -> None:
    for name, doc in _workloads(kit, built[overlay]).items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            assert c["livenessProbe"] and c["readinessProbe"], name
            assert ":" in c["image"] and not c["image"].endswith(":latest"), name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: no writable /tmp"


@pytest.mark.parametrize("name", PIPELINE)
def test_services_probe_healthz_readyz_and_drain_before_kill(kit: Any, built: dict, name: str) -> None:
    pod = kit.of_kind(built["cpu"], "Deployment")[name]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= MIN_GRACE_S
    assert c["lifecycle"]["preStop"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert float(env["OPENLFR_FLUSH_TIMEOUT_S"]) + 5 < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_workload_has_a_pdb_and_every_service_a_monitor(kit: Any, built: dict, overlay: str) -> None:
    docs = built[overlay]
    pdbs = kit.of_kind(docs, "PodDisruptionBudget")
    for name, doc in _workloads(kit, docs).items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()) for pdb in pdbs.values()
        ), f"{name} has no PodDisruptionBudget"
    monitors = kit.of_kind(docs, "ServiceMonitor")
    assert set(monitors) == {*PIPELINE, "triton"}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_kafka_scalers_never_exceed_the_topic_partitions(kit: Any, built: dict, overlay: str) -> None:
    scalers = kit.of_kind(built[overlay], "ScaledObject")
    kafka = {name: so for name, so in scalers.items() if so["spec"]["triggers"][0]["type"] == "kafka"}
    assert set(kafka) == {"detect", "embed", "match"}
    for name, so in kafka.items():
        (trigger,) = so["spec"]["triggers"]
        topic = trigger["metadata"]["topic"]
        assert so["spec"]["maxReplicaCount"] <= PARTITIONS[topic], name
        assert trigger["metadata"]["consumerGroup"] == f"openlfr-{name}"
        assert "replicas" not in kit.of_kind(built[overlay], "Deployment")[name]["spec"], f"{name}: KEDA owns replicas"
    # The registry's SQLite lives in the match pod: one replica, and the reason is on the object.
    assert kafka["match"]["spec"]["maxReplicaCount"] == 1
    assert "SQLite" in kafka["match"]["metadata"]["annotations"]["openlfr.io/why-max-replicas"]


@pytest.mark.parametrize(("overlay", "triggers", "gpus"), [("cpu", ["prometheus", "cpu"], None), ("gpu", ["prometheus"], 1)])
def test_triton_scales_on_queue_time_and_the_overlay_picks_the_device(
    kit: Any, built: dict, overlay: str, triggers: list[str], gpus: int | None
) -> None:
    so = kit.of_kind(built[overlay], "ScaledObject")["triton"]
    assert [t["type"] for t in so["spec"]["triggers"]] == triggers
    assert "nv_inference_queue_duration_us" in so["spec"]["triggers"][0]["metadata"]["query"]
    container = kit.of_kind(built[overlay], "Deployment")["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus
    assert container["image"].endswith(f"-{overlay}")


@pytest.mark.parametrize("name", ["ingest", "alert"])
def test_single_replica_services_are_fixed_and_recreated(kit: Any, built: dict, name: str) -> None:
    deployment = kit.of_kind(built["cpu"], "Deployment")[name]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["metadata"]["annotations"]["openlfr.io/why-one-replica"]
    assert name not in kit.of_kind(built["cpu"], "ScaledObject")


def test_stateful_pieces_keep_their_data_on_volumes(kit: Any, built: dict) -> None:
    docs = built["cpu"]
    deployments = kit.of_kind(docs, "Deployment")
    for name, db_var in (("match", "OPENLFR_REGISTRY_DB_PATH"), ("alert", "OPENLFR_REVIEW_DB_PATH")):
        pod = deployments[name]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env[db_var].startswith("/data/") and env["OPENLFR_AUDIT_LOG"] == f"/data/audit/{name}.jsonl"
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [f"{name}-data"] and f"{name}-data" in kit.of_kind(docs, "PersistentVolumeClaim")
        assert deployments[name]["spec"]["strategy"] == {"type": "Recreate"}
    match_env = {e["name"]: e.get("value") for e in deployments["match"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert match_env["OPENLFR_VECTOR_STORE"] == "qdrant" and match_env["OPENLFR_QDRANT_URL"] == "http://qdrant:6333"
    qdrant = kit.of_kind(docs, "StatefulSet")["qdrant"]
    assert qdrant["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "storage"


def test_kafka_topics_match_topics_py(kit: Any, built: dict) -> None:
    topics = {doc["spec"]["topicName"]: doc["spec"] for doc in kit.of_kind(built["cpu"], "KafkaTopic").values()}
    assert set(topics) == set(PARTITIONS)
    for spec in ALL_TOPICS:
        assert topics[spec.name]["partitions"] == spec.partitions
        assert topics[spec.name]["config"]["retention.ms"] == spec.retention_ms


def _selected(policy: dict[str, Any]) -> str:
    return policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]


def test_network_policies_allow_exactly_the_needed_peers(kit: Any, built: dict) -> None:
    policies = kit.of_kind(built["cpu"], "NetworkPolicy")
    deny = policies.pop("default-deny-ingress")
    assert deny["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "openlfr"}}, "policyTypes": ["Ingress"]}
    by_target = {_selected(p): p for p in policies.values()}
    assert set(by_target) == set(PEERS)
    for target, policy in by_target.items():
        pods: set[str] = set()
        namespaces: set[str] = set()
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                if "podSelector" in peer:
                    pods.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                else:
                    namespaces.update(f"{k}={v}" for k, v in peer["namespaceSelector"]["matchLabels"].items())
        assert pods == PEERS[target], target
        expected_ns = {"kubernetes.io/metadata.name=monitoring"} if target != "qdrant" else set()
        if target in API:
            expected_ns.add("openlfr.io/api-access=true")
        assert namespaces == expected_ns, target


def test_peers_agree_with_what_each_service_is_configured_to_call(kit: Any, built: dict) -> None:
    """A service whose env points at a peer is allowed to reach it, and no other is."""
    callers: dict[str, set[str]] = {target: set() for target in PEERS}
    for name, doc in kit.of_kind(built["cpu"], "Deployment").items():
        if name not in PIPELINE:
            continue
        env = {e["name"]: e.get("value") or "" for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        if env.get("OPENLFR_BACKEND") == "triton":
            callers["triton"].add(name)
        if env.get("OPENLFR_QDRANT_URL"):
            callers["qdrant"].add(name)
        if any(v.startswith("http://match:") for v in env.values()):
            callers["match"].add(name)
    assert callers == PEERS
