"""The Kubernetes half of deploy/render.py: deploy/k8s/base/ (a Deployment, Service, PDB,
ServiceMonitor and scaler per service; Triton, Qdrant, topics, network policies, the
PrometheusRule, the site ConfigMap, the namespace) and the overlays, from deploy/services.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from openlfr.kafka import deployment as kafka_deploy
from openlfr.kafka.admin import retention_config
from openlfr.messages.topics import ALL_TOPICS

from render_source import (
    CREDENTIALS, PART_OF, QDRANT_UID, RULES_DIR, SITE_CONFIG, TRITON_UID, Source, _Dumper, _triton_args,
)


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component}


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _probe(path: str, port: str | int, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _pdb(name: str, why: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": _labels(name, "pipeline"), "annotations": {"openlfr.io/why": why}},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name)}},
    }


def _service(name: str, component: str, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(name, component)},
        "spec": {
            "selector": _selector(name),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name} for port_name, port in ports.items()],
        },
    }


def _service_monitor(name: str, component: str, port: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "labels": _labels(name, component)},
        "spec": {
            # job="<name>", as deploy/prometheus/prometheus.yml names the compose jobs.
            "jobLabel": "app.kubernetes.io/name",
            "selector": {"matchLabels": _selector(name)},
            "endpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
        },
    }


def k8s_service(source: Source, name: str) -> list[dict[str, Any]]:
    """Deployment, Service, PDB, ServiceMonitor, ScaledObject and volume of one service."""
    svc = source.services[name]
    common = source.raw["common"]
    k8s = source.k8s
    scaling = svc["scaling"]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in source.env(name, "k8s").items()]
    env += [
        {"name": var, "valueFrom": {"configMapKeyRef": {"name": SITE_CONFIG, "key": var}}} for var in svc.get("site", {})
    ]
    env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS, "key": var}}} for var in svc.get("secrets", [])]
    security = source.raw["kafka_security"]["k8s"]
    env += kafka_deploy.k8s_service_env(name, ca_key=security["ca_key"])
    kafka_volume, kafka_mount = kafka_deploy.k8s_credentials_volume(
        name, ca_secret=security["ca_secret"], ca_key=security["ca_key"]
    )
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, kafka_mount]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, kafka_volume]
    docs: list[dict[str, Any]] = []
    if svc.get("data"):
        claim = f"{name}-data"
        mounts.append({"name": "data", "mountPath": "/data"})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "labels": _labels(name, "pipeline")},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": svc["data"]["size"]}}},
            }
        )
    single = scaling["type"] == "fixed" or scaling["max"] == 1
    why = " ".join(scaling.get("why", "").split())
    container = {
        "name": name,
        "image": source.image(common["image"]),
        "command": svc["command"],
        "ports": [{"name": "http", "containerPort": common["port"]}],
        "env": env,
        "resources": svc["resources"],
        # /healthz answers once the stage is built (the alert service first reads its topic back).
        "startupProbe": _probe("/healthz", "http", period=5, failures=60),
        "livenessProbe": _probe("/healthz", "http", period=10, failures=3),
        "readinessProbe": _probe("/readyz", "http", period=5, failures=2),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(common["pre_stop_sleep_s"])]}}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name, "pipeline")},
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _selector(name)},
            # A single replica with a ReadWriteOnce volume: the old pod goes before the new one starts.
            "strategy": {"type": "Recreate"}
            if single
            else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels(name, "pipeline")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # preStop sleep + drain (OPENLFR_FLUSH_TIMEOUT_S) + margin to commit and exit.
                    "terminationGracePeriodSeconds": common["termination_grace_s"],
                    "securityContext": _pod_security(k8s["run_as_user"]),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    if scaling["type"] == "fixed":
        deployment["spec"]["replicas"] = scaling["replicas"]
        deployment["metadata"]["annotations"] = {"openlfr.io/why-one-replica": why}
    docs.insert(0, deployment)
    docs.append(_service(name, "pipeline", {"http": common["port"]}))
    pdb_why = (
        "one replica by design: a voluntary disruption takes it down; it drains on SIGTERM and resumes from its commits"
        if single
        else "at most one replica drained at a time; the rest take over its partitions"
    )
    docs.append(_pdb(name, pdb_why))
    docs.append(_service_monitor(name, "pipeline", "http"))
    if scaling["type"] == "kafka-lag":
        spec = source.topic(scaling["topic"])
        scaled: dict[str, Any] = {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name, "labels": _labels(name, "pipeline")},
            "spec": {
                "scaleTargetRef": {"name": name},
                "minReplicaCount": scaling["min"],
                # Never above the topic's partitions: a consumer beyond them gets no partition.
                "maxReplicaCount": scaling["max"],
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "triggers": [
                    {
                        "type": "kafka",
                        "metadata": {
                            "bootstrapServers": source.raw["platform"]["k8s"]["bootstrap"],
                            "consumerGroup": f"openlfr-{name}",
                            "topic": spec.name,
                            "lagThreshold": str(scaling["lag_threshold"]),
                            "offsetResetPolicy": "latest",
                            "allowIdleConsumers": "false",
                            # As the service itself connects: TLS, SCRAM (TriggerAuthentication).
                            "sasl": "scram_sha512",
                            "tls": "enable",
                        },
                        "authenticationRef": {"name": f"{name}-kafka"},
                    }
                ],
            },
        }
        docs.append(
            kafka_deploy.keda_trigger_authentication(
                name, ca_secret=security["ca_secret"], ca_key=security["ca_key"], labels=_labels(name, "pipeline")
            )
        )
        if why:
            scaled["metadata"]["annotations"] = {"openlfr.io/why-max-replicas": why}
        docs.append(scaled)
    return docs


def k8s_triton(source: Source) -> list[dict[str, Any]]:
    """Triton: Deployment (device-neutral; the overlays pick the image and the device), Service,
    PDB, ServiceMonitor and a ScaledObject on the mean queue time per request."""
    t = source.infra["triton"]
    ports = t["ports"]
    name = "triton"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name, "inference")},
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels(name, "inference")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": _pod_security(TRITON_UID),
                    "containers": [
                        {
                            "name": name,
                            # The overlays pick the tag (cpu or gpu variant of the model repository).
                            "image": source.image("triton-cpu").rsplit(":", 1)[0],
                            "args": _triton_args(),
                            "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports.items()],
                            "resources": t["resources"],
                            "startupProbe": _probe("/v2/health/ready", "http", period=5, failures=60),
                            "livenessProbe": _probe("/v2/health/live", "http", period=10, failures=3),
                            "readinessProbe": _probe("/v2/health/ready", "http", period=5, failures=2),
                            "securityContext": _container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }
    scaling = t["scaling"]
    selector = f'namespace="{source.k8s["namespace"]}", job="triton"'
    query = (
        f"sum(rate(nv_inference_queue_duration_us{{{selector}}}[1m]))"
        f" / clamp_min(sum(rate(nv_inference_request_success{{{selector}}}[1m])), 1)"
    )
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": _labels(name, "inference")},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": scaling["min"],
            "maxReplicaCount": scaling["max"],
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": source.k8s["prometheus_url"],
                        "query": query,
                        "threshold": str(scaling["queue_time_us_threshold"]),
                    },
                }
            ],
        },
    }
    return [
        deployment,
        _service(name, "inference", ports),
        _pdb(name, "at most one Triton drained at a time"),
        _service_monitor(name, "inference", "metrics"),
        scaled,
    ]


def k8s_qdrant(source: Source) -> list[dict[str, Any]]:
    """Qdrant: a one-replica StatefulSet with its storage on a volume claim."""
    q = source.infra["qdrant"]
    ports = q["ports"]
    name = "qdrant"
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": _labels(name, "vector-store")},
        "spec": {
            "serviceName": f"{name}-headless",
            "replicas": 1,
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {"labels": _labels(name, "vector-store")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": _pod_security(QDRANT_UID),
                    "containers": [
                        {
                            "name": name,
                            "image": source.image("qdrant"),
                            "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports.items()],
                            "env": [
                                {
                                    "name": "QDRANT__SERVICE__API_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": CREDENTIALS, "key": "OPENLFR_QDRANT_API_KEY"}},
                                },
                                {"name": "QDRANT__TELEMETRY_DISABLED", "value": "true"},
                                {"name": "QDRANT__STORAGE__SNAPSHOTS_PATH", "value": "/qdrant/snapshots"},
                            ],
                            "resources": q["resources"],
                            "livenessProbe": _probe("/livez", "http", period=10, failures=3),
                            "readinessProbe": _probe("/readyz", "http", period=5, failures=2),
                            "securityContext": _container_security(),
                            "volumeMounts": [
                                {"name": "storage", "mountPath": "/qdrant/storage"},
                                {"name": "snapshots", "mountPath": "/qdrant/snapshots"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "snapshots", "emptyDir": {"sizeLimit": "4Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "storage"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": q["storage"]}}},
                }
            ],
        },
    }
    headless = _service(f"{name}-headless", "vector-store", ports)
    headless["spec"]["clusterIP"] = "None"
    headless["spec"]["selector"] = _selector(name)
    return [statefulset, _service(name, "vector-store", ports), headless, _pdb(name, "one replica: a drain restarts it")]


def k8s_topics(source: Source) -> list[dict[str, Any]]:
    """One Strimzi KafkaTopic per topic of ``openlfr.messages.topics``."""
    k8s = source.k8s
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {
                "name": spec.name,
                "labels": {"strimzi.io/cluster": k8s["kafka_cluster"], "app.kubernetes.io/part-of": PART_OF},
                "annotations": {"openlfr.io/doc": spec.doc},
            },
            "spec": {
                "topicName": spec.name,
                "partitions": spec.partitions,
                "replicas": k8s["topic_replicas"],
                "config": {
                    **{key: int(value) for key, value in retention_config(spec.retention_ms).items()},
                    "min.insync.replicas": k8s["topic_min_insync_replicas"],
                },
            },
        }
        for spec in ALL_TOPICS
    ]


def network_policies(source: Source) -> list[dict[str, Any]]:
    """Default deny for OpenLFR's pods, then one policy per target naming its callers."""
    k8s = source.k8s
    common_port = source.raw["common"]["port"]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s["monitoring_namespace"]}}}
    api_clients = {"namespaceSelector": {"matchLabels": {k8s["api_client_namespace_label"]: "true"}}}

    def callers(target: str) -> list[str]:
        return sorted(name for name, svc in source.services.items() if target in svc.get("calls", []))

    def pods(names: list[str]) -> list[dict[str, Any]]:
        return [{"podSelector": {"matchLabels": _selector(name)}} for name in names]

    def policy(target: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"allow-to-{target}", "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": {"podSelector": {"matchLabels": _selector(target)}, "policyTypes": ["Ingress"], "ingress": rules},
        }

    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}},
                "policyTypes": ["Ingress"],
            },
        }
    ]
    http = [{"protocol": "TCP", "port": common_port}]
    for name, svc in source.services.items():
        rules: list[dict[str, Any]] = [{"from": [monitoring], "ports": http}]
        peers = callers(name)
        if peers:
            rules.append({"from": pods(peers), "ports": http})
        if svc.get("api"):
            rules.append({"from": [api_clients], "ports": http})
        docs.append(policy(name, rules))
    t = source.infra["triton"]["ports"]
    docs.append(
        policy(
            "triton",
            [
                {"from": pods(callers("triton")), "ports": [{"protocol": "TCP", "port": t["grpc"]}]},
                {"from": [monitoring], "ports": [{"protocol": "TCP", "port": t["metrics"]}]},
            ],
        )
    )
    q = source.infra["qdrant"]["ports"]
    docs.append(
        policy(
            "qdrant",
            [{"from": pods(callers("qdrant")), "ports": [{"protocol": "TCP", "port": q["http"]}, {"protocol": "TCP", "port": q["grpc"]}]}],
        )
    )
    return docs


