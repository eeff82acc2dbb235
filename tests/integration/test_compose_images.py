"""The stack as an operator starts it: the images built here (scripts/images.sh), started by the
real Compose v2 binary over podman's Docker-compatible API (scripts/podman-api.sh), from
docker-compose.yml with the local override (deploy/compose/local.yml).

One test, in order: every service healthy, Triton (the image of the Dockerfile's triton-cpu
target: the nvidia-pytriton wheel's server) included; the sample watchlist enrolled and a
deployment authorised through the registry API; the sample walk-by video played once by the
ingest container; the match container killed (SIGKILL) mid-stream and started again; exactly one
alert per enrolled person on the alerts topic and in the review API; the detector and the
embedder run on Triton (its own counters of successful requests); `compose down` leaves no
container, volume or network of the project. Needs root, podman, runc and debootstrap (scripts/test-deps.sh)
and the network to Debian and PyPI for a cold image build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from openlfr import paths
from openlfr.pipeline.samples import Samples, build_samples
from openlfr.testing.stack import ServiceStack, demo_cohort

pytestmark = pytest.mark.integration

REPO = paths.REPO_ROOT
COMPOSE = REPO / "build" / "deploy-tools" / "bin" / "docker-compose"
WORK = REPO / "build" / "images" / "e2e"
CAMERA = "cam-demo"  # the compose file's default camera
SERVICES = ("kafka-users", "topic-init", "detect", "embed", "match", "alert", "prometheus")
HEALTHY = ("kafka", "triton", "detect", "embed", "match", "alert", "prometheus")

# Run inside the network (the broker advertises kafka:9092) as openlfr-admin, from the image.
_READ_ALERTS = """
import json
from pathlib import Path
from pydantic import SecretStr
from openlfr.kafka.replay import read_topic
from openlfr.kafka.security import KafkaConnection
from openlfr.messages.models import Alert
password = Path("/run/secrets/kafka-password-openlfr-admin").read_text().split()[0]
admin = KafkaConnection(bootstrap="kafka:9092", security_protocol="SASL_SSL", username="openlfr-admin",
                        password=SecretStr(password), ca_file=Path("/run/secrets/kafka-ca"))
for alert in read_topic(admin, "openlfr.alerts.v1", Alert):
    print(json.dumps({"alert_id": alert.alert_id, "subject_id": alert.subject_id, "camera_id": alert.camera_id}))
