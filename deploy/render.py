"""Render docker-compose.yml and deploy/k8s/base/ from deploy/services.yaml.

deploy/services.yaml is the one place where each service's command, environment, ports,
resources, replicas and scaling are written; this script writes both deployments from it, so
compose and Kubernetes cannot drift apart. Topic names, partitions and retention come from
``openlfr.messages.topics`` (with the segment settings of ``openlfr.kafka.admin.retention_config``); the PrometheusRule carries deploy/prometheus/rules/*.yml.

    .venv/bin/python deploy/render.py            # write the files
    .venv/bin/python deploy/render.py --check    # exit 1 naming the files that differ

tests/unit/deploy/test_deploy_render.py runs ``--check``'s comparison.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from openlfr.kafka import deployment as kafka_deploy
from openlfr.kafka.admin import retention_config
from openlfr.messages.topics import ALL_TOPICS

# This folder's modules (render_source, render_k8s, render_local) by name: the tests load this
# file by path, and its siblings must be one module each, whoever imports them.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import render_local  # noqa: E402
from render_k8s import (  # noqa: E402
    k8s_qdrant, k8s_service, k8s_topics, k8s_triton, namespace, network_policies, overlays, prometheus_rule,
    site_config,
)
from render_source import (  # noqa: E402, F401 - RULES_DIR and SOURCE: this script's API too (tests)
    COMPOSE_FILE, HEADER, K8S_BASE, K8S_OVERLAYS, KAFKA_PROPERTIES, LOCAL_OVERRIDE, PART_OF, PIPELINE_SERVICES,
    REPO, RULES_DIR, SECRETS_FILE, SOURCE, TRITON_UID, Source, _Dumper, _triton_args, dump,
)

render_local.register(_Dumper)


# ---------------------------------------------------------------- compose


def _compose_healthcheck(test: list[str], *, start_period: str = "120s") -> dict[str, Any]:
    return {
        "test": test,
        "interval": "10s",
        "timeout": "5s",
        "retries": 5,
        "start_period": start_period,
        "start_interval": "2s",
    }


def _http_check(url: str) -> list[str]:
    """A probe with the image's python (the OpenLFR image has no curl or wget)."""
    return ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('{url}', timeout=4)"]


