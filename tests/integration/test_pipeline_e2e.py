"""The whole pipeline as separate processes over the real broker.

detect, embed, match and alert run as their own services (``openlfr service NAME``), the
watchlist is enrolled with ``openlfr watchlist enroll`` into Qdrant's local mode, and
``openlfr run --bus kafka`` plays the ingest service on the sample walk-by video. The video
holds two enrolled people and one stranger: exactly one alert each for the enrolled, none for
the stranger, also when the match service is killed with SIGKILL mid-stream and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from openlfr.inference.triton_server import free_port
from openlfr.kafka.replay import read_topic
from openlfr.messages.models import Alert
from openlfr.pipeline.samples import Samples, build_samples
from openlfr.testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

STAGES = ("detect", "embed", "match", "alert")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def samples(analyzer, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Samples:
    def locate(image: np.ndarray) -> np.ndarray:
        faces = analyzer.analyze(image)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    return build_samples(faces_dir, tmp_path_factory.mktemp("samples"), locate=locate)


class Pipeline:
    """Four stage services with their own topics (a unique prefix) and Qdrant directory."""

    def __init__(self, broker: KafkaBroker, samples: Samples, work: Path) -> None:
        self.work = work
        self.samples = samples
        self.env = {
            **os.environ,
            "OPENLFR_BOOTSTRAP": broker.bootstrap,
            "OPENLFR_TOPIC_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}.",
            "OPENLFR_BATCH_SIZE": "4",
            "OPENLFR_SESSION_TIMEOUT_S": "6",
            "OPENLFR_MAX_FRAME_AGE_S": "3600",  # the video is fed faster than real time
            "OPENLFR_MATCH_WATCHLIST_IDS": '["default"]',
            "OPENLFR_QDRANT_PATH": str(work / "qdrant"),
            "OPENLFR_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        self.services: dict[str, Service] = {}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "openlfr.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, name: str) -> Service:
        port = free_port()
        log = self.work / f"{name}-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "openlfr.cli", "service", name],
            env={**self.env, "OPENLFR_HTTP_PORT": str(port), "OPENLFR_HTTP_HOST": "127.0.0.1"},
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        service = Service(name, proc, port, log)
        self.services[name] = service
        return service

    def wait_ready(self, service: Service, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                pytest.fail(f"{service.name} exited {service.proc.returncode}:\n{service.log.read_text()[-3000:]}")
            try:
                if service.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{service.name} not ready in {timeout}s:\n{service.log.read_text()[-3000:]}")

    def alerts(self, broker: KafkaBroker) -> list[Alert]:
        return read_topic(broker.bootstrap, self.env["OPENLFR_TOPIC_PREFIX"] + "openlfr.alerts.v1", Alert)

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        for name, service in self.services.items():
            try:
                codes[name] = service.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                codes[name] = None
        return codes


@pytest.fixture
def pipeline(kafka_broker: KafkaBroker, samples: Samples, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker, samples, tmp_path)
    enrolled = p.cli("watchlist", "enroll", str(samples.watchlist), "--qdrant-path", str(tmp_path / "qdrant"))
    assert enrolled.returncode == 0, enrolled.stderr
    yield p
    for service in p.services.values():
        if service.proc.poll() is None:
            service.proc.kill()


def _run_ingest(p: Pipeline, broker: KafkaBroker) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "openlfr.cli", "run", "--bus", "kafka", "--bootstrap", broker.bootstrap,
         "--source", str(p.samples.video), "--camera-id", "cam-e2e", "--json", "--settle-s", "25",
         "--timeout-s", "400"],
        env=p.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_services_over_kafka_alert_once_per_enrolled_person(pipeline: Pipeline, kafka_broker: KafkaBroker) -> None:
    for name in STAGES:
        pipeline.start(name)
    for service in pipeline.services.values():
        pipeline.wait_ready(service)
        assert service.get("/healthz")[0] == 200
    run = _run_ingest(pipeline, kafka_broker)
    out, err = run.communicate(timeout=450)
    assert run.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert sorted(a["subject_id"] for a in printed) == sorted(pipeline.samples.expected_subjects), err
    assert all(a["camera_id"] == "cam-e2e" and 0 < a["score"] <= 1 for a in printed)
    # The pipeline's own counters saw every stage work, and nothing went to the dead letters.
    assert pipeline.services["detect"].metric('openlfr_stage_messages_in_total{stage="detect"') >= 40
    assert pipeline.services["alert"].metric('openlfr_stage_messages_out_total{stage="alert"') == 2
    assert sum(s.metric("openlfr_stage_messages_dead_lettered_total") for s in pipeline.services.values()) == 0
    codes = pipeline.stop_all()
    assert codes == {name: 0 for name in STAGES}, codes  # SIGTERM: finish, commit, exit 0


def test_kill_minus_9_of_match_loses_nothing_and_duplicates_no_alert(
    pipeline: Pipeline, kafka_broker: KafkaBroker
) -> None:
    for name in STAGES:
        pipeline.wait_ready(pipeline.start(name))
    run = _run_ingest(pipeline, kafka_broker)
    match = pipeline.services["match"]
    deadline = time.monotonic() + 300
    while match.metric('openlfr_stage_messages_in_total{stage="match"') < 12:
        assert time.monotonic() < deadline, "match never got going"
        assert run.poll() is None or run.returncode == 0
        time.sleep(0.2)
    match.proc.send_signal(signal.SIGKILL)
    match.proc.wait(timeout=10)
    restarted = pipeline.start("match")
    pipeline.wait_ready(restarted)
    out, err = run.communicate(timeout=450)
    assert run.returncode == 0, err
    alerts = pipeline.alerts(kafka_broker)
    subjects = sorted(a.subject_id for a in alerts)
    assert subjects == sorted(pipeline.samples.expected_subjects), (subjects, err, restarted.log.read_text()[-2000:])
    assert len({a.alert_id for a in alerts}) == len(alerts)
    pipeline.stop_all()
