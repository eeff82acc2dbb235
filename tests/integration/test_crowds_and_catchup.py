"""Crowds and outages over the real broker, with the services as separate processes
(issue 11, failures 3 and 9).

* A frame of 85 real faces (the shared set's densest crowd photo) through the detect and embed
  services: every face arrives, in parts that each fit the broker's limit, none dropped as
  stale. Before, its one 2.6 MB faces message could not be produced at all.
* The detect service stopped (SIGSTOP) for about 10 s under the production frame-age limits
  (detect 1 s, embed 5 s) while the sample walk-by video plays in real time: when it goes on,
  the backlog is caught up and each enrolled person still gives one alert, which says how late
  it was. Before, every frame older than 1 s was shed and both alerts were lost.
* The broker itself killed (SIGKILL) while the walk-by video plays, and restarted on the same
  ports and data after about 5 s (its start-up adds to the outage, well inside the 30 s lateness
  bound): ingest keeps the frames until it is back, and each enrolled person still gives one
  alert, none twice. With catch-up off (``OPENLFR_CATCHUP_LATENESS_S=0``, the behaviour before
  it) the frames that waited out the outage are shed as stale and the alerts are lost.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from confluent_kafka import Consumer, Producer

from openlfr.messages.codec import decode, encode, headers_for
from openlfr.messages.models import Embeddings, Faces, Frame
from openlfr.pipeline.frame_parts import DEFAULT_MESSAGE_MAX_BYTES
from openlfr.pipeline.samples import Samples
from openlfr.subprocesses import free_port
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceStack, StackError
from openlfr.vision.images import decode_image

pytestmark = pytest.mark.integration

CROWD = "crowd_scenes/linzaer_imgs_27.jpg"
#: The broker's and librdkafka's default message limit.
BROKER_LIMIT = 1_000_000


@pytest.fixture
def stack(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[ServiceStack]:
    s = ServiceStack(kafka_broker.bootstrap, tmp_path)
    s.env.pop("OPENLFR_MAX_FRAME_AGE_S")  # the production limits: detect 1 s, embed 5 s
    yield s
    s.kill_all()


def _all_parts(bootstrap: str, topic: str, model: type, *, timeout_s: float = 240) -> list[tuple[bytes, object]]:
    """The values on ``topic`` (and what they decode to) once every part of the frame is there,
    or what came before the time was up."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    out: list[tuple[bytes, object]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (out and len(out) >= out[0][1].parts):
            for msg in consumer.consume(num_messages=50, timeout=0.5):
                if msg.error() is None:
                    out.append((msg.value(), decode(msg.value(), model)))
    finally:
        consumer.close()
    return out


def test_a_crowd_of_85_faces_gets_through_detect_and_embed_whole(stack: ServiceStack, kafka_broker: KafkaBroker,
                                                                  analyzer, faces_dir: Path) -> None:
    try:
        detect, embed = stack.start_ready("detect", "embed")
    except StackError as exc:
        pytest.fail(str(exc))
    image = cv2.imread(str(faces_dir / CROWD))
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    expected = len(analyzer.locate_many([decode_image(jpeg.tobytes())], keep_chips=False)[0])
    assert expected >= 60
    now = time.time()
    frame = Frame(camera_id="square-1", frame_id="square-1:crowd", capture_ts=now, trace_id=uuid.uuid4().hex,
                  width=image.shape[1], height=image.shape[0], jpeg=jpeg.tobytes(), ingest_ts=now)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(stack.prefix + "openlfr.frames.v1", key=b"square-1", value=encode(frame), headers=headers_for(frame))
    assert producer.flush(10) == 0

    faces = _all_parts(kafka_broker.bootstrap, stack.prefix + "openlfr.faces.v1", Faces)
    assert faces, f"no faces message came out of detect:\n{detect.log_tail()}"
    embeddings = _all_parts(kafka_broker.bootstrap, stack.prefix + "openlfr.embeddings.v1", Embeddings)
    parts = [m for _, m in faces]
    embedded = [m for _, m in embeddings]
    # Every face arrived, once, in parts that each fit under the budget and the broker's limit.
    assert len(parts) == len(embedded) == parts[0].parts >= 2, (detect.log_tail(), embed.log_tail())
    assert sorted(f.index for m in embedded for f in m.faces) == list(range(expected))
    assert sorted((m.part, m.parts) for m in embedded) == [(i, len(parts)) for i in range(len(parts))]
    sizes = [len(v) for v, _ in (*faces, *embeddings)]
    assert max(sizes) <= DEFAULT_MESSAGE_MAX_BYTES < BROKER_LIMIT, sizes
    for service, stage in ((detect, "detect"), (embed, "embed")):
        assert service.metric(f'openlfr_stage_messages_dropped_total{{stage="{stage}",reason="stale"') == 0
        assert service.metric(f'openlfr_stage_messages_dead_lettered_total{{stage="{stage}"') == 0
    assert stack.stop_all() == {"detect": 0, "embed": 0}


