"""Alerts after an outage, under the production frame-age limits (issue 11, failure 9).

For each fault and outage length: a fresh stack of the four consuming services over a real
broker (``openlfr.testing.stack``), the sample walk-by video (two enrolled people, one
stranger) played in real time at 5 fps by the ingest service, and one stage out of action for
the outage: ``stop`` (SIGSTOP, then SIGCONT) or ``kill`` (SIGKILL, then a new process started
once the outage is over). Reports, per run: alerts received of those expected, each alert's
``lateness_s`` and its capture-to-alert time.

    .venv/bin/python benchmarks/outage_catchup.py --runs detect:stop:10 embed:kill:10 detect:stop:20

Results: docs/operations.md, "Catch-up after an outage".
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.pipeline.samples import build_samples
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceStack
from openlfr.vision.factory import build_analyzer

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


def one_run(bootstrap: str, work: Path, samples, *, stage: str, fault: str, outage_s: float, env: dict) -> dict:
    stack = ServiceStack(bootstrap, work)
    stack.env.pop("OPENLFR_MAX_FRAME_AGE_S")  # production limits: detect 1 s, embed 5 s
    stack.env.update(env)
    try:
        stack.start_ready("detect", "embed", "match", "alert")
        stack.enrol_and_deploy(samples.watchlist, cameras=["cam-out"])
        victim = stack.services[stage]
        victim.proc.send_signal(signal.SIGSTOP if fault == "stop" else signal.SIGKILL)
        started = time.monotonic()
        stack.env.update({"OPENLFR_CAMERAS": f"cam-out={samples.video}", "OPENLFR_FILE_MODE": "realtime",
                          "OPENLFR_SAMPLE_FPS": "5"})
        ingest = stack.start("ingest")
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        if fault == "stop":
            victim.proc.send_signal(signal.SIGCONT)
        else:
            victim.proc.wait(timeout=10)
            del stack.services[stage]
            stack.start(stage)  # back once the outage is over; its start-up adds to the outage
        ingest.proc.wait(timeout=120)
        deadline = time.monotonic() + 180
        alerts = stack.alerts()
        while len(alerts) < len(samples.expected_subjects) and time.monotonic() < deadline:
            time.sleep(1)
            alerts = stack.alerts()
        time.sleep(5)  # any late duplicate
        alerts = stack.alerts()
        return {
            "stage": stage, "fault": fault, "outage_s": outage_s,
            "expected": len(samples.expected_subjects),
            "alerted": len({a.subject_id for a in alerts} & set(samples.expected_subjects)),
            "alerts": len(alerts),
            "lateness_s": [round(a.lateness_s, 1) if a.lateness_s is not None else None for a in alerts],
            "capture_to_alert_s": [round(a.alert_ts - a.capture_ts, 1) for a in alerts],
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
        with KafkaBroker(work_dir=Path(tmp) / "kafka", startup_timeout_s=90) as broker:
            for i, run in enumerate(args.runs):
                stage, fault, seconds = run.split(":")
                result = one_run(broker.bootstrap, Path(tmp) / f"run-{i}", samples, stage=stage, fault=fault,
                                 outage_s=float(seconds), env=env)
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
