"""Forged matches on the real broker: the alert service raises no alert for them, dead-letters each
with its reason, and keeps alerting genuine matches from every camera, also after a restart.

The match service (with the registry) and the alert service run as processes; a subject is enrolled
from a real photo and a deployment authorised for two cameras. Records are then written straight to
the matches topic, as anyone on the broker's network could: a genuine one signed with the stack's
key, one signed with another key, signed ones naming an unknown subject or a threshold of 0.1, and
one captured 48 hours ahead (a camera clock two days fast).
"""

from __future__ import annotations

import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from confluent_kafka import Producer

from openlfr.messages.codec import encode, headers_for
from openlfr.messages.models import Alert, DeadLetter, Match
from openlfr.messages.signing import MatchSigner
from openlfr.kafka.replay import read_topic
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceProcess, ServiceStack

pytestmark = pytest.mark.integration

PHOTO = Path("face_recognition/examples/knn_examples/train/obama/obama.jpg")
SUBJECT = "obama"
DEPLOYMENT = "dep-trust"
CAMERAS = ["cam-x", "cam-y"]


@pytest.fixture
def stack(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[ServiceStack]:
    s = ServiceStack(kafka_broker.bootstrap, tmp_path / "stack")
    yield s
    s.kill_all()


def _start_alert(stack: ServiceStack) -> ServiceProcess:
    # Cooldown 0: every genuine track alerts, so each one shows the stage still alerts.
    alert = stack.start("alert", OPENLFR_ALERT_COOLDOWN_S="0")
    stack.wait_ready(alert)
    return alert


def _wait(read, n: int, what: str, log: ServiceProcess, timeout_s: float = 120) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = read()
        if len(got) >= n:
            return got
        time.sleep(0.5)
    pytest.fail(f"{n} {what} expected, got {len(read())}:\n{log.log_tail()}")


def test_forged_matches_are_dead_lettered_and_genuine_ones_alert_on_every_camera_also_after_a_restart(
    stack: ServiceStack, faces_dir: Path, tmp_path: Path
) -> None:
    stack.start_ready("match")
    alert = _start_alert(stack)
    watchlist = tmp_path / "watchlist" / SUBJECT
    watchlist.mkdir(parents=True)
    shutil.copyfile(faces_dir / PHOTO, watchlist / PHOTO.name)
    deployment = stack.enrol_and_deploy(watchlist.parent, cameras=CAMERAS, deployment_id=DEPLOYMENT)
    threshold = deployment["threshold"]
    norm = deployment["operating_point"]["normalised_threshold"]
    chip = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(faces_dir / PHOTO)), (150, 150)))[1].tobytes()
    signer = MatchSigner(stack.env["OPENLFR_MATCH_SIGNING_KEY"])

    def match(camera: str, *, key: MatchSigner = signer, ahead_s: float = 0.0, **over: object) -> Match:
        now = time.time()
        track = f"{camera}:{uuid.uuid4().hex[:8]}:0"
        fields: dict[str, object] = dict(
            camera_id=camera, frame_id=f"f-{track}", capture_ts=now - 1 + ahead_s, trace_id=uuid.uuid4().hex,
            track_id=track, subject_id=SUBJECT, watchlist_id="default", score=min(1.0, threshold + 0.05), margin=0.2,
            votes=3, track_frames=5, threshold=threshold, first_seen_ts=now - 2 + ahead_s, probe_chip_jpeg=chip,
            embedder_model="dlib_resnet_v1", deployment_id=DEPLOYMENT, normalised_score=norm + 1.0,
            normalised_threshold=norm, cohort="cohort@test",
        )
        return key.build(**{**fields, **over})

    producer = Producer({"bootstrap.servers": stack.bootstrap})
    matches_topic = stack.prefix + "openlfr.matches.v1"

    def send(*records: Match) -> None:
        for record in records:
            producer.produce(matches_topic, key=record.camera_id.encode(), value=encode(record),
                             headers=headers_for(record))
        assert producer.flush(30) == 0

    def dead_letters() -> list[DeadLetter]:
        return [d for d in read_topic(stack.bootstrap, stack.prefix + "openlfr.deadletter.v1", DeadLetter)
                if d.stage == "alert"]

    genuine = [match("cam-x")]
    forged = {
        "bad_signature": match("cam-x", key=MatchSigner.ephemeral()),
        "unknown_subject": match("cam-x", subject_id="nobody"),
        "below_threshold": match("cam-y", threshold=0.1, score=0.2),
        "clock_ahead": match("cam-x", ahead_s=48 * 3600),
    }
    send(genuine[0], *forged.values())
    genuine += [match("cam-x"), match("cam-y")]  # after the forged ones: both cameras still alert
    send(*genuine[1:])

    alerts = _wait(stack.alerts, 3, "alerts", alert)
    letters = _wait(dead_letters, 4, "dead letters", alert)
    assert sorted(a.track_id for a in alerts) == sorted(m.track_id for m in genuine)
    # Each forged record is in the dead-letter topic (its headers name its frame) with its reason.
    assert {d.headers["frame_id"]: d.reason.split(":")[0] for d in letters} == {
        m.frame_id: reason for reason, m in forged.items()}
    (ahead,) = [d.reason for d in letters if d.reason.startswith("clock_ahead")]
    assert re.search(r"is 1727\d\d\.\d s ahead of the alert stage's clock \(more than OPENLFR_MAX_CLOCK_SKEW_S=300\)",
                     ahead), ahead
    for reason in forged:
        assert alert.metric(f'openlfr_alert_matches_refused_total{{reason="{reason}"}}') == 1.0
    assert alert.metric('openlfr_capture_time_ahead_total{camera_id="cam-x",stage="alert"}') == 1.0

    # Restarted, the alert service rebuilds its state from the alerts topic: both cameras still alert.
    alert.proc.send_signal(signal.SIGTERM)
    assert alert.proc.wait(timeout=60) == 0, alert.log_tail()
    del stack.services["alert"]
    alert = _start_alert(stack)
    after = [match("cam-x"), match("cam-y")]
    send(*after)
    alerts = _wait(stack.alerts, 5, "alerts", alert)
    assert sorted(a.track_id for a in alerts) == sorted(m.track_id for m in genuine + after)
    assert len(dead_letters()) == 4