"""


def _run(*args: str, timeout: float, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])}... exited {out.returncode}:\n{(out.stdout + out.stderr)[-4000:]}")
    return out


@dataclass
class Stack:
    """One compose project on the local images."""

    project: str
    env_file: Path
    override: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = ("-f", "docker-compose.yml", "-f", "deploy/compose/local.yml", "-f", str(self.override))
        return _run(str(COMPOSE), "-p", self.project, *files, "--env-file", str(self.env_file), *args,
                    timeout=timeout, env=self.env, check=check)

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run("podman", *args, timeout=timeout, env=self.env, check=False)

    def health(self) -> dict[str, str]:
        """Each running service's health (``healthy``, ``starting``, ...; ``""`` without a check)."""
        out = self.compose("ps", "--format", "json")
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return {row["Service"]: row.get("Health", "") for row in rows}

    def url(self, service: str) -> str:
        out = self.compose("port", service, "8080")
        return "http://" + out.stdout.strip().replace("0.0.0.0", "127.0.0.1")

    def alerts(self) -> list[dict]:
        out = self.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python", "kafka-users", "-c", _READ_ALERTS,
                           timeout=180)
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    def containers(self) -> list[str]:
        out = self.podman("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                          "--format", "{{.Names}}")
        return out.stdout.split()


def _wait(stack: Stack, predicate, *, timeout_s: float, what: str, poll_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = stack.compose("logs", "--no-color", "--tail", "15", check=False)
            pytest.fail(f"{what}: not within {timeout_s:.0f}s; the services' last lines:\n{logs.stdout[-8000:]}")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def samples(analyzer, faces_dir: Path) -> Samples:
    def locate(image: np.ndarray) -> np.ndarray:
        faces = analyzer.analyze(image)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    out = WORK / "samples"
    shutil.rmtree(out, ignore_errors=True)
    built = build_samples(faces_dir, out, locate=locate)
    # The containers' user (10001) reads them through a bind mount.
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return built


@pytest.fixture(scope="module")
def stack(samples: Samples) -> Iterator[Stack]:
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/test-deps.sh installs it)")
    if not COMPOSE.is_file():
        pytest.fail(f"no compose binary at {COMPOSE} (scripts/deploy-tools.sh)")
    _run("scripts/images.sh", timeout=3600)
    _run("scripts/compose-kafka-credentials.sh", timeout=120)
    demo_cohort()  # ./build/cohort/default.npz, which the match service mounts
    pid_file = REPO / "build" / "podman" / "service.pid"
    api_was_up = pid_file.is_file() and Path(f"/proc/{pid_file.read_text().strip()}").exists()
    api = _run("scripts/podman-api.sh", "start", timeout=60)
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "podman" / "containers.conf"),
           "DOCKER_HOST": api.stdout.split("DOCKER_HOST=")[1].split()[0]}
    # Tokens, signing key: ServiceStack's (the same roles the integration tests use).
    keys = ServiceStack("unused:9092", WORK / "keys")
    project = f"openlfr-e2e-{uuid.uuid4().hex[:6]}"
    env_file = WORK / f"{project}.env"
    env_file.write_text(
        f"OPENLFR_API_TOKENS='{keys.env['OPENLFR_API_TOKENS']}'\n"
        f"OPENLFR_REVIEW_REGISTRY_TOKEN={keys.tokens['alert-service']}\n"
        f"OPENLFR_DEPLOYMENTS_TOKEN={keys.tokens['ingest-service']}\n"
        f"OPENLFR_MATCH_SIGNING_KEY={keys.env['OPENLFR_MATCH_SIGNING_KEY']}\n"
        "OPENLFR_QDRANT_API_KEY=unused-by-the-local-stack\nGRAFANA_ADMIN_PASSWORD=unused-by-the-local-stack\n"
        f"OPENLFR_CAMERAS={CAMERA}=/data/samples/{samples.video.name}\nOPENLFR_LOOP_FILES=false\n"
    )
    env_file.chmod(0o600)
    # This run's own: the samples, ports the machine has free, and no restart of an ingest that
    # has played its file.
    override = WORK / f"{project}.override.yml"
    override.write_text(
        "services:\n"
        "  ingest:\n"
        "    restart: 'no'\n"
        f"    volumes: !override ['{samples.video.parent}:/data/samples:ro']\n"
        "  match:\n    ports: !override ['127.0.0.1::8080']\n"
        "  alert:\n    ports: !override ['127.0.0.1::8080']\n"
        "  prometheus:\n    ports: !override ['127.0.0.1::9090']\n"
        "  triton:\n    ports: !override ['127.0.0.1::8002']\n"
    )
    s = Stack(project=project, env_file=env_file, override=override, env=env, tokens=keys.tokens)
    try:
        yield s
    finally:
        if s.containers():
            s.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", check=False)
        env_file.unlink(missing_ok=True)
        override.unlink(missing_ok=True)
        if not api_was_up:  # the API and its ticker as the test found them
            _run("scripts/podman-api.sh", "stop", timeout=60, check=False)


