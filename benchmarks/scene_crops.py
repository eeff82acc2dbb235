"""What a scene crop costs per face: bytes on the faces and embeddings topics, and CPU at detect.

Real frames: the shared set's video (``facenet_pytorch/examples/video.mp4``, every ``--step``-th
frame) and its crowd photos (``crowd_scenes/``). The detector finds the faces once per frame
(the detect stage's own analyzer and settings); then, per face, the scene crop is made as the
detect stage makes it (``openlfr.vision.scene.SceneCropper`` with the default settings unless
given) and timed in process CPU time (the least of ``--repeat`` rounds). Bytes added per face
are those of the ``scene_jpeg`` field in the face's JSON (base64 and key), next to the face's
whole JSON without it (chip PNG, box, landmarks, quality); detect's CPU per face is the
detector's ``locate_many`` (with chips) over the same frames, for scale.

Usage: .venv/bin/python benchmarks/scene_crops.py [--step 4] [--repeat 3] [--max-px 320]
       [--scale 3] [--quality 75]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.messages.models import DetectedFace, FaceQualityRecord
from openlfr.pipeline.detect import encode_chip
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image
from openlfr.vision.scene import SceneCropper

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
VIDEO = "facenet_pytorch/examples/video.mp4"
CROWDS = "crowd_scenes"


def _video_frames(step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(FACES_DIR / VIDEO))
    frames = []
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if n % step == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        n += 1
    cap.release()
    return frames


def _crowd_frames() -> list[np.ndarray]:
    return [load_image(p) for p in sorted((FACES_DIR / CROWDS).glob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def _measure(name: str, frames: list[np.ndarray], analyzer, cropper: SceneCropper, repeat: int) -> dict:  # noqa: ANN001
    started = time.process_time()
    located = [analyzer.locate_many([frame], keep_chips=True)[0] for frame in frames]
    detect_cpu = time.process_time() - started
    boxes = [(frame, found.boxes[i]) for frame, found in zip(frames, located) for i in range(len(found))]
    if not boxes:
        return {"set": name, "frames": len(frames), "faces": 0}
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        crops = [cropper.crop(frame, box) for frame, box in boxes]
        best = min(best, time.process_time() - started)
    sizes = [len(c) for c in crops if c is not None]
    added, without = [], []
    k = 0
    for frame, found in zip(frames, located):
        for i in range(len(found)):
            face = DetectedFace(index=i, box=tuple(float(v) for v in found.boxes[i]),
                                score=min(max(float(found.scores[i]), 0.0), 1.0),
                                landmarks=tuple((float(x), float(y)) for x, y in found.landmarks[i]),
                                quality=FaceQualityRecord(**found.quality.row(i)),
                                chip_png=encode_chip(found.chips[i]))
            plain = len(face.model_dump_json())
            with_scene = len(face.model_copy(update={"scene_jpeg": crops[k]}).model_dump_json())
            added.append(with_scene - plain)
            without.append(plain)
            k += 1
    return {
        "set": name,
        "frames": len(frames),
        "resolution": f"{frames[0].shape[1]}x{frames[0].shape[0]}" if len({f.shape for f in frames}) == 1 else "mixed",
        "faces": len(boxes),
        "left_out": len(boxes) - len(sizes),
        "jpeg_bytes_median": int(statistics.median(sizes)),
        "jpeg_bytes_p95": int(np.percentile(sizes, 95)),
        "jpeg_bytes_max": max(sizes),
        "json_bytes_added_mean": round(statistics.fmean(added)),
        "face_json_bytes_without_mean": round(statistics.fmean(without)),
        "crop_cpu_ms_per_face": round(1000 * best / len(boxes), 3),
        "detect_cpu_ms_per_face": round(1000 * detect_cpu / len(boxes), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one JSON row per frame set, then a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=4, help="every this-many-th frame of the video")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of cropping timed (the least is kept)")
    parser.add_argument("--max-px", type=int, default=320, help="OPENLFR_SCENE_CROP_MAX_PX")
    parser.add_argument("--scale", type=float, default=3.0, help="OPENLFR_SCENE_CROP_SCALE")
    parser.add_argument("--quality", type=int, default=75, help="OPENLFR_SCENE_CROP_JPEG_QUALITY")
    args = parser.parse_args(argv)
    if args.step < 1 or args.repeat < 1:
        parser.error("--step and --repeat must be at least 1")
    analyzer = build_analyzer(ModelSettings())
    cropper = SceneCropper(scale=args.scale, max_px=args.max_px, jpeg_quality=args.quality,
                           registry=CollectorRegistry())
    rows = [_measure(f"video ({VIDEO}, every {args.step}th frame)", _video_frames(args.step), analyzer, cropper,
                     args.repeat),
            _measure(f"crowd photos ({CROWDS}/)", _crowd_frames(), analyzer, cropper, args.repeat)]
    for row in rows:
        print(json.dumps(row))
    print(f"\n{platform.processor() or platform.machine()}, {cv2.getNumThreads()} OpenCV threads, "
          f"scale {args.scale}, max {args.max_px} px, quality {args.quality}\n")
    cols = ["set", "frames", "faces", "jpeg_bytes_median", "jpeg_bytes_p95", "json_bytes_added_mean",
            "face_json_bytes_without_mean", "crop_cpu_ms_per_face", "detect_cpu_ms_per_face"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
