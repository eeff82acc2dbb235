"""Memory of the match service under concurrent enrolment uploads: the peak resident set size while
N clients each upload a small PNG that decodes large (a 116 KB file of 36 megapixels, mostly one
colour, with a real face pasted in), against the service at rest.

Runs a real broker and the match service as a process (``openlfr.testing.stack``); the service's
``OPENLFR_API_MAX_CONCURRENT_DECODES`` (default 2) bounds how many are decoded at once.

Usage: .venv/bin/python benchmarks/enrol_memory.py [--clients 8] [--decodes 2]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ServiceStack

FACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "face_recognition" / "examples" / \
    "knn_examples" / "train" / "obama" / "obama.jpg"


def _big_png(side: int = 6000) -> bytes:
    canvas = np.full((side, side, 3), 200, np.uint8)
    face = np.asarray(Image.open(FACE).convert("RGB"))
    canvas[: face.shape[0], : face.shape[1]] = face
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--decodes", type=int, default=2, help="OPENLFR_API_MAX_CONCURRENT_DECODES")
    args = parser.parse_args()
    png = _big_png()
    with tempfile.TemporaryDirectory() as work, KafkaBroker(work_dir=Path(work) / "kafka") as broker:
        stack = ServiceStack(broker.bootstrap, Path(work) / "stack", env={
            "OPENLFR_API_MAX_CONCURRENT_DECODES": str(args.decodes), "OPENLFR_API_DECODE_WAIT_S": "120",
        })
        try:
            (match,) = stack.start_ready("match")
            base, token = match.base_url, stack.tokens["admin"]

            def call(method: str, path: str, body: bytes, kind: str) -> int:
                request = urllib.request.Request(base + path, data=body, method=method, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": kind})
                try:
                    with urllib.request.urlopen(request, timeout=300) as resp:
                        return resp.status
                except urllib.error.HTTPError as exc:
                    return exc.code

            assert call("POST", "/v1/watchlists", json.dumps({"id": "wl", "name": "wl"}).encode(),
                        "application/json") == 201
            for i in range(args.clients):
                expires = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 86_400))
                subject = {"id": f"s-{i}", "display_name": f"s {i}", "category": "wanted", "reason": "bench",
                           "legal_basis": "bench", "expires_at": expires}
                assert call("POST", "/v1/watchlists/wl/subjects", json.dumps(subject).encode(),
                            "application/json") == 201
            rest = _rss_mb(match.proc.pid)
            peak, done = rest, threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, _rss_mb(match.proc.pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            codes: list[int] = []
            started = time.monotonic()
            uploads = [threading.Thread(target=lambda i=i: codes.append(call(
                "POST", f"/v1/subjects/s-{i}/images?source=bench", png, "image/png"))) for i in range(args.clients)]
            for t in uploads:
                t.start()
            for t in uploads:
                t.join()
            done.set()
            sampler.join()
            print(f"{args.clients} concurrent uploads of a {len(png) / 1024:.0f} KB PNG of 36 MP, "
                  f"OPENLFR_API_MAX_CONCURRENT_DECODES={args.decodes}: RSS at rest {rest:.0f} MB, peak {peak:.0f} MB "
                  f"(+{peak - rest:.0f} MB), answers {sorted(codes)}, {time.monotonic() - started:.1f} s")
        finally:
            stack.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