def compose(source: Source) -> dict[str, Any]:
    """The compose project: Kafka (KRaft), topic-init, Qdrant, Triton (cpu or gpu profile),
    Prometheus, Grafana and the five services."""
    infra = source.infra
    kafka_port = infra["kafka"]["port"]
    services: dict[str, Any] = {}
    security = source.raw["kafka_security"]["compose"]
    admin = " ".join(kafka_deploy.compose_admin_args())
    # SASL_SSL only, ACLs, the controller on mutual TLS (deploy/compose/kafka/server.properties).
    services["kafka"] = {
        "image": source.image("kafka"),
        # The tests' Kafka jars (scripts/kafka-fetch.sh first): the broker deployed is the one tested.
        "build": {"context": ".", "dockerfile": "deploy/kafka/Dockerfile"},
        "entrypoint": ["/bin/sh", "-ec"],
        "command": [kafka_deploy.compose_broker_script(cluster_id=security["cluster_id"])],
        "volumes": [
            "kafka-data:/var/lib/kafka/data",
            f"./{KAFKA_PROPERTIES.relative_to(REPO)}:{kafka_deploy.SERVER_PROPERTIES}:ro",
        ],
        "secrets": [
            kafka_deploy.CA_SECRET,
            kafka_deploy.KEYSTORE_SECRET,
            kafka_deploy.ADMIN_CLIENT_SECRET,
            kafka_deploy.password_secret("openlfr-broker"),
            kafka_deploy.password_secret("openlfr-admin"),
        ],
        "healthcheck": _compose_healthcheck(
            ["CMD-SHELL", f"/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:{kafka_port} {admin} >/dev/null"],
            start_period="60s",
        ),
        "restart": "unless-stopped",
    }
    uid = source.k8s["run_as_user"]
    # The services' SCRAM users (from their password files) and the ACL table, at every `up`.
    services["kafka-users"] = {
        "image": source.image(source.raw["common"]["image"]),
        "build": {"context": ".", "target": "runtime"},
        "command": kafka_deploy.compose_provision_command(port=kafka_port),
        "secrets": kafka_deploy.compose_provision_secrets(),
        "user": f"{uid}:{uid}",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "depends_on": {"kafka": {"condition": "service_healthy"}},
        "restart": "no",
    }
    # Created with their retention and the segment settings that make it hold; the alter line
    # brings topics made by an older topic-init to the same settings (it is idempotent).
    creates = []
    for spec in ALL_TOPICS:
        config = retention_config(spec.retention_ms)
        creates.append(
            f"/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:{kafka_port} {admin} --create --if-not-exists "
            f"--topic {spec.name} --partitions {spec.partitions} --replication-factor 1 "
            + " ".join(f"--config {key}={value}" for key, value in config.items())
        )
        creates.append(
            f"/opt/kafka/bin/kafka-configs.sh --bootstrap-server kafka:{kafka_port} {admin} --alter --entity-type topics "
            f"--entity-name {spec.name} --add-config " + ",".join(f"{key}={value}" for key, value in config.items())
        )
    services["topic-init"] = {
        "image": source.image("kafka"),
        "depends_on": {
            "kafka": {"condition": "service_healthy"},
            "kafka-users": {"condition": "service_completed_successfully"},
        },
        "entrypoint": ["/bin/sh", "-ec"],
        "command": ["\n".join(creates) + "\n"],
        "secrets": [kafka_deploy.CA_SECRET, kafka_deploy.ADMIN_CLIENT_SECRET],
        "restart": "no",
    }
    qdrant = infra["qdrant"]["ports"]
    services["qdrant"] = {
        "image": source.image("qdrant"),
        "environment": {
            "QDRANT__SERVICE__API_KEY": _secret_ref("OPENLFR_QDRANT_API_KEY"),
            "QDRANT__TELEMETRY_DISABLED": "true",
        },
        "volumes": ["qdrant-data:/qdrant/storage"],
        "healthcheck": _compose_healthcheck(["CMD-SHELL", f"bash -c ':> /dev/tcp/127.0.0.1/{qdrant['http']}'"], start_period="30s"),
        "restart": "unless-stopped",
    }
    triton = infra["triton"]["ports"]
    for variant, profile in (("onnxruntime", "cpu"), ("onnxruntime-gpu", "gpu")):
        entry: dict[str, Any] = {
            "profiles": [profile],
            "image": source.image(f"triton-{profile}"),
            "build": {"context": ".", "target": "triton", "args": {"TRITON_VARIANT": variant}},
            "command": _triton_args(),
            "user": f"{TRITON_UID}:{TRITON_UID}",
            "read_only": True,
            "tmpfs": ["/tmp"],
            "healthcheck": _compose_healthcheck(
                ["CMD", "curl", "-fsS", f"http://localhost:{triton['http']}/v2/health/ready"], start_period="180s"
            ),
            "restart": "unless-stopped",
        }
        if profile == "gpu":
            entry["networks"] = {"default": {"aliases": ["triton"]}}
            entry["deploy"] = {
                "resources": {"reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}
            }
        services["triton" if profile == "cpu" else "triton-gpu"] = entry
    services["prometheus"] = {
        "image": source.image("prometheus"),
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=15d",
            "--web.enable-lifecycle",
        ],
        "volumes": [
            "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "./deploy/prometheus/rules:/etc/prometheus/rules:ro",
            "prometheus-data:/prometheus",
        ],
        "ports": [f"{infra['prometheus'].get('bind', '0.0.0.0')}:{infra['prometheus']['port']}:9090"],
        "healthcheck": _compose_healthcheck(["CMD", "wget", "-qO-", "http://localhost:9090/-/ready"], start_period="30s"),
        "restart": "unless-stopped",
    }
    services["grafana"] = {
        "image": source.image("grafana"),
        "environment": {
            "GF_SECURITY_ADMIN_PASSWORD": _secret_ref("GRAFANA_ADMIN_PASSWORD"),
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
        },
        "volumes": [
            "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
            "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro",
            "grafana-data:/var/lib/grafana",
        ],
        "ports": [f"{infra['grafana'].get('bind', '0.0.0.0')}:{infra['grafana']['port']}:3000"],
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
        "healthcheck": _compose_healthcheck(["CMD", "wget", "-qO-", "http://localhost:3000/api/health"], start_period="60s"),
        "restart": "unless-stopped",
    }
    volumes = {name: {} for name in ("kafka-data", "qdrant-data", "prometheus-data", "grafana-data")}
    for name in PIPELINE_SERVICES:
        services[name] = _compose_service(source, name)
        if source.services[name].get("data"):
            volumes[f"{name}-data"] = {}
    return {
        "name": "openlfr",
        "services": services,
        "volumes": volumes,
        "secrets": kafka_deploy.compose_secrets(security["credentials_dir"]),
    }


