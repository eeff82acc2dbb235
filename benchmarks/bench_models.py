"""Speed of the face models, local onnxruntime and a real Triton server, beside dlib itself.

Measures, in one run on one machine:
  * embedder faces/s at batch 1, 8 and 32 (local and Triton gRPC), and dlib's own
    ``compute_face_descriptor`` time per face on the same chips;
  * detector frames/s on 720p and 1080p frames (local and Triton), tiling on as configured;
  * the whole analyzer (detect + landmarks + chip + quality + embed) frames/s at 1080p.

Usage: .venv/bin/python benchmarks/bench_models.py [--quick] [--out results.json]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.inference.base import InferenceBackend
from openlfr.inference.local import LocalBackend
from openlfr.models.build import build_all
from openlfr.models.specs import ALL_MODELS
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image
from openlfr.vision.video import iter_video_frames

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


def timeit(fn: Callable[[], object], *, min_s: float, min_runs: int = 3) -> float:
    """Median seconds per call after one warm-up call, running for at least ``min_s``."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def real_chips(n: int) -> np.ndarray:
    """n real 150x150 dlib face chips from the shared set, repeated if needed."""
    files = sorted((FACES / "dlib/examples/johns").rglob("*.jpg"))
    chips = [load_image(f) for f in files]
    chips = [c for c in chips if c.shape == (150, 150, 3)]
    return np.stack([chips[i % len(chips)] for i in range(n)])


def frames() -> dict[str, np.ndarray]:
    """A real 1080p frame (CCTV-like arcade video) and the same frame at 720p."""
    import cv2

    frame = next(iter_video_frames(FACES / "facenet_pytorch/examples/video.mp4", sample_fps=1)).image
    return {"1080p": frame, "720p": cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA)}


def bench_backend(name: str, backend: InferenceBackend, settings: ModelSettings, min_s: float) -> list[dict]:
    from openlfr.vision.embedder import FaceEmbedder

    rows = []
    embedder = FaceEmbedder(backend=backend)
    for batch in (1, 8, 32):
        chips = real_chips(batch)
        sec = timeit(lambda: embedder.embed(chips), min_s=min_s)
        rows.append({"what": "embedder", "backend": name, "batch": batch, "ms_per_call": sec * 1e3,
                     "per_second": batch / sec, "unit": "faces/s"})
    analyzer = build_analyzer(settings, backend=backend)
    for label, frame in frames().items():
        sec = timeit(lambda: analyzer.detector.detect(frame), min_s=min_s)
        rows.append({"what": f"detector {label}", "backend": name, "batch": 1, "ms_per_call": sec * 1e3,
                     "per_second": 1 / sec, "unit": "frames/s"})
    frame = frames()["1080p"]
    n_faces = len(analyzer.analyze(frame))
    sec = timeit(lambda: analyzer.analyze(frame), min_s=min_s)
    rows.append({"what": f"analyzer 1080p ({n_faces} faces)", "backend": name, "batch": 1,
                 "ms_per_call": sec * 1e3, "per_second": 1 / sec, "unit": "frames/s"})
    return rows


def bench_dlib(min_s: float) -> list[dict]:
    import dlib

    from openlfr.models.sources import dlib_model_path

    net = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
    chip = real_chips(1)[0]
    sec = timeit(lambda: net.compute_face_descriptor(chip), min_s=min_s)
    return [{"what": "embedder (dlib compute_face_descriptor)", "backend": "dlib C++", "batch": 1,
             "ms_per_call": sec * 1e3, "per_second": 1 / sec, "unit": "faces/s"}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton server")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    min_s = 1.0 if args.quick else 4.0
    model_dir = paths.model_dir()
    build_all(model_dir)
    settings = ModelSettings()
    rows = bench_dlib(min_s)
    local = LocalBackend(model_dir)
    rows += bench_backend("local onnxruntime", local, settings, min_s)
    if not args.no_triton:
        from openlfr.inference.triton import TritonBackend
        from openlfr.inference.triton_repo import assemble_repository
        from openlfr.inference.triton_server import TritonServer

        repo = assemble_repository("python", paths.build_dir() / "triton" / "python", model_dir,
                                   list(ALL_MODELS.values()))
        with TritonServer(model_repository=repo, work_dir=paths.build_dir() / "triton-work") as server:
            triton = TritonBackend(url=server.grpc_url, protocol="grpc", timeout_s=60)
            rows += bench_backend("Triton gRPC (python backend, CPU)", triton, settings, min_s)
            triton.close()
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "python": sys.version.split()[0],
    }
    print(f"\nMachine: {meta['machine']}; date {meta['date']}\n")
    print("| what | backend | batch | ms per call | throughput |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['what']} | {r['backend']} | {r['batch']} | {r['ms_per_call']:.1f} | "
              f"{r['per_second']:.1f} {r['unit']} |")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
