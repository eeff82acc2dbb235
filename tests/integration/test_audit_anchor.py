"""The audit log's head lives outside the log (issue 11, failure 5), over the real broker and a
real alert service: the service publishes its head to the checkpoint topic, `openlfr audit verify
--against-topic` catches a cut tail and a fully re-chained rewrite that the chain alone passes,
the running service refuses to chain onto the cut log (503, metric, log line) and so does a
restarted one (it reads the checkpoints at start), and 401s are audited at a bounded rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr.audit.checkpoint import read_checkpoints
from openlfr.audit.log import GENESIS_HASH, AuditRecord
from openlfr.messages.topics import AUDIT_CHECKPOINTS
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceProcess, ServiceStack

pytestmark = pytest.mark.integration

PER_SOURCE_401 = 3


@pytest.fixture
def stack(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[ServiceStack]:
    stack = ServiceStack(kafka_broker.bootstrap, tmp_path / "stack", env={
        "OPENLFR_AUDIT_CHECKPOINT_EVERY_RECORDS": "1",
        "OPENLFR_AUDIT_CHECKPOINT_INTERVAL_S": "1",
        "OPENLFR_API_AUDIT_401_PER_SOURCE": str(PER_SOURCE_401),
        "OPENLFR_REVIEW_REGISTRY_URL": "http://127.0.0.1:9",  # no match reaches this alert service
    })
    try:
        yield stack
    finally:
        stack.stop_all()


def _post_review(service: ServiceProcess, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        service.url("/v1/alerts/no-such-alert/reviews"), data=b'{"decision": "confirm", "step": 1}', method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _verify(stack: ServiceStack, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "openlfr.cli", "audit", "verify", str(path), *extra]
    env = {**stack.env, "OPENLFR_BOOTSTRAP": stack.bootstrap}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)


def _wait_for_checkpoint(stack: ServiceStack, count: int) -> None:
    topic = stack.prefix + AUDIT_CHECKPOINTS.name
    deadline = time.monotonic() + 60
    while max((cp.count for cp in read_checkpoints(stack.bootstrap, topic, "audit", timeout_s=20)), default=0) < count:
        assert time.monotonic() < deadline, f"no checkpoint at count {count} on {topic}"
        time.sleep(0.5)


def _rechain(lines: list[bytes]) -> list[bytes]:
    """Edit record seq 1 and rebuild every hash: a chain that verifies on its own."""
    out, prev = [], GENESIS_HASH
    for line in lines:
        rec = AuditRecord.model_validate_json(line)
        details = {**rec.details, "forged": True} if rec.seq == 1 else rec.details
        rec = rec.model_copy(update={"details": details, "prev_hash": prev})
        rec = rec.model_copy(update={"hash": rec.compute_hash()})
        prev = rec.hash
        out.append(rec.to_line())
    return out


def test_the_head_lives_on_the_broker_and_a_cut_or_rewritten_log_is_caught(stack: ServiceStack, tmp_path: Path) -> None:
    alert = stack.start("alert")
    stack.wait_ready(alert)
    viewer = stack.tokens["viewer"]

    # Three audited refusals (403: a viewer may not review) and a flood of ten 401s from one address.
    for _ in range(3):
        status, body = _post_review(alert, viewer)
        assert status == 403, body
    for _ in range(10):
        assert alert.get("/v1/alerts")[0] == 401
    records = [json.loads(line) for line in stack.audit_log.read_text().splitlines()]
    assert [r["action"] for r in records].count("access.denied") == 3
    unauthenticated = [r for r in records if r["action"] == "access.unauthenticated"]
    assert len(unauthenticated) == PER_SOURCE_401  # the rest wait for the window's summary record
    assert unauthenticated[0]["details"] == {"source": "127.0.0.1", "reason": "missing token"}
    total = len(records)
    _wait_for_checkpoint(stack, total)

    verified = _verify(stack, stack.audit_log, "--against-topic")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"chain intact, {total} record(s)" in verified.stdout
    head = verified.stdout.split("head ")[1].split(";")[0]

    # A full re-chained rewrite (same file name elsewhere: same log id) passes the chain alone...
    lines = stack.audit_log.read_bytes().splitlines(keepends=True)
    rewritten = tmp_path / "rewritten" / "audit.jsonl"
    rewritten.parent.mkdir()
    rewritten.write_bytes(b"".join(_rechain(lines)))
    assert _verify(stack, rewritten).returncode == 0
    # ...but not the checkpoints the service published.
    caught = _verify(stack, rewritten, "--against-topic")
    assert caught.returncode == 1 and "rewritten" in caught.stdout, caught.stdout

    # Cut the last two records of the live log: intact alone, caught by the head and the topic.
    stack.audit_log.write_bytes(b"".join(lines[:-2]))
    assert _verify(stack, stack.audit_log).returncode == 0
    for extra in (("--expect-head", head), ("--against-topic",)):
        cut = _verify(stack, stack.audit_log, *extra)
        assert cut.returncode == 1 and "at least 2 record(s) were cut" in cut.stdout, (extra, cut.stdout)

    # The running service refuses to chain onto the cut log: 503, a metric, a log line.
    status, body = _post_review(alert, viewer)
    assert status == 503 and "audit log cannot be written" in body, body
    assert alert.metric('openlfr_audit_write_refusals_total{reason="truncated"}') == 1
    assert alert.metric("openlfr_audit_log_intact") == 0
    assert "audit log refused" in alert.log_tail(20000)
    assert stack.audit_log.read_bytes() == b"".join(lines[:-2])

    # A restart does not launder the cut: the service reads its checkpoints and refuses at start.
    assert stack.stop_all() == {"alert": 0}
    restarted = stack.start("alert")
    stack.wait_ready(restarted)
    assert restarted.metric("openlfr_audit_log_intact") == 0
    status, body = _post_review(restarted, viewer)
    assert status == 503, body
    assert stack.audit_log.read_bytes() == b"".join(lines[:-2])
