"""docker-compose.yml checked by the real Compose v2 binary (`config -q`), offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLE_ENV = "deploy/compose/secrets.env.example"
#: Jobs that run once per `up`: the Kafka users and ACLs, then the topics.
ONE_SHOT = {"kafka-users", "topic-init"}


def _config(kit: Any, *args: str | Path, env_file: str | None = EXAMPLE_ENV) -> Any:
    cmd: list[str | Path] = [kit.tool("docker-compose")]
    if env_file:
        cmd += ["--env-file", env_file]
    return kit.run([*cmd, *args], check=False)


def test_compose_file_is_valid(kit: Any) -> None:
    proc = _config(kit, "config", "-q")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("condition: service_healthy", "conditon: service_healthy", "conditon"),  # a typo'd key
        ("read_only: true", "read_only: maybe", "read_only"),  # a wrong type
        ("restart: unless-stopped", "restart: unless-stoped\n    healthcheck: 5", "healthcheck"),
    ],
)
def test_a_broken_copy_fails(kit: Any, tmp_path: Path, old: str, new: str, error: str) -> None:
    text = (kit.repo / "docker-compose.yml").read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    proc = _config(kit, "-f", broken, "--project-directory", kit.repo, "config", "-q")
    assert proc.returncode != 0 and error in proc.stderr, proc.stderr


def test_missing_secrets_stop_compose_with_the_file_to_fill(kit: Any) -> None:
    proc = _config(kit, "config", "-q", env_file=None)
    assert proc.returncode != 0
    assert "deploy/compose/secrets.env" in proc.stderr


@pytest.mark.parametrize(
    ("profile", "triton"), [(None, "triton"), ("gpu", "triton-gpu"), ("cpu", "triton")]
)
def test_profiles_pick_one_triton(kit: Any, profile: str | None, triton: str) -> None:
    args = ["--profile", profile] if profile else []
    proc = _config(kit, *args, "config", "--services")
    services = set(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr
    assert {"triton", "triton-gpu"} & services == {triton}
    assert {"kafka", "topic-init", "qdrant", "prometheus", "grafana", "ingest", "detect", "embed", "match", "alert"} <= services


def test_every_long_running_service_has_a_healthcheck_and_waits_on_health(kit: Any) -> None:
    proc = _config(kit, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    import json

    services: dict[str, dict[str, Any]] = json.loads(proc.stdout)["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == expected, f"{name} -> {dep}"


def test_pipeline_services_run_locked_down(kit: Any) -> None:
    services = yaml.safe_load((kit.repo / "docker-compose.yml").read_text())["services"]
    for name in ("ingest", "detect", "embed", "match", "alert"):
        svc = services[name]
        assert svc["read_only"] is True and svc["user"] != "0" and svc["cap_drop"] == ["ALL"], name
        assert "topic-init" in svc["depends_on"], name
        for key, value in svc["environment"].items():
            if key in {"OPENLFR_API_TOKENS", "OPENLFR_QDRANT_API_KEY", "OPENLFR_REVIEW_REGISTRY_TOKEN", "OPENLFR_DEPLOYMENTS_TOKEN"}:
                assert value.startswith("${") and ":?" in value, f"{name} {key}: credentials come from the env file"
    # Each writer of the audit log has its own file (flock is per file; `openlfr audit verify` too).
    assert services["match"]["environment"]["OPENLFR_AUDIT_LOG"] != services["alert"]["environment"]["OPENLFR_AUDIT_LOG"]


def test_the_real_secrets_file_is_ignored_by_git(kit: Any) -> None:
    proc = kit.run(["git", "check-ignore", "deploy/compose/secrets.env", "deploy/k8s/secrets/credentials.env"], check=False)
    assert proc.stdout.split() == ["deploy/compose/secrets.env", "deploy/k8s/secrets/credentials.env"]


def test_kafka_takes_only_authenticated_tls_clients_and_each_service_is_its_own_user(kit: Any) -> None:
    compose = yaml.safe_load((kit.repo / "docker-compose.yml").read_text())
    properties = dict(
        line.split("=", 1) for line in (kit.repo / "deploy/compose/kafka/server.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert properties["listeners"] == "SASL_SSL://:9092,CONTROLLER://:9093"
    assert properties["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert properties["listener.name.controller.ssl.client.auth"] == "required"
    assert properties["allow.everyone.if.no.acl.found"] == "false" and "StandardAuthorizer" in properties["authorizer.class.name"]
    assert not any("password" in value for value in properties.values())  # added at start, from a secret
    secrets = compose["secrets"]
    assert all(spec["file"].startswith("./deploy/compose/kafka-credentials/") for spec in secrets.values())
    for name in ("ingest", "detect", "embed", "match", "alert"):
        svc = compose["services"][name]
        env = svc["environment"]
        assert env["OPENLFR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["OPENLFR_KAFKA_USERNAME"] == f"openlfr-{name}"
        # Its own password and the CA, nobody else's.
        assert svc["secrets"] == ["kafka-ca", f"kafka-password-openlfr-{name}"], name
        assert env["OPENLFR_KAFKA_PASSWORD_FILE"] == f"/run/secrets/kafka-password-openlfr-{name}"
    assert compose["services"]["topic-init"]["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"
    proc = kit.run(["git", "check-ignore", "deploy/compose/kafka-credentials/openlfr-admin.password"], check=False)
    assert proc.returncode == 0, "the compose Kafka credentials must be git-ignored"


def test_unauthenticated_monitoring_is_published_on_loopback_only() -> None:
    """Prometheus and Grafana have no authentication here: the host's loopback, not every interface."""
    import yaml

    from openlfr import paths

    compose = yaml.safe_load((paths.REPO_ROOT / "docker-compose.yml").read_text())
    for name in ("prometheus", "grafana"):
        ports = compose["services"][name]["ports"]
        assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), (name, ports)


def test_every_broker_image_runs_the_kafka_version_the_tests_run() -> None:
    """The tests' broker runs the jars of deploy/kafka/pom.xml's <kafka.version>; compose (both
    files) and services.yaml name a broker image of that version, so a bump of one shows here."""
    import re

    from openlfr import paths

    pom = (paths.REPO_ROOT / "deploy/kafka/pom.xml").read_text()
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert found, "deploy/kafka/pom.xml names no <kafka.version>"
    version = found.group(1)
    named: dict[str, list[str]] = {}
    for listed in ("docker-compose.yml", "deploy/compose/local.yml", "deploy/services.yaml"):
        text = (paths.REPO_ROOT / listed).read_text()
        named[listed] = re.findall(r"\b(?:openlfr/kafka|apache/kafka|bitnami/kafka|confluentinc/cp-kafka):(\S+)", text)
    assert all(named.values()), named  # each file names the broker image
    assert all(tag == version for tags in named.values() for tag in tags), (version, named)
