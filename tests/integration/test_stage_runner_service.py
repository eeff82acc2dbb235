"""The Kafka loop as a service in a subprocess (``python -m openlfr.testing.echo_stage``): killed
mid-stream, stopped with SIGTERM, stalled, misconfigured; and the health app every service serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from openlfr import paths
from openlfr.subprocesses import free_port
from openlfr.messages.codec import decode
from openlfr.messages.topics import FRAMES
from openlfr.service.http import make_health_app, run_http_in_thread
from openlfr.testing.kafka_broker import KafkaBroker

from .test_stage_runner import (  # noqa: F401 - fixtures are used by name
    Topics,
    _topics,
    _good,
    _produce,
    Reader,
    _committed,
    _end_offsets,
    _source,
    reader,
)

pytestmark = pytest.mark.integration


class Service:
    """``python -m openlfr.testing.echo_stage`` with OPENLFR_* settings."""

    def __init__(self, log: Path, **settings: object) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLFR_")}
        for name, value in settings.items():
            env[f"OPENLFR_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "openlfr.testing.echo_stage"],
                env=env, cwd=paths.REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the service did not exit within {timeout_s} s\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def _http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _service_settings(broker: KafkaBroker, topics: Topics, **extra: object) -> dict[str, object]:
    return {
        "bootstrap": broker.bootstrap, "group_id": topics.group, "topics": topics.env(),
        "session_timeout_s": "6", "poll_timeout_s": "0.2", "http_host": "127.0.0.1",
        "http_port": str(free_port()), "log_level": "INFO", **extra,
    }


def test_service_killed_mid_stream_loses_nothing_after_restart(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    total = 400
    _produce(kafka_broker.bootstrap, topics.frames, _good(total))
    settings = _service_settings(kafka_broker, topics, batch_size="10", echo_delay_s="0.05")
    services.append(first := Service(tmp_path / "first.log", **settings))
    out = reader(topics.out)
    before = len(out.read(until=100, timeout_s=30))
    assert 100 <= before < total, f"{before} outputs before the kill\n{first.log_tail()}"
    first.kill()

    settings["echo_delay_s"] = "0"
    services.append(second := Service(tmp_path / "second.log", **settings))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        seen = {_source(m)[0] for m in out.read(until=len(out.messages) + 1, timeout_s=0.5)}
        if len(seen) == total:
            break
    second.process.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0, second.log_tail()
    outputs = out.read_all()
    out.close()

    counts = Counter(_source(m)[0] for m in outputs)
    assert set(counts) == {f"F-{i}" for i in range(total)}, second.log_tail()
    duplicates = sum(counts.values()) - total
    print(f"outputs={sum(counts.values())} inputs={total} replayed_after_sigkill={duplicates}")
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )


def test_service_answers_http_and_sigterm_commits_exactly_what_was_processed(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    total = 300
    _produce(kafka_broker.bootstrap, topics.frames, _good(total))
    settings = _service_settings(kafka_broker, topics, batch_size="5", echo_delay_s="0.05")
    services.append(service := Service(tmp_path / "service.log", **settings))
    base = f"http://127.0.0.1:{settings['http_port']}"

    out = reader(topics.out)
    out.read(until=50, timeout_s=30)
    assert _http(f"{base}/healthz") == (200, b'{"status":"ok"}'), service.log_tail()
    status, body = _http(f"{base}/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"], ready
    assert set(ready["checks"]) == {"broker", "partitions", "progress", "stage"}
    status, metrics = _http(f"{base}/metrics")
    text = metrics.decode()
    assert status == 200
    assert f'openlfr_stage_messages_in_total{{stage="echo",topic="{topics.frames}"}}' in text
    assert 'openlfr_stage_handle_seconds_count{stage="echo"}' in text
    assert "openlfr_stage_consumer_lag_messages{" in text

    service.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = service.wait(10)
    stop_s = time.monotonic() - started
    assert code == 0, service.log_tail()
    assert stop_s < 5, f"stopping took {stop_s:.1f} s"
    outputs = out.read_all()
    out.close()

    assert 50 <= len(outputs) < total, "the stop should come mid-stream"
    processed: dict[int, int] = {}
    for message in outputs:
        _, partition, offset = _source(message)
        processed[partition] = max(processed.get(partition, 0), offset + 1)
    assert len(outputs) == len({_source(m) for m in outputs}), "an input processed twice"
    committed = _committed(kafka_broker.bootstrap, topics.group, topics.frames)
    assert committed == processed, service.log_tail()
    print(f"sigterm_stop_seconds={stop_s:.2f} processed={len(outputs)}/{total}")


def test_readyz_says_stalled_while_the_stage_cannot_make_progress_and_ready_again_after(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    # Issue 11, failure 2: while the stage retried one batch for ever, /readyz said ready.
    # Here its backend is down for its first 25 calls (about 5 s of retries) with input waiting.
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    _produce(kafka_broker.bootstrap, topics.frames, _good(5))
    settings = _service_settings(
        kafka_broker, topics, echo_fail_first="25", stall_after_s="1",
        backoff_initial_s="0.2", backoff_max_s="0.2",
    )
    services.append(service := Service(tmp_path / "service.log", **settings))
    base = f"http://127.0.0.1:{settings['http_port']}"

    stalled: dict[str, object] | None = None
    deadline = time.monotonic() + 30
    while stalled is None and time.monotonic() < deadline:
        try:
            status, body = _http(f"{base}/readyz")
        except OSError:
            time.sleep(0.1)
            continue
        checks = json.loads(body).get("checks", {})
        if status == 503 and not checks.get("progress", {"ok": True})["ok"]:
            stalled = checks
        time.sleep(0.1)
    assert stalled is not None, f"/readyz never said stalled\n{service.log_tail()}"
    assert stalled["progress"]["reason"].startswith("stalled: no batch finished for ")
    assert "backend_unavailable: echo backend down" in stalled["progress"]["reason"]
    assert stalled["partitions"]["ok"] and stalled["broker"]["ok"]
    metrics = _http(f"{base}/metrics")[1].decode()
    assert 'openlfr_stage_stalled{stage="echo"} 1.0' in metrics

    outputs = reader(topics.out).read(until=5, timeout_s=30)
    assert len(outputs) == 5, service.log_tail()
    deadline = time.monotonic() + 10
    while _http(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, body = _http(f"{base}/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"]["progress"] == {"ok": True, "reason": "ok"}
    metrics = _http(f"{base}/metrics")[1].decode()
    assert 'openlfr_stage_stalled{stage="echo"} 0.0' in metrics
    assert 'openlfr_stage_progress_age_seconds{stage="echo"} 0.0' in metrics


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "bad setting OPENLFR_BOOTSTRAP: Field required"),
        ({"bootstrap": "127.0.0.1:9092", "batch_size": "0"}, "bad setting OPENLFR_BATCH_SIZE:"),
        ({"bootstrap": "no-port"}, "bad setting OPENLFR_BOOTSTRAP: expected host"),
        ({"bootstrap": "h:1", "log_level": "LOUD"}, "bad setting OPENLFR_LOG_LEVEL:"),
        ({"bootstrap": "h:1", "delivery_max_retries": "-1"},
         "bad setting OPENLFR_DELIVERY_MAX_RETRIES:"),
        ({"bootstrap": "h:1", "stall_after_s": "0"}, "bad setting OPENLFR_STALL_AFTER_S:"),
        ({"bootstrap": "h:1", "max_message_bytes": "1000"},
         "bad setting OPENLFR_MAX_MESSAGE_BYTES:"),
        ({"bootstrap": "h:1", "deadletter_payload_bytes": "900000"},
         "bad setting OPENLFR_DEADLETTER_PAYLOAD_BYTES: 900000 does not fit"),
    ],
)
def test_service_with_a_bad_setting_exits_2_naming_it(
    settings: dict[str, str], expected: str, tmp_path: Path
) -> None:
    service = Service(tmp_path / "bad.log", **settings)
    assert service.wait(30) == 2
    assert expected in service.log.read_text(), service.log_tail()



def test_health_app_answers_each_check_and_503_while_one_fails() -> None:
    registry = CollectorRegistry()
    stage_ok = {"value": False}
    app = make_health_app(
        ready={
            "broker": lambda: (True, "ok"),
            "stage": lambda: (stage_ok["value"], "ok" if stage_ok["value"] else "triton down"),
            "broken": lambda: (True, "ok") if stage_ok["value"] else 1 / 0,
        },
        registry=registry,
    )
    PromCounter("openlfr_test_things_total", "Things.", registry=registry).inc(3)
    server = run_http_in_thread(app, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _http(f"{base}/healthz")[0] == 200
        status, body = _http(f"{base}/readyz")
        assert status == 503
        assert json.loads(body) == {
            "ready": False,
            "checks": {
                "broker": {"ok": True, "reason": "ok"},
                "stage": {"ok": False, "reason": "triton down"},
                "broken": {"ok": False, "reason": "check raised ZeroDivisionError: division by zero"},
            },
        }
        stage_ok["value"] = True
        assert _http(f"{base}/readyz")[0] == 200
        status, metrics = _http(f"{base}/metrics")
        assert status == 200 and b"openlfr_test_things_total 3.0" in metrics
    finally:
        server.stop()
    assert not server.is_alive()
