"""The whole pipeline as separate processes over the real broker.

detect, embed, match and alert run as their own services (``openlfr service NAME``), the
watchlist is enrolled through the match service's registry API and a deployment authorises
matching on the test camera (``openlfr.testing.stack``), and
``openlfr run --bus kafka`` plays the ingest service on the sample walk-by video. The video
holds two enrolled people and one stranger: exactly one alert each for the enrolled, none for
the stranger, also when the match service is killed with SIGKILL mid-stream and restarted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.kafka.replay import group_caught_up, read_topic
from openlfr.messages.models import Alert, DeadLetter, Frame
from openlfr.messages.models import Faces as FacesMessage
from openlfr.pipeline.samples import Samples
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceProcess, ServiceStack, StackError

pytestmark = pytest.mark.integration

STAGES = ("detect", "embed", "match", "alert")


class Pipeline(ServiceStack):
    """The stack with the sample video and watchlist."""

    samples: Samples
    deployment: dict

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "openlfr.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start_stages(self) -> None:
        """The four consuming services, ready, with the sample watchlist enrolled and a
        deployment authorising matching on ``cam-e2e``."""
        try:
            self.start_ready(*STAGES)
            self.deployment = self.enrol_and_deploy(self.samples.watchlist, cameras=["cam-e2e"])
        except StackError as exc:
            pytest.fail(str(exc))

    def wait_ready(self, service: ServiceProcess, timeout_s: float = 180) -> None:
        try:
            super().wait_ready(service, timeout_s)
        except StackError as exc:
            pytest.fail(str(exc))


@pytest.fixture
def pipeline(kafka_broker: KafkaBroker, samples: Samples, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker.bootstrap, tmp_path)
    p.samples = samples
    yield p
    p.kill_all()


def _run_ingest(p: Pipeline, broker: KafkaBroker) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "openlfr.cli", "run", "--bus", "kafka", "--bootstrap", broker.bootstrap,
         "--source", str(p.samples.video), "--camera-id", "cam-e2e", "--json", "--settle-s", "25",
         "--timeout-s", "400"],
        env=p.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_alerts(p: Pipeline, broker: KafkaBroker, n: int, *, settle_s: float = 20, timeout_s: float = 400) -> list[Alert]:
    """Alerts on the topic once ``n`` have arrived and no more came for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    seen: list[Alert] = []
    changed = time.monotonic()
    while time.monotonic() < deadline:
        alerts = p.alerts()
        if len(alerts) != len(seen):
            seen, changed = alerts, time.monotonic()
        if len(seen) >= n and time.monotonic() - changed >= settle_s:
            return seen
        time.sleep(1)
    return seen


def test_five_services_over_kafka_alert_once_per_enrolled_person(pipeline: Pipeline, kafka_broker: KafkaBroker) -> None:
    from confluent_kafka import Producer

    pipeline.start_stages()
    for service in pipeline.services.values():
        assert service.get("/healthz")[0] == 200
    frames_topic = pipeline.env["OPENLFR_TOPIC_PREFIX"] + "openlfr.frames.v1"
    poison = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    poison.produce(frames_topic, key=b"cam-e2e", value=b'{"v": 1, "kind": "frame", "jpeg": "not base64!"}')
    assert poison.flush(10) == 0
    pipeline.env.update({"OPENLFR_CAMERAS": f"cam-e2e={pipeline.samples.video}", "OPENLFR_FILE_MODE": "batch",
                         "OPENLFR_SAMPLE_FPS": "5"})
    ingest = pipeline.start("ingest")
    assert ingest.proc.wait(timeout=300) == 0, ingest.log.read_text()[-2000:]  # the file ended
    alerts = _wait_for_alerts(pipeline, kafka_broker, len(pipeline.samples.expected_subjects))
    assert sorted(a.subject_id for a in alerts) == sorted(pipeline.samples.expected_subjects)
    assert {a.camera_id for a in alerts} == {"cam-e2e"} and all(0 < a.score <= 1 for a in alerts)
    # Decided on each subject's own threshold: the normalised one the registry calibrated for the
    # snapshot's size at the default target, on the cohort the match service loaded.
    point = pipeline.deployment["operating_point"]
    assert pipeline.deployment["threshold_mode"] == "per_subject" and point["target_fpir"] == pytest.approx(1 / 6000)
    assert point["watchlist_size"] == pipeline.deployment["snapshot"]["active_subjects"] == 3  # kit never walks by
    for alert in alerts:
        assert alert.cohort == point["cohort"] and alert.normalised_threshold == point["normalised_threshold"]
        assert alert.normalised_score >= alert.normalised_threshold and alert.score >= alert.threshold == 0.705
        # The probe face in its scene (scene crops are on by default): a JPEG at most 320 px on its
        # long side, larger than the 150 px chip.
        scene = cv2.imdecode(np.frombuffer(alert.scene_jpeg or b"", np.uint8), cv2.IMREAD_COLOR)
        assert scene is not None and 150 < max(scene.shape[:2]) <= 320, alert.alert_id
    # The poison frame went to the dead letters with its reason and origin; the rest flowed.
    dead = read_topic(kafka_broker.bootstrap, pipeline.env["OPENLFR_TOPIC_PREFIX"] + "openlfr.deadletter.v1", DeadLetter)
    assert len(dead) == 1 and dead[0].stage == "detect" and dead[0].topic == frames_topic
    assert "invalid Frame" in dead[0].reason
    assert pipeline.services["detect"].metric('openlfr_stage_messages_in_total{stage="detect"') >= 40
    assert pipeline.services["alert"].metric('openlfr_stage_messages_out_total{stage="alert"') == 2
    codes = pipeline.stop_all()
    assert codes == {name: 0 for name in (*STAGES, "ingest")}, codes  # SIGTERM: finish, commit, exit 0


