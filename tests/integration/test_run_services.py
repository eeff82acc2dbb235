"""``make services`` (``scripts/run-services.sh``) as an operator runs it: a real broker and the four
services as processes, the sample fed through them; after the source ends it prints the console's
address and the reviewers' tokens, the console and the review API answer with them, and the
services stay up until Ctrl-C, which stops every one of them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from openlfr import paths

pytestmark = pytest.mark.integration


def _free_block(size: int) -> int:
    """The first of ``size`` consecutive free TCP ports on the loopback."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + size >= 65535:
            continue
        free = True
        for port in range(first, first + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return first
    raise RuntimeError("no block of free ports")


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(1500)
def test_run_services_stays_up_until_ctrl_c_and_prints_the_console_and_tokens(tmp_path: Path) -> None:
    http0 = _free_block(4)
    work = tmp_path / "run"
    env = {**os.environ, "OPENLFR_RUN_DIR": str(work), "OPENLFR_KAFKA_PORT": str(_free_block(1)),
           "OPENLFR_RUN_HTTP_PORT": str(http0)}
    env.pop("OPENLFR_BUILD_DIR", None)
    # Its own process group, as a terminal's foreground job: Ctrl-C signals the whole group.
    proc = subprocess.Popen(["scripts/run-services.sh"], cwd=paths.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ended = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "The source has ended" in line:
                ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for _ in range(1200):
            if ended.is_set() or proc.poll() is not None:
                break
            time.sleep(1)
        time.sleep(1)  # the message's remaining lines
        out = "".join(lines)
        assert ended.is_set(), out[-6000:]
        console = f"http://127.0.0.1:{http0 + 3}/console"
        assert f"console:    {console}" in out, out[-3000:]
        printed = re.search(r"first review, paste reviewer-a's token:\s+(\S+)", out)
        assert printed, out[-3000:]
        token = printed.group(1)
        assert f"reviewer-a (reviewer): {token}\n" in (work / "tokens.txt").read_text()
        assert "ALERT " in out, out[-3000:]  # the sample's alerts, printed as they arrived

        # Past the 20 s after which it used to tear the stack down: still up, and the printed
        # address and token are what a reviewer needs.
        time.sleep(25)
        assert proc.poll() is None, "".join(lines)[-3000:]
        status, page = _get(console)
        assert status == 200 and b"<html" in page.lower()
        status, me = _get(f"http://127.0.0.1:{http0 + 3}/v1/me", token)
        assert status == 200 and json.loads(me)["name"] == "reviewer-a", me
        status, body = _get(f"http://127.0.0.1:{http0 + 3}/v1/alerts", token)
        assert status == 200, body
        assert "barack_obama" in {a["subject_id"] for a in json.loads(body)["items"]}, body

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(120) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    reader.join(10)
    deadline = time.monotonic() + 30
    while any(_answers(p) for p in range(http0, http0 + 4)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_answers(p) for p in range(http0, http0 + 4)), "a service outlived Ctrl-C"
