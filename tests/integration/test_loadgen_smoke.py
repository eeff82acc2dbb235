"""The camera-replay load generator end to end: one camera at 2 fps for 15 s into the services
over the session's broker, and its report says the alerts were right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openlfr import paths
from openlfr.testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

LOADGEN = paths.REPO_ROOT / "load-tests" / "loadgen.py"


def test_loadgen_runs_end_to_end_and_reports_correct_alerts(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    out = tmp_path / "loadgen.json"
    run = subprocess.run(
        [sys.executable, str(LOADGEN), "--start-stack", "--bootstrap", kafka_broker.bootstrap,
         "--cameras", "1", "--fps", "2", "--duration-s", "15", "--pool-s", "15", "--drain-s", "20",
         "--seed", "7", "--work-dir", str(tmp_path / "work"), "--json", str(out), "--hard-timeout-s", "240",
         # The tool is under test here, not load shedding: a slow CI machine's first
         # inferences must not shed the first walk's frames.
         "--detect-max-frame-age-s", "5"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["generator"]["published"] == 30 and report["generator"]["dropped_queue_full"] == 0
    assert report["truth"]["faces"] > 0 and report["faces_embedded"] > 0
    correctness = report["correctness"]
    assert correctness["expected"] >= 1, correctness
    assert correctness["ok"], correctness
    assert report["latency_capture_to_alert"]["n"] == correctness["alerts"] >= 1
    assert set(report["stages"]) == {"detect", "embed", "match", "alert"}
    # Whole-process CPU of each service while the frames went through (the broker is the session's,
    # not started by this run, so not counted): every stage worked, detect most of all.
    cpu = report["process_cpu_s"]
    assert set(cpu) == {"detect", "embed", "match", "alert"} and all(v > 0 for v in cpu.values()), cpu
    assert max(cpu, key=cpu.get) == "detect", cpu
    detect = report["stages"]["detect"]
    assert detect["mean_batch"] >= 1 and 1 <= detect["crops_per_frame"] < detect["crops_ungated_per_frame"], detect
    assert report["cpu_ms_per_truth_face"] == pytest.approx(1e3 * sum(cpu.values()) / report["truth"]["faces"])
    assert report["stages"]["detect"]["inputs"] == 30
    assert report["exit_codes"] == {stage: [0] for stage in ("match", "detect", "embed", "alert")}
    assert report["bottleneck"] in report["stages"]
    assert "| 1 | 2 | 1 | 1 | 30 |" in run.stdout  # the Markdown row