def test_run_bus_kafka_prints_the_alerts_of_the_services(pipeline: Pipeline, kafka_broker: KafkaBroker) -> None:
    pipeline.start_stages()
    run = _run_ingest(pipeline, kafka_broker)
    out, err = run.communicate(timeout=450)
    assert run.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert sorted(a["subject_id"] for a in printed) == sorted(pipeline.samples.expected_subjects), err
    assert all(len(a["alert_id"]) == 32 and a["camera_id"] == "cam-e2e" and a["capture_ts"] > 0 for a in printed)
    point = pipeline.deployment["operating_point"]
    assert all(a["cohort"] == point["cohort"] and a["normalised_score"] >= a["normalised_threshold"] for a in printed)
    pipeline.stop_all()


@pytest.mark.parametrize("victim", ["detect", "embed", "match"])
def test_kill_minus_9_mid_stream_loses_nothing_and_duplicates_no_alert(
    pipeline: Pipeline, kafka_broker: KafkaBroker, victim: str
) -> None:
    pipeline.start_stages()
    run = _run_ingest(pipeline, kafka_broker)
    service = pipeline.services[victim]
    deadline = time.monotonic() + 300
    while service.metric(f'openlfr_stage_messages_in_total{{stage="{victim}"') < 12:
        assert time.monotonic() < deadline, f"{victim} never got going"
        assert run.poll() is None or run.returncode == 0
        time.sleep(0.2)
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait(timeout=10)
    restarted = pipeline.start(victim, port=service.port)  # the same address, as behind a service name
    pipeline.wait_ready(restarted)
    out, err = run.communicate(timeout=450)
    assert run.returncode == 0, err
    alerts = pipeline.alerts()
    subjects = sorted(a.subject_id for a in alerts)
    assert subjects == sorted(pipeline.samples.expected_subjects), (subjects, err, restarted.log.read_text()[-2000:])
    assert len({a.alert_id for a in alerts}) == len(alerts)
    pipeline.stop_all()


