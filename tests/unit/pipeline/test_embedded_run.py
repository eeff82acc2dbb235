"""``openlfr run`` (embedded mode) on the built sample: one alert per enrolled walker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from openlfr import paths


def test_openlfr_run_without_arguments_alerts_on_the_sample(tmp_path: Path, model_dir: Path) -> None:
    env = {**os.environ, "OPENLFR_BUILD_DIR": str(tmp_path), "OPENLFR_MODEL_DIR": str(model_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "openlfr.cli", "run", "--json"],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=paths.REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(a["subject_id"] for a in alerts) == ["barack_obama", "joe_biden"], proc.stderr
    for alert in alerts:
        assert len(alert["alert_id"]) == 32 and alert["camera_id"] == "cam-1"
        assert alert["score"] >= alert["threshold"] and alert["capture_ts"] > 0
    summary = json.loads(proc.stderr.split("openlfr run summary: ", 1)[1].splitlines()[0])
    assert summary["alerts"] == 2 and summary["frames_processed"] == summary["frames_published"] > 30
    assert summary["tracks"] >= 3 and summary["dead_letters"] == 0


def test_openlfr_run_refuses_half_given_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "openlfr.cli", "run", "--source", str(tmp_path / "v.mp4")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2 and "--watchlist" in proc.stderr