def prometheus_rule(source: Source, rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    """The project's alert rules (deploy/prometheus/rules/*.yml) plus the deployment's own."""
    groups: list[dict[str, Any]] = []
    for path in sorted(rules_dir.glob("*.yml")):
        groups += yaml.safe_load(path.read_text()).get("groups", [])
    groups.append(
        {
            "name": "openlfr.kubernetes",
            "rules": [
                {
                    "alert": "OpenLFRSingleReplicaDown",
                    "expr": 'kube_deployment_status_replicas_available{deployment=~"ingest|match|alert"} < 1',
                    "for": "5m",
                    "labels": {"severity": "page"},
                    "annotations": {
                        "summary": "{{ $labels.deployment }} has no available replica",
                        "description": "ingest, match and alert run one replica each (deploy/k8s/README.md); "
                        "while it is down no frame is published, matched or alerted.",
                    },
                },
                {
                    "alert": "OpenLFRScaledToMaximum",
                    "expr": "kube_horizontalpodautoscaler_status_current_replicas{horizontalpodautoscaler=~\"keda-hpa-.*\"}"
                    " >= kube_horizontalpodautoscaler_spec_max_replicas{horizontalpodautoscaler=~\"keda-hpa-.*\"}",
                    "for": "15m",
                    "labels": {"severity": "ticket"},
                    "annotations": {
                        "summary": "{{ $labels.horizontalpodautoscaler }} has been at its maximum replicas for 15 minutes",
                        "description": "A consumer's maximum is its topic's partitions: more partitions (and a "
                        "higher maxReplicaCount in deploy/services.yaml) or faster replicas are needed.",
                    },
                },
            ],
        }
    )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "openlfr", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {"groups": groups},
    }