def test_an_outage_of_detect_loses_no_alert_and_the_alerts_say_how_late(stack: ServiceStack, samples: Samples) -> None:
    try:
        stack.start_ready("detect", "embed", "match", "alert")
        stack.enrol_and_deploy(samples.watchlist, cameras=["cam-out"])
    except StackError as exc:
        pytest.fail(str(exc))
    detect = stack.services["detect"]
    detect.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        stack.env.update({"OPENLFR_CAMERAS": f"cam-out={samples.video}", "OPENLFR_FILE_MODE": "realtime",
                          "OPENLFR_SAMPLE_FPS": "5"})
        ingest = stack.start("ingest")
        assert ingest.proc.wait(timeout=120) == 0, ingest.log_tail()  # the video played, in real time
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))  # ~10 s without detect
    finally:
        detect.proc.send_signal(signal.SIGCONT)
    outage_s = time.monotonic() - stopped

    deadline = time.monotonic() + 300
    alerts = stack.alerts()
    while len(alerts) < len(samples.expected_subjects) and time.monotonic() < deadline:
        time.sleep(1)
        alerts = stack.alerts()
    assert sorted(a.subject_id for a in alerts) == sorted(samples.expected_subjects), (
        f"outage {outage_s:.1f} s", detect.log_tail(), stack.services["embed"].log_tail())
    for alert in alerts:
        # Taken from the backlog: late by about the time the person waited in Kafka, within the bound.
        assert alert.lateness_s is not None and 1.0 < alert.lateness_s <= 30.0, alert.lateness_s
    assert detect.metric('openlfr_stage_messages_dropped_total{stage="detect",reason="stale"') == 0
    assert stack.stop_all()["detect"] == 0


@pytest.fixture
def own_broker(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, on fixed ports so that it comes back where the services look
    (the session's broker stays up for the other tests; ``kafka_broker`` fetched the jars)."""
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    broker = KafkaBroker(work_dir=tmp_path / "kafka", port=port, controller_port=controller_port,
                         startup_timeout_s=90)
    with broker:
        yield broker


def test_a_broker_killed_mid_walk_loses_no_alert(own_broker: KafkaBroker, samples: Samples, tmp_path: Path) -> None:
    stack = ServiceStack(own_broker.bootstrap, tmp_path / "stack")
    stack.env.pop("OPENLFR_MAX_FRAME_AGE_S")  # the production limits: detect 1 s, embed 5 s
    try:
        try:
            stack.start_ready("detect", "embed", "match", "alert")
            stack.enrol_and_deploy(samples.watchlist, cameras=["cam-out"])
            stack.env.update({"OPENLFR_CAMERAS": f"cam-out={samples.video}", "OPENLFR_FILE_MODE": "realtime",
                              "OPENLFR_SAMPLE_FPS": "5"})
            ingest = stack.start("ingest")
            stack.wait_ready(ingest)  # the video plays: the first walker is coming
        except StackError as exc:
            pytest.fail(str(exc))
        assert own_broker.pid is not None
        killed, killed_ts = time.monotonic(), time.time()
        os.kill(own_broker.pid, signal.SIGKILL)
        assert own_broker.wait(timeout_s=30) is not None
        own_broker.stop()  # forget the dead process; its data and ports stay
        time.sleep(max(0.0, 5.0 - (time.monotonic() - killed)))
        own_broker.start()
        outage_s = time.monotonic() - killed
        assert ingest.proc.wait(timeout=120) == 0, ingest.log_tail()  # the video played, in real time
        assert "publish failed" not in ingest.log.read_text(), ingest.log_tail()  # no frame lost at ingest

        deadline = time.monotonic() + 300
        alerts = stack.alerts()
        while len(alerts) < len(samples.expected_subjects) and time.monotonic() < deadline:
            time.sleep(1)
            alerts = stack.alerts()
        time.sleep(3)  # a late duplicate would show
        alerts = stack.alerts()
        assert sorted(a.subject_id for a in alerts) == sorted(samples.expected_subjects), (
            f"outage {outage_s:.1f} s", stack.services["detect"].log_tail(), stack.services["embed"].log_tail())
        # The later walker was filmed while the broker was down and reached detect only after it.
        assert max(a.capture_ts for a in alerts) > killed_ts
        for alert in alerts:
            assert alert.lateness_s is None or 0.0 < alert.lateness_s <= 30.0, alert.lateness_s
        assert any(a.lateness_s is not None for a in alerts)  # taken from the backlog, and said so
        assert stack.services["detect"].metric('openlfr_stage_messages_dropped_total{stage="detect",reason="stale"') == 0
    finally:
        stack.kill_all()