def test_two_detect_replicas_share_partitions_and_process_each_frame_once(
    pipeline: Pipeline, kafka_broker: KafkaBroker
) -> None:
    """Six cameras, chosen so that their keys land on all six partitions of the frames topic
    (librdkafka's default partitioner: CRC-32 of the key), so both replicas of one group get
    work whatever the assignor; every frame with a face yields exactly one faces message."""
    first, second = pipeline.start("detect"), pipeline.start("detect")
    pipeline.wait_ready(first)
    pipeline.wait_ready(second)
    by_partition: dict[int, str] = {}
    for i in range(1000):
        by_partition.setdefault(zlib.crc32(f"door-{i}".encode()) % 6, f"door-{i}")
        if len(by_partition) == 6:
            break
    cameras = ";".join(f"{camera}={pipeline.samples.video}" for camera in by_partition.values())
    pipeline.env.update({"OPENLFR_CAMERAS": cameras, "OPENLFR_FILE_MODE": "batch", "OPENLFR_SAMPLE_FPS": "2"})
    ingest = pipeline.start("ingest")
    assert ingest.proc.wait(timeout=300) == 0, ingest.log.read_text()[-2000:]
    prefix = pipeline.env["OPENLFR_TOPIC_PREFIX"]
    frames = read_topic(kafka_broker.bootstrap, prefix + "openlfr.frames.v1", Frame)
    deadline = time.monotonic() + 300
    while True:
        handled = sum(s.metric('openlfr_stage_messages_in_total{stage="detect"') for s in (first, second))
        if handled >= len(frames) or time.monotonic() > deadline:
            break
        time.sleep(1)
    while not group_caught_up(kafka_broker.bootstrap, "openlfr-detect", prefix + "openlfr.frames.v1"):
        assert time.monotonic() < deadline, "detect took every frame but did not commit them all"
        time.sleep(1)  # committed: every faces message of those frames is acknowledged
    faces = read_topic(kafka_broker.bootstrap, prefix + "openlfr.faces.v1", FacesMessage)
    ids = [f.frame_id for f in faces]
    assert handled == len(frames) >= 6 * 17  # 8.6 s of video at 2 fps, six cameras
    assert len(ids) == len(set(ids)) > 0, "a frame was processed twice"
    per_replica = [s.metric('openlfr_stage_messages_in_total{stage="detect"') for s in (first, second)]
    assert all(n > 0 for n in per_replica), per_replica
    assigned = [json.loads(s.get("/readyz")[1])["checks"]["partitions"]["reason"] for s in (first, second)]
    assert assigned == ["3 assigned", "3 assigned"], assigned
    pipeline.stop_all()


@pytest.mark.parametrize(
    ("service", "env", "named"),
    [
        ("detect", {"OPENLFR_BATCH_SIZE": "0"}, "OPENLFR_BATCH_SIZE"),
        ("detect", {"OPENLFR_SCENE_CROP_SCALE": "0.5"}, "OPENLFR_SCENE_CROP_SCALE"),
        ("detect", {"OPENLFR_SCENE_CROP_MAX_BYTES": "120000", "OPENLFR_FACES_MESSAGE_MAX_BYTES": "250000"},
         "OPENLFR_SCENE_CROP_MAX_BYTES"),
        ("match", {"OPENLFR_MATCH_MIN_VOTES": "0"}, "OPENLFR_MATCH_MIN_VOTES"),
        ("match", {"OPENLFR_REGISTRY_THRESHOLD_FLOOR": "2"}, "OPENLFR_REGISTRY_THRESHOLD_FLOOR"),
        ("match", {"OPENLFR_API_TOKENS": "[]"}, "OPENLFR_API_TOKENS"),
        ("alert", {"OPENLFR_REVIEW_CROP_RETENTION_S": "0"}, "OPENLFR_REVIEW_CROP_RETENTION_S"),
        ("alert", {"OPENLFR_ALERT_COOLDOWN_S": "-1"}, "OPENLFR_ALERT_COOLDOWN_S"),
        ("alert", {"OPENLFR_MATCH_SIGNING_KEY": "too-short", "OPENLFR_REVIEW_REGISTRY_URL": "http://127.0.0.1:9"},
         "OPENLFR_MATCH_SIGNING_KEY"),
        ("match", {"OPENLFR_MATCH_SIGNING_KEY": "CHANGE-ME-8"}, "OPENLFR_MATCH_SIGNING_KEY"),
        ("alert", {"OPENLFR_MAX_CLOCK_SKEW_S": "0"}, "OPENLFR_MAX_CLOCK_SKEW_S"),
        ("alert", {}, "OPENLFR_REVIEW_REGISTRY_URL"),  # the stack names it only when it starts alert
        ("ingest", {"OPENLFR_CAMERAS": "cam-1"}, "OPENLFR_CAMERAS"),
    ],
)
def test_a_service_with_a_bad_setting_exits_non_zero_naming_it(
    pipeline: Pipeline, service: str, env: dict[str, str], named: str
) -> None:
    proc = subprocess.run([sys.executable, "-m", "openlfr.cli", "service", service],
                          env={**pipeline.env, "OPENLFR_CAMERAS": "cam-1=/dev/null", **env},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