def site_config(source: Source) -> dict[str, Any]:
    data: dict[str, str] = {}
    for svc in source.services.values():
        data.update({k: str(v) for k, v in svc.get("site", {}).items()})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SITE_CONFIG, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "data": data,
    }


def namespace(source: Source) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": source.k8s["namespace"],
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                # Every pod here must pass the restricted Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def overlays(source: Source) -> dict[str, dict[str, Any]]:
    """kustomization.yaml of the cpu and gpu overlays."""
    t = source.infra["triton"]

    def image(key: str) -> list[dict[str, str]]:
        name, tag = source.image(key).rsplit(":", 1)
        return [{"name": name, "newTag": tag}]

    def kustomization(key: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../../base"],
            "images": image(key),
            "patches": [
                {"target": target, "patch": yaml.dump(ops, Dumper=_Dumper, sort_keys=False)} for target, ops in patches
            ],
        }

    triton_deployment = {"group": "apps", "version": "v1", "kind": "Deployment", "name": "triton"}
    triton_scaler = {"group": "keda.sh", "version": "v1alpha1", "kind": "ScaledObject", "name": "triton"}
    cpu = t["cpu"]
    gpu = t["gpu"]
    return {
        "cpu": kustomization(
            cpu["image"],
            [
                (
                    triton_scaler,
                    [
                        {
                            "op": "add",
                            "path": "/spec/triggers/-",
                            "value": {
                                "type": "cpu",
                                "metricType": "Utilization",
                                "metadata": {"value": str(cpu["cpu_utilization"])},
                            },
                        }
                    ],
                )
            ],
        ),
        "gpu": kustomization(
            gpu["image"],
            [
                (
                    triton_deployment,
                    [
                        {
                            "op": "add",
                            "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
                            "value": gpu["gpus"],
                        },
                        {
                            "op": "add",
                            "path": "/spec/template/spec/tolerations",
                            "value": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        },
                    ],
                ),
                (triton_scaler, [{"op": "replace", "path": "/spec/maxReplicaCount", "value": gpu["max"]}]),
            ],
        ),
    }
