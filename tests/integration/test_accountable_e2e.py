"""The accountable core end to end, as separate services over the real broker.

A watchlist admin enrols the sample subjects through the match service's registry API, an
authoriser creates a deployment for one camera, the sample walk-by video is fed in; the alert
appears on the alerts topic, in the live stream (SSE) and in the operator console (headless
chromium), where two reviewers confirm it. The metrics and the deployment report show it; a
restart with a short crop retention purges the crops; the audit chain verifies, and fails when
a record is edited. Frames of a camera outside the deployment are not matched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openlfr.kafka.replay import read_topic
from openlfr.messages.models import Frame
from openlfr.pipeline.samples import Samples
from openlfr.testing.console import ConsolePage, browser_available, chromium
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceStack, StackError

pytestmark = pytest.mark.integration

DEPLOYMENT = "dep-e2e"
CAMERA = "cam-e2e"
OUTSIDE = "cam-outside"


@pytest.fixture
def stack(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[ServiceStack]:
    s = ServiceStack(kafka_broker.bootstrap, tmp_path / "stack")
    yield s
    s.kill_all()


class StreamReader(threading.Thread):
    """Reads the alert service's SSE stream into a list of (event, data) pairs."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.events: list[tuple[str, dict]] = []
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except httpx.RemoteProtocolError:
            pass  # the service stopped and closed the stream

    def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(10, read=None)) as resp:
            assert resp.status_code == 200, resp.read()
            self.connected.set()
            event, data = "message", []
            for line in resp.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    self.events.append((event, json.loads("\n".join(data))))
                    event, data = "message", []


def _feed(stack: ServiceStack, samples: Samples, camera: str, *, gated: bool = True) -> None:
    ingest = stack.start("ingest", gate_ingest=gated, OPENLFR_CAMERAS=f"{camera}={samples.video}",
                         OPENLFR_FILE_MODE="batch", OPENLFR_SAMPLE_FPS="5")
    assert ingest.proc.wait(timeout=300) == 0, ingest.log_tail()
    del stack.services["ingest"]


def _wait_alerts(stack: ServiceStack, n: int, timeout_s: float = 400) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alerts = stack.alerts()
        if len(alerts) >= n:
            return alerts
        time.sleep(1)
    pytest.fail(f"{n} alerts expected, got {len(stack.alerts())}:\n{stack.services['match'].log_tail()}")


def _audit_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openlfr.cli", "audit", "verify", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(not browser_available() and os.environ.get("CI") != "true",
                    reason="Debian's chromium/chromedriver missing: scripts/test-deps.sh (in CI this fails instead)")
