"""`python -m openlfr.inference.triton_exec`, the CPU Triton image's entry point, serving for real:
the process becomes tritonserver (exec, so a container's SIGTERM reaches the server), serves the
python repository variant over stand-in models, and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from openlfr.inference.testing import write_standin_onnx
from openlfr.inference.triton import TritonBackend
from openlfr.inference.triton_repo import assemble_repository
from openlfr.models.specs import EMBEDDER
from openlfr.subprocesses import free_port

pytestmark = pytest.mark.integration


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.timeout(180)
def test_the_entry_point_becomes_tritonserver_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_standin_onnx(EMBEDDER, models / EMBEDDER.onnx_file)
    repository = assemble_repository("python", tmp_path / "repo", models, [EMBEDDER])
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = (tmp_path / "triton.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "openlfr.inference.triton_exec", "--model-repository", str(repository),
         "--work-dir", str(tmp_path / "work"), "--host", "127.0.0.1", "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--exit-timeout", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _ready(f"http://127.0.0.1:{http}/v2/health/ready"):
            assert process.poll() is None, (tmp_path / "triton.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "triton.log").read_text()[-4000:]
            time.sleep(0.2)
        # The same process, now the server itself.
        assert Path(os.readlink(f"/proc/{process.pid}/exe")).name == "tritonserver"
        backend = TritonBackend(url=f"127.0.0.1:{grpc}")
        try:
            backend.load(EMBEDDER)
            out = backend.infer(EMBEDDER, {"chips": np.zeros((2, 150, 150, 3), np.float32)})
        finally:
            backend.close()
        assert out["embeddings"].shape == (2, 128)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