def _secret_ref(var: str) -> str:
    return f"${{{var}:?set {var} in {SECRETS_FILE} (from secrets.env.example) and pass --env-file {SECRETS_FILE}}}"


def _compose_service(source: Source, name: str) -> dict[str, Any]:
    svc = source.services[name]
    common = source.raw["common"]
    env = source.env(name, "compose")
    for var in svc.get("secrets", []):
        env[var] = _secret_ref(var)
    for var, default in svc.get("site", {}).items():
        env[var] = f"${{{var}:-{default}}}"
    env.update(kafka_deploy.compose_service_env(name))
    uid = source.k8s["run_as_user"]
    depends: dict[str, Any] = {"topic-init": {"condition": "service_completed_successfully"}}
    for peer in svc.get("calls", []):
        if peer == "triton":
            depends["triton"] = {"condition": "service_healthy", "required": False}
            depends["triton-gpu"] = {"condition": "service_healthy", "required": False}
        elif peer != "kafka":
            depends[peer] = {"condition": "service_healthy"}
    entry: dict[str, Any] = {
        "image": source.image(common["image"]),
        "build": {"context": ".", "target": "runtime"},
        "command": svc["command"],
        "environment": env,
        "user": f"{uid}:{uid}",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "stop_grace_period": f"{common['termination_grace_s']}s",
        "depends_on": depends,
        "secrets": kafka_deploy.compose_service_secrets(name),
        "healthcheck": _compose_healthcheck(_http_check(f"http://127.0.0.1:{common['port']}/readyz"), start_period="300s"),
        "restart": "unless-stopped",
    }
    volumes = list(svc.get("compose", {}).get("volumes", []))
    if svc.get("data"):
        volumes.insert(0, f"{name}-data:/data")
    if volumes:
        entry["volumes"] = volumes
    if svc.get("api"):
        entry["ports"] = [f"{svc['host_port']}:{common['port']}"]
    return entry


def render(source: Source) -> dict[Path, str]:
    """Every generated file and its text."""
    files: dict[Path, str] = {}
    project = compose(source)
    files[LOCAL_OVERRIDE] = dump(
        [render_local.local_override(project)],
        comment=render_local.HEADER,
    )
    files[COMPOSE_FILE] = dump(
        [project],
        comment=(
            "OpenLFR on one machine. Secrets and per-site choices: deploy/compose/secrets.env\n"
            "(copy secrets.env.example). The Triton profile comes from COMPOSE_PROFILES there (cpu)\n"
            "or --profile gpu. Start: docker compose --env-file deploy/compose/secrets.env up -d --build\n"
            "(docs/operations.md)."
        ),
    )
    base: dict[str, list[dict[str, Any]]] = {"namespace.yaml": [namespace(source)], "site-config.yaml": [site_config(source)]}
    for name in PIPELINE_SERVICES:
        base[f"{name}.yaml"] = k8s_service(source, name)
    base["triton.yaml"] = k8s_triton(source)
    base["qdrant.yaml"] = k8s_qdrant(source)
    base["kafka-topics.yaml"] = k8s_topics(source)
    base["kafka-users.yaml"] = kafka_deploy.k8s_kafka_users(
        cluster=source.k8s["kafka_cluster"], labels={"app.kubernetes.io/part-of": PART_OF}
    )
    base["network-policies.yaml"] = network_policies(source)
    base["prometheus-rule.yaml"] = [prometheus_rule(source)]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": source.k8s["namespace"],
        "resources": list(base),
    }
    for filename, docs in base.items():
        files[K8S_BASE / filename] = dump(docs)
    files[K8S_BASE / "kustomization.yaml"] = dump([kustomization])
    for name, doc in overlays(source).items():
        files[K8S_OVERLAYS / name / "kustomization.yaml"] = dump([doc])
    port = source.infra["kafka"]["port"]
    properties = kafka_deploy.compose_server_properties(port=port, controller_port=port + 1)
    files[KAFKA_PROPERTIES] = HEADER + "".join(f"{key}={value}\n" for key, value in properties.items())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 naming the files that differ")
    args = parser.parse_args(argv)
    files = render(Source.load())
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"stale: {path.relative_to(REPO)} (run .venv/bin/python deploy/render.py)\n")
        return 1 if stale else 0
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
    known = {path.name for path in files if path.parent == K8S_BASE}
    for old in K8S_BASE.glob("*.yaml"):
        if old.name not in known:
            old.unlink()
    for path in stale:
        path.write_text(files[path])
        sys.stdout.write(f"wrote {path.relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
