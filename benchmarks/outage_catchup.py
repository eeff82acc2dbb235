"""Alerts after an outage, under the production frame-age limits (issue 11, failure 9).

For each fault and outage length: a fresh stack of the four consuming services over a real
broker (``openlfr.testing.stack``), the sample walk-by video (two enrolled people, one
stranger) played in real time at 5 fps by the ingest service, and one stage out of action for
the outage: ``stop`` (SIGSTOP, then SIGCONT) or ``kill`` (SIGKILL, then a new process started
once the outage is over). The stage ``broker`` is the Kafka broker itself: ``stop`` (SIGSTOP,
SIGCONT), ``kill`` (SIGKILL) or ``term`` (SIGTERM, a clean shutdown), the last two restarted on
the same ports and data once the outage is over, its start-up adding to the outage. Detect and
embed are taken out before ingest starts; the broker, match and alert once ingest plays
(``FAULT_WHILE_PLAYING``). Reports,
per run: alerts received of those expected, each alert's ``lateness_s`` and its
capture-to-alert time, and ``down_s``, how long the stage or broker was really out.

    .venv/bin/python benchmarks/outage_catchup.py --runs detect:stop:10 embed:kill:10 detect:stop:20
    .venv/bin/python benchmarks/outage_catchup.py --runs broker:stop:10 broker:kill:10 broker:term:10

Results: docs/operations.md, "Catch-up after an outage".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.pipeline.samples import build_samples
from openlfr.subprocesses import free_port
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceStack
from openlfr.vision.factory import build_analyzer

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


BROKER_SIGNALS = {"stop": signal.SIGSTOP, "kill": signal.SIGKILL}
#: Taken out once ingest plays, not before it starts: the broker (ingest needs it to start) and
#: match (ingest's deployment gate asks it at start, and publishes nothing it has not heard of).
#: Detect and embed are taken out before, so the whole walk-by falls in their outage.
FAULT_WHILE_PLAYING = ("broker", "match", "alert")


def _broker_down(broker: KafkaBroker, fault: str) -> None:
    """Take the broker out: SIGSTOP, SIGKILL, or a clean SIGTERM shutdown."""
    if fault == "term":
        broker.stop()
        return
    if fault not in BROKER_SIGNALS or broker.pid is None:
        raise ValueError(f"broker fault {fault!r}, expected stop, kill or term")
    os.kill(broker.pid, BROKER_SIGNALS[fault])
    if fault == "kill":
        broker.wait(timeout_s=30)
        broker.stop()  # forgets the dead process; data and ports stay for the restart


def _broker_up(broker: KafkaBroker, fault: str) -> None:
    """Bring the broker back on the same ports and data."""
    if fault == "stop":
        os.kill(broker.pid, signal.SIGCONT)
    else:
        broker.start()


def _wait_for_a_frame(ingest, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    """Until ingest has had a frame acknowledged: it has heard the deployments from match (its
    gate publishes nothing before) and the broker has the camera's first frame."""
    deadline = time.monotonic() + timeout_s
    while ingest.metric('openlfr_publisher_messages_total{') == 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def one_run(broker: KafkaBroker, work: Path, samples, *, stage: str, fault: str, outage_s: float,
            env: dict) -> dict:
    stack = ServiceStack(broker.bootstrap, work)
    stack.env.pop("OPENLFR_MAX_FRAME_AGE_S")  # production limits: detect 1 s, embed 5 s
    stack.env.update(env)
    try:
        stack.start_ready("detect", "embed", "match", "alert")
        stack.enrol_and_deploy(samples.watchlist, cameras=["cam-out"])
        stack.env.update({"OPENLFR_CAMERAS": f"cam-out={samples.video}", "OPENLFR_FILE_MODE": "realtime",
                          "OPENLFR_SAMPLE_FPS": "5"})
        if stage in FAULT_WHILE_PLAYING:
            ingest = stack.start("ingest")
            stack.wait_ready(ingest)  # the fault comes while the camera plays, not before
            _wait_for_a_frame(ingest)
            started, fault_ts = time.monotonic(), time.time()
            if stage == "broker":
                _broker_down(broker, fault)
        if stage != "broker":
            victim = stack.services[stage]
            victim.proc.send_signal(signal.SIGSTOP if fault == "stop" else signal.SIGKILL)
        if stage not in FAULT_WHILE_PLAYING:
            started, fault_ts = time.monotonic(), time.time()
            ingest = stack.start("ingest")
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        if stage == "broker":
            _broker_up(broker, fault)
        elif fault == "stop":
            victim.proc.send_signal(signal.SIGCONT)
        else:
            victim.proc.wait(timeout=10)
            del stack.services[stage]
            # Back once the outage is over, at its address (alert and ingest call match's); its
            # start-up adds to the outage.
            stack.wait_ready(stack.start(stage, port=victim.port))
        down_s = time.monotonic() - started
        ingest.proc.wait(timeout=120)
        deadline = time.monotonic() + 180
        alerts = stack.alerts()
        while len(alerts) < len(samples.expected_subjects) and time.monotonic() < deadline:
            time.sleep(1)
            alerts = stack.alerts()
        time.sleep(5)  # any late duplicate
        alerts = stack.alerts()
        return {
            "stage": stage, "fault": fault, "outage_s": outage_s, "down_s": round(down_s, 1),
            "expected": len(samples.expected_subjects),
            "alerted": len({a.subject_id for a in alerts} & set(samples.expected_subjects)),
            "alerts": len(alerts),
            "lateness_s": [round(a.lateness_s, 1) if a.lateness_s is not None else None for a in alerts],
            "capture_to_alert_s": [round(a.alert_ts - a.capture_ts, 1) for a in alerts],
            # Negative: the person was seen before the fault began; positive: during or after it.
            "captured_after_fault_s": [round(a.capture_ts - fault_ts, 1) for a in alerts],
        }
    finally:
        stack.kill_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["detect:stop:10"], help="stage:stop|kill:seconds")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every service (e.g. "
                        "OPENLFR_CATCHUP_LATENESS_S=0 for the behaviour before catch-up)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    analyzer = build_analyzer(ModelSettings(), keep_chips=False)

    def locate(image: np.ndarray) -> np.ndarray:
        faces = analyzer.analyze(image)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    with tempfile.TemporaryDirectory() as tmp:
        samples = build_samples(FACES_DIR, Path(tmp) / "samples", locate=locate)
        # Fixed ports, so a broker restarted after a fault is where the services look for it.
        port = free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        with KafkaBroker(work_dir=Path(tmp) / "kafka", port=port, controller_port=controller_port,
                         startup_timeout_s=90) as broker:
            for i, run in enumerate(args.runs):
                stage, fault, seconds = run.split(":")
                result = one_run(broker, Path(tmp) / f"run-{i}", samples, stage=stage, fault=fault,
                                 outage_s=float(seconds), env=env)
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