def test_enrol_deploy_alert_review_report_retain_audit(
    stack: ServiceStack, samples: Samples, tmp_path: Path
) -> None:
    try:
        stack.start_ready("detect", "embed", "match", "alert")
        # Only the first sample subject is enrolled: the other stays a stranger to this watchlist.
        subject = samples.expected_subjects[0]
        watchlist_dir = tmp_path / "watchlist"
        (watchlist_dir / subject).mkdir(parents=True)
        for image in sorted((samples.watchlist / subject).iterdir()):
            (watchlist_dir / subject / image.name).write_bytes(image.read_bytes())
        deployment = stack.enrol_and_deploy(watchlist_dir, cameras=[CAMERA], deployment_id=DEPLOYMENT)
    except StackError as exc:
        pytest.fail(str(exc))
    assert deployment["snapshot"]["active_subjects"] == 1 and deployment["status"] == "active"
    match, alert_svc = stack.services["match"], stack.services["alert"]
    tokens = stack.tokens

    stream = StreamReader(alert_svc.url("/v1/alerts/stream"), tokens["viewer"])
    stream.start()
    assert stream.connected.wait(20), "the live stream did not open"

    with chromium(tmp_path / "chromium-profile") as driver:
        page = ConsolePage(driver, timeout_s=30)
        page.open(alert_svc.base_url)
        page.use_token(tokens["reviewer-a"], "reviewer-a")

        # The same video on a camera no deployment covers: ingest publishes none of its frames,
        # and an ingest that does not ask (no registry URL) gets none of them matched.
        _feed(stack, samples, OUTSIDE)
        frames = read_topic(stack.bootstrap, stack.prefix + "openlfr.frames.v1", Frame)
        assert frames == []
        _feed(stack, samples, OUTSIDE, gated=False)
        _feed(stack, samples, CAMERA)
        cameras = [f.camera_id for f in read_topic(stack.bootstrap, stack.prefix + "openlfr.frames.v1", Frame)]
        assert cameras.count(OUTSIDE) > 0 and cameras.count(CAMERA) == cameras.count(OUTSIDE)
        alerts = _wait_alerts(stack, 1)
        time.sleep(10)  # let anything else that would come arrive
        alerts = stack.alerts()
        assert [(a.subject_id, a.camera_id, a.deployment_id) for a in alerts] == [(subject, CAMERA, DEPLOYMENT)]
        alert = alerts[0]
        assert alert.reference_chip_jpeg and alert.probe_chip_jpeg
        assert alert.threshold == pytest.approx(0.705) and alert.embedder_model.startswith("dlib_resnet_v1@")
        # The subject's own threshold: calibrated by the registry for a watchlist of one at 1/6000.
        point = deployment["operating_point"]
        assert point["watchlist_size"] == 1 and point["target_fpir"] == pytest.approx(1 / 6000)
        assert alert.cohort == point["cohort"] and alert.normalised_threshold == point["normalised_threshold"]
        assert alert.normalised_score >= alert.normalised_threshold
        assert match.metric('openlfr_stage_messages_dropped_total{reason="no_deployment",stage="match"}') > 0 or \
            match.metric('openlfr_stage_messages_dropped_total{stage="match",reason="no_deployment"}') > 0

        # In the stream, over REST, and in the console with both faces.
        deadline = time.monotonic() + 20
        while not any(e == "alert" and d.get("alert_id") == alert.alert_id for e, d in stream.events):
            assert time.monotonic() < deadline, f"alert not in the stream: {stream.events}"
            time.sleep(0.2)
        status, body = alert_svc.get(f"/v1/alerts/{alert.alert_id}", token=tokens["viewer"])
        assert status == 200 and json.loads(body)["status"] == "pending"
        page.item(alert.alert_id)
        page.wait("both faces to load", lambda d: page.images_loaded(alert.alert_id))

        # Two reviewers confirm it, one after the other.
        page.click(alert.alert_id, "confirm")
        page.wait_status(alert.alert_id, "awaiting_second")
        page.use_token(tokens["reviewer-b"], "reviewer-b")
        page.click(alert.alert_id, "confirm")
        page.wait_status(alert.alert_id, "confirmed")
    stream.stop.set()

    # A viewer may not review, and the refusal is audited.
    refused = httpx.post(alert_svc.url(f"/v1/alerts/{alert.alert_id}/reviews"),
                         json={"decision": "reject", "reason": "not me"},
                         headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=10)
    assert refused.status_code == 403

    # The metrics and the report show it.
    label = f'deployment="{DEPLOYMENT}"'
    assert alert_svc.metric(f"openlfr_deployment_alerts_total{{{label}") == 1
    assert alert_svc.metric(f'openlfr_deployment_adjudications_total{{{label},outcome="confirmed"') == 1
    assert alert_svc.metric(f"openlfr_deployment_alert_precision{{{label}") == 1.0
    assert match.metric(f"openlfr_deployment_faces_total{{{label}") > 0
    assert match.metric(f"openlfr_deployment_tracks_total{{{label}") > 0
    time.sleep(2)  # the registry writes activity counts every second here
    status, body = alert_svc.get(f"/v1/deployments/{DEPLOYMENT}/report?format=json", token=tokens["viewer"])
    assert status == 200, body
    report = json.loads(body)
    assert (report["alerts"], report["confirmed"], report["rejected"], report["precision"]) == (1, 1, 0, 1.0)
    assert report["faces_processed"] > 0 and report["tracks"] > 0 and report["watchlist_size"] == 1
    assert report["threshold"] == pytest.approx(0.705) and report["model_version"].startswith("dlib_resnet_v1@")
    assert report["authorised_by"] == "Test Superintendent"
    # The look-alike watch, read from the match service beside the registry (counts only).
    look_alikes = report["look_alikes"]
    assert look_alikes["watch"] == "from the match service, counted since its match process started", look_alikes
    assert isinstance(look_alikes["subjects_with_near_misses"], int)
    assert isinstance(look_alikes["attracting_strangers"], list)
    status, markdown = alert_svc.get(f"/v1/deployments/{DEPLOYMENT}/report?format=markdown", token=tokens["viewer"])
    assert status == 200 and DEPLOYMENT in markdown and "## Look-alike watch" in markdown

    # Retention: restarted with a crop retention shorter than the alert's age, the crops go.
    assert alert_svc.get(f"/v1/alerts/{alert.alert_id}/probe.jpg", token=tokens["viewer"])[0] == 200
    assert stack.stop_all() == {name: 0 for name in stack.services}
    restarted = stack.start("alert", OPENLFR_REVIEW_CROP_RETENTION_S="5", OPENLFR_REVIEW_PURGE_INTERVAL_S="1")
    stack.wait_ready(restarted)
    deadline = time.monotonic() + 30
    while restarted.get(f"/v1/alerts/{alert.alert_id}/probe.jpg", token=tokens["viewer"])[0] != 404:
        assert time.monotonic() < deadline, "the probe crop outlived its retention"
        time.sleep(0.5)
    assert restarted.get(f"/v1/alerts/{alert.alert_id}/reference.jpg", token=tokens["viewer"])[0] == 404
    status, body = restarted.get(f"/v1/alerts/{alert.alert_id}", token=tokens["viewer"])
    assert status == 200 and json.loads(body)["status"] == "confirmed"  # the record outlives its crops
    assert restarted.metric(f'openlfr_deployment_adjudications_total{{{label},outcome="confirmed"') == 1
    stack.stop_all()

    # The audit chain holds every change, review, refusal, export and purge, and verifies...
    actions = [json.loads(line)["action"] for line in stack.audit_log.read_text().splitlines()]
    for action in ("watchlist.create", "subject.enrol", "deployment.create", "alert.review", "access.denied",
                   "export", "alert.purge"):
        assert action in actions, (action, actions)
    assert actions.count("alert.review") == 2
    verified = _audit_verify(stack.audit_log)
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout
    # ...and fails, naming the line, once a record is edited.
    lines = stack.audit_log.read_text().splitlines(keepends=True)
    victim = actions.index("deployment.create")
    record = json.loads(lines[victim])
    record["details"]["threshold"] = 0.5
    lines[victim] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    stack.audit_log.write_text("".join(lines))
    broken = _audit_verify(stack.audit_log)
    assert broken.returncode == 1 and f"line {victim + 1}" in broken.stdout, broken.stdout
