"""The broker with SASL_SSL and ACLs (issue 11, failure 6): the services run over it each as its own
SCRAM user, and the broker refuses what anyone else on its network tries.

One KRaft broker for the module: a SASL_SSL client listener (SCRAM-SHA-512 users of
``openlfr.kafka.acls`` made at format time, a certificate from a CA made for the test), the
controller on mutual TLS, ``StandardAuthorizer`` with the project's ACL table and nothing else.
ingest, detect and embed run as processes over it; then the attacks of the issue are tried: no
TLS, TLS without a password, a wrong password, and the detect service's own password used to
forge a match or read alerts.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from pydantic import SecretStr

from openlfr.kafka import acls, provision
from openlfr.kafka.admin import BrokerUnavailableError, ensure_topics, wait_for_broker
from openlfr.kafka.credentials import BrokerCredentials
from openlfr.kafka.replay import group_caught_up, read_topic
from openlfr.kafka.security import KafkaConnection, client_config
from openlfr.messages.models import Embeddings, Faces, Frame
from openlfr.messages.topics import ALL_TOPICS, FACES, FRAMES, MATCHES
from openlfr.testing.kafka_broker import KafkaBroker, fetch_script
from openlfr.testing.stack import ServiceProcess, ServiceStack, StackError

pytestmark = pytest.mark.integration

VIDEO = "facenet_pytorch/examples/video.mp4"  # 4.2 s at 25 fps: 21 frames at 5 fps


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    fetched = subprocess.run([str(fetch_script())], capture_output=True, text=True, timeout=600, check=False)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    work = tmp_path_factory.mktemp("secure-kafka")
    credentials = BrokerCredentials.create(work / "tls", hosts=["127.0.0.1"])
    with KafkaBroker(work_dir=work / "kafka", credentials=credentials, startup_timeout_s=90) as broker:
        yield broker


@pytest.fixture
def stack(secure_broker: KafkaBroker, tmp_path: Path) -> Iterator[ServiceStack]:
    """A stack whose topics the admin made and whose users the ACL table governs."""
    s = ServiceStack(secure_broker.bootstrap, tmp_path / "stack", kafka_credentials=secure_broker.credentials)
    s.env["OPENLFR_CATCHUP_LATENESS_S"] = "0"  # the file is fed faster than real time: no catch-up
    s.env["OPENLFR_EMBED_SKIP_ENABLED"] = "false"  # every frame's faces are checked to come out of embed
    for spec in ALL_TOPICS:
        ensure_topics(s.kafka_admin, {s.prefix + spec.name: spec.partitions}, retention_ms=spec.retention_ms)
    acls.apply(s.kafka_admin, acls.grants(topic_name=lambda spec: s.prefix + spec.name))
    yield s
    s.kill_all()


def _delivery_error(
    connection: KafkaConnection | str, topic: str, value: bytes, *, timeout_ms: int = 15000
) -> KafkaError | None:
    """What the broker answered to one record sent as ``connection`` (None: accepted)."""
    reports: list[KafkaError | None] = []
    producer = Producer({**client_config(connection), "message.timeout.ms": timeout_ms})
    producer.produce(topic, key=b"cam-x", value=value, on_delivery=lambda err, msg: reports.append(err))
    producer.flush(20)
    assert len(reports) == 1
    return reports[0]


def _read_error(connection: KafkaConnection, topic: str, group: str) -> KafkaError | None:
    """The first error a consumer of ``topic`` in ``group`` meets (None: it read without one)."""
    consumer = Consumer({**client_config(connection), "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                return msg.error()
        return None
    finally:
        consumer.close()


def test_ingest_detect_and_embed_run_over_sasl_ssl_each_as_its_own_user(
    stack: ServiceStack, faces_dir: Path, model_dir: Path
) -> None:
    try:
        detect, embed = stack.start_ready("detect", "embed")
    except StackError as exc:
        pytest.fail(str(exc))
    stack.env.update({"OPENLFR_CAMERAS": f"door-1={faces_dir / VIDEO}", "OPENLFR_FILE_MODE": "batch",
                      "OPENLFR_SAMPLE_FPS": "5", "OPENLFR_MAX_FRAME_PX": "1280"})
    ingest = stack.start("ingest")
    assert ingest.proc.wait(timeout=180) == 0, ingest.log_tail()
    frames = read_topic(stack.kafka_admin, stack.prefix + FRAMES.name, Frame)
    assert len(frames) == 21

    def wait_for(service: ServiceProcess, stage: str, topic: str) -> None:
        # Committed offsets, not messages taken in: a stage commits an input only once its
        # outputs are acknowledged, so what it published can be read in full after this.
        deadline = time.monotonic() + 180
        while not group_caught_up(stack.kafka_admin, f"openlfr-{stage}", stack.prefix + topic):
            if time.monotonic() > deadline:
                pytest.fail(f"{stage} did not commit all of {topic}:\n{service.log_tail()}")
            time.sleep(1)

    wait_for(detect, "detect", FRAMES.name)
    faces = read_topic(stack.kafka_admin, stack.prefix + FACES.name, Faces)
    wait_for(embed, "embed", FACES.name)
    embeddings = read_topic(stack.kafka_admin, stack.prefix + "openlfr.embeddings.v1", Embeddings)
    assert faces and {f.frame_id for f in faces} <= {f.frame_id for f in frames}, detect.log_tail()
    assert sorted(e.frame_id for e in embeddings) == sorted(f.frame_id for f in faces), embed.log_tail()
    for service in (detect, embed):
        assert "AUTHORIZATION_FAILED" not in service.log_tail(20000)
        assert stack.kafka_credentials is not None
        assert stack.kafka_credentials.password(acls.username(service.name)).get_secret_value() not in \
            service.log_tail(200000)
    assert stack.stop_all() == {"detect": 0, "embed": 0, "ingest": 0}


def test_strangers_are_refused_and_a_service_may_do_only_its_own_part(stack: ServiceStack,
                                                                       secure_broker: KafkaBroker) -> None:
    credentials = secure_broker.credentials
    assert credentials is not None
    bootstrap = secure_broker.bootstrap
    # No TLS, TLS without a user, a wrong password, a CA it does not know: no answer at all.
    strangers = {
        "plaintext": bootstrap,
        "wrong password": credentials.connection(bootstrap, "openlfr-detect").with_user("openlfr-detect", "guess"),
        "unknown user": credentials.connection(bootstrap, "openlfr-detect").with_user("mallory", "guess"),
        "system CAs only": KafkaConnection(bootstrap=bootstrap, security_protocol="SSL"),
    }
    for what, connection in strangers.items():
        with pytest.raises(BrokerUnavailableError):
            wait_for_broker(connection, timeout_s=3)
            pytest.fail(f"{what}: the broker answered")
    assert _delivery_error(bootstrap, stack.prefix + FRAMES.name, b"x", timeout_ms=3000) is not None

    detect = secure_broker.connect_as(acls.username("detect"))
    matches = stack.prefix + MATCHES.name
    # The attack with a stolen detect password: a forged match is refused by the broker.
    forged = _delivery_error(detect, matches, b'{"v": 2, "kind": "match"}')
    assert forged is not None and forged.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, forged
    # Nor may it read what it does not consume, nor join another stage's group.
    read = _read_error(detect, stack.prefix + "openlfr.alerts.v1", "openlfr-detect")
    assert read is not None and read.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, read
    read = _read_error(detect, stack.prefix + FRAMES.name, "openlfr-match")
    assert read is not None and read.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, read
    # ingest may write frames but not read them back (no one but detect sees a passer-by's frame).
    ingest = secure_broker.connect_as(acls.username("ingest"))
    read = _read_error(ingest, stack.prefix + FRAMES.name, f"spy-{uuid.uuid4().hex[:6]}")
    assert read is not None and read.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                KafkaError.GROUP_AUTHORIZATION_FAILED), read

    # What the table grants still works: detect writes faces, the match user writes matches.
    assert _delivery_error(detect, stack.prefix + FACES.name, b"{}") is None
    match_user = secure_broker.connect_as(acls.username("match"))
    assert _delivery_error(match_user, matches, b"{}") is None


def test_provisioning_sets_the_users_and_a_rotated_password_replaces_the_old_one(secure_broker: KafkaBroker) -> None:
    credentials = secure_broker.credentials
    assert credentials is not None
    # What compose's kafka-users job runs: every service's credential from its file, and the table.
    done = subprocess.run(
        [sys.executable, "-m", "openlfr.kafka.provision", "--bootstrap", secure_broker.bootstrap,
         "--ca-file", str(credentials.ca_file), "--password-file", str(credentials.directory / "{user}.password")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0 and f"users={len(acls.SERVICES)} acls={len(acls.grants())}" in done.stdout, done.stderr
    for name in acls.SERVICES:
        assert credentials.password(acls.username(name)).get_secret_value() not in done.stdout + done.stderr

    user = acls.username("embed")
    old = secure_broker.connect_as(user)
    new_password = secrets.token_urlsafe(32)
    provision.upsert_users(secure_broker.admin, {user: SecretStr(new_password)})
    try:
        wait_for_broker(old.with_user(user, new_password), timeout_s=10)
        with pytest.raises(BrokerUnavailableError):
            wait_for_broker(old, timeout_s=3)
    finally:
        provision.upsert_users(secure_broker.admin, {user: credentials.password(user)})