def test_compose_stack_from_the_images_alerts_once_per_enrolled_person(stack: Stack, samples: Samples) -> None:
    started = time.monotonic()
    volumes_before = set(stack.podman("volume", "ls", "-q").stdout.split())
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "480", *SERVICES, timeout=600)
    health = stack.health()
    assert {name: health.get(name) for name in HEALTHY} == {name: "healthy" for name in HEALTHY}, health
    for service in ("match", "alert"):
        assert httpx.get(stack.url(service) + "/healthz", timeout=10).status_code == 200

    # The watchlist and a deployment for the camera, through the registry API.
    registry = ServiceStack("unused:9092", WORK / "keys")
    registry.tokens = stack.tokens
    deployment = registry.enrol_and_deploy(samples.watchlist, cameras=[CAMERA], base_url=stack.url("match"))
    assert deployment["snapshot"]["active_subjects"] == len(list(samples.watchlist.iterdir()))

    # The video once, in real time (about 9 s), and match killed as soon as embeddings reach it,
    # then started again (a new container process: its counters start at 0).
    stack.compose("up", "--detach", "--no-deps", "ingest")
    matched = 'openlfr_stage_messages_in_total{stage="match"'
    match_url = stack.url("match")
    _wait(stack, lambda: _metric(match_url, matched) >= 1, timeout_s=300, what="match getting embeddings", poll_s=0.2)
    stack.compose("kill", "--signal", "SIGKILL", "match")
    stack.compose("up", "--detach", "--no-deps", "--wait", "--wait-timeout", "300", "match", timeout=400)
    assert _wait(stack, lambda: _ingest_exit(stack), timeout_s=600, what="ingest playing the video") == "0"

    # Exactly one alert per enrolled person who walks by, none twice: on the topic and in the API.
    def settled() -> list[dict] | None:
        alerts = stack.alerts()
        return alerts if len(alerts) >= len(samples.expected_subjects) else None

    alerts = _wait(stack, settled, timeout_s=300, what="the expected alerts", poll_s=10)
    time.sleep(20)
    alerts = stack.alerts()
    assert sorted(a["subject_id"] for a in alerts) == sorted(samples.expected_subjects), alerts
    assert len({a["alert_id"] for a in alerts}) == len(alerts) and {a["camera_id"] for a in alerts} == {CAMERA}
    review = httpx.get(stack.url("alert") + "/v1/alerts", params={"camera_id": CAMERA, "limit": 100},
                       headers={"Authorization": f"Bearer {stack.tokens['reviewer-a']}"}, timeout=30)
    assert review.status_code == 200, review.text
    assert sorted(item["alert_id"] for item in review.json()["items"]) == sorted(a["alert_id"] for a in alerts)
    # The kill was mid-stream: the restarted match had embeddings left to consume.
    assert _metric(stack.url("match"), matched) > 0
    # Prometheus (Debian's, in its image) scrapes the services and Triton by their compose names.
    prometheus = "http://" + stack.compose("port", "prometheus", "9090").stdout.strip().replace("0.0.0.0", "127.0.0.1")
    up = httpx.get(prometheus + "/api/v1/query", params={"query": 'up{job=~"match|alert|triton"}'}, timeout=30).json()
    assert sorted((r["metric"]["job"], r["value"][1]) for r in up["data"]["result"]) == [
        ("alert", "1"), ("match", "1"), ("triton", "1")], up
    # The models ran on Triton, not in the services' processes: Triton's own count of the
    # requests it answered, per model (the detector's two models share the work).
    triton = "http://" + stack.compose("port", "triton", "8002").stdout.strip().replace("0.0.0.0", "127.0.0.1")
    served = _triton_successes(triton)
    assert served.get("dlib_resnet_v1", 0) > 0 and served.get("blazeface_full", 0) + served.get("blazeface_short", 0) > 0, served

    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "60")
    assert stack.containers() == []
    volumes = stack.podman("volume", "ls", "--filter", f"label=com.docker.compose.project={stack.project}", "-q")
    networks = stack.podman("network", "ls", "--filter", f"label=com.docker.compose.project={stack.project}", "-q")
    assert volumes.stdout.split() == [] and networks.stdout.split() == []
    # Nor an anonymous volume (the image's VOLUME /data, under the services without a named one).
    assert set(stack.podman("volume", "ls", "-q").stdout.split()) <= volumes_before
    print(f"compose e2e: {time.monotonic() - started:.0f}s from up to down")


def _metric(base_url: str, prefix: str) -> float:
    try:
        text = httpx.get(base_url + "/metrics", timeout=10, follow_redirects=True).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _triton_successes(base_url: str) -> dict[str, float]:
    """Triton's ``nv_inference_request_success`` per model."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    found = re.findall(r'^nv_inference_request_success\{model="([^"]+)",version="[^"]*"\} (\S+)$', text, re.M)
    return {model: float(value) for model, value in found}


def _ingest_exit(stack: Stack) -> str | None:
    """The ingest container's exit code once it has exited."""
    out = stack.compose("ps", "--all", "--format", "json", "ingest")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(rows) == 1 and rows[0]["State"] == "exited":
        return str(rows[0]["ExitCode"])
    return None
