"""Detector gating on the shared videos: frames/s, crops per frame and recall, gating off vs motion vs pyramid.

Each video is sampled at ``--fps`` (5 by default), and the load test's composed camera
(``load-tests/loadgen.py``'s first camera, seed 7, 30 s) is added as a fourth clip and its frames are given to the detector one
at a time, in order, as one camera's frames reach the detect stage:

* off: every crop of the pyramid on every frame (the default detector);
* motion: :class:`openlfr.vision.gating.MotionGate` picks the crops (coarse always, fine tiles
  where the frame moved or a face was found lately, everything on keyframes);
* pyramid: :class:`openlfr.vision.pyramid_gate.PyramidGate` (coarse always, fine tiles only where
  keyframes found faces small enough to need them, a crop of its own around each small face
  being followed, and its still-scene rules: keyframes run fine tiles where the frame changed,
  every third one everything; a still followed face is re-found every fourth frame), the crops
  around followed faces on the short-range model (``OPENLFR_DETECTOR_FOLLOW=short``): the
  detect stage's default;
* pyramid-full-follow: the same with those crops on the full-range model;
* pyramid-moving: without the still-scene rules, with the short-range follow model;
* pyramid-2026-12-04: neither (every keyframe runs everything, every followed face gets its
  full-range crop on every frame): the default before 2026-12-05.

A fifth clip is ``benchmarks/cpu_per_face.py``'s scene (every frame, 10 fps, with its ground
truth). CPU seconds are this process's (every thread) over the clip.

Recall is the share of the faces found with gating off that the gated run also finds (IoU >=
0.5), so gating off is the reference, not ground truth; "new" counts the gated run's faces that
gating off did not find (a zoomed crop around a followed face can find it where the fixed
tiles miss it; not checked against ground truth). Time per frame includes the gate's own
work (downscale, difference, tile selection). Local onnxruntime backend.

Usage: .venv/bin/python benchmarks/bench_gating.py [--fps 5] [--keyframe 10] [--gates motion,pyramid]
       [--out results.json]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.inference.local import LocalBackend
from openlfr.models.build import build_all
from openlfr.vision.detections import Detections
from openlfr.vision.detector import FaceDetector, box_iou, roi_tile
from openlfr.vision.factory import build_analyzer
from openlfr.vision.gating import MotionGate
from openlfr.vision.pyramid_gate import PyramidGate
from openlfr.vision.video import iter_video_frames

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"

VIDEOS = {
    "facenet_pytorch video.mp4 (1080p pedestrians)": FACES / "facenet_pytorch/examples/video.mp4",
    "dlib MOT20-05 (826x540 crowd)": FACES / "dlib/dlib/test/ffmpeg_data/MOT20-05-raw_even_shorter.mp4",
    "face_recognition short_hamilton_clip.mp4 (640x360)": FACES
    / "face_recognition/examples/short_hamilton_clip.mp4",
}

MATCH_IOU = 0.5

#: Faces at least this wide (box pixels) are the ones recognition can use: below it the
#: inter-eye distance is under ~15 px and the match stage's quality gate drops most of them.
RECOGNISABLE_PX = 40.0


_STILL_OFF = {"still_keyframes": 0, "still_refresh": 1}

#: The variants compared, by name: a gate made for a keyframe interval, and the follow model.
GATES = {
    "motion": (lambda k: MotionGate(keyframe_interval=k), "short"),
    "pyramid": (lambda k: PyramidGate(keyframe_interval=k), "short"),
    "pyramid-full-follow": (lambda k: PyramidGate(keyframe_interval=k), "same"),
    "pyramid-moving": (lambda k: PyramidGate(keyframe_interval=k, **_STILL_OFF), "short"),
    "pyramid-2026-12-04": (lambda k: PyramidGate(keyframe_interval=k, **_STILL_OFF), "same"),
}

#: ``benchmarks/cpu_per_face.py``'s scene (seed 7), every frame.
CPU_SCENE = "cpu_per_face scene (1280x720, 10 fps, 2 lanes of walkers, every frame)"


def cpu_scene_frames() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frames of ``cpu_per_face.py``'s scene (built on first use) and its pasted faces."""
    import cv2

    sys.path.insert(0, str(paths.REPO_ROOT / "benchmarks"))
    import cpu_per_face

    scene = cpu_per_face.build_scene(7)
    capture = cv2.VideoCapture(str(scene.video))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    faces = json.loads(scene.truth.read_text())["frame_faces"]
    truth = [np.array([f["box"] for f in frame], np.float32).reshape(-1, 4) for frame in faces]
    return frames, truth


def recognisable(found: Detections) -> Detections:
    """Only the faces at least ``RECOGNISABLE_PX`` wide."""
    boxes = np.asarray(found.boxes)
    keep = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= RECOGNISABLE_PX
    return Detections(boxes=boxes[keep], scores=np.asarray(found.scores)[keep], keypoints=np.asarray(found.keypoints)[keep])


#: The load test's composed camera (``load-tests/loadgen.py``, one camera, seed 7, 30 s).
LOADTEST = "load-test scenario (1280x720 fixed camera, 3 lanes of walkers)"


def loadtest_frames(fps: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frames of the load generator's first camera, composed as a load-test run makes them,
    and the boxes of the faces pasted into each (the ground truth)."""
    import cv2

    sys.path.insert(0, str(paths.REPO_ROOT / "load-tests"))
    import loadgen

    parser = argparse.ArgumentParser()
    loadgen.add_scenario_args(parser)
    with tempfile.TemporaryDirectory() as work:
        scenario = loadgen.build_scenario(parser.parse_args(["--cameras", "1", "--fps", f"{fps:g}", "--pool-s", "30",
                                                             "--seed", "7", "--work-dir", work]))
    pool = scenario.pools[scenario.cameras[0]]
    frames = [cv2.cvtColor(cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
              for f in pool]
    truth = [np.array([face.box for face in f.faces], np.float32).reshape(-1, 4) for f in pool]
    return frames, truth


def truth_recall(truth: list[np.ndarray], found: list[Detections]) -> float:
    """Share of the pasted faces a run found (IoU >= MATCH_IOU, one to one)."""
    total = sum(len(t) for t in truth)
    hits = sum(matched(Detections(boxes=t, scores=np.ones(len(t), np.float32),
                                  keypoints=np.zeros((len(t), 6, 2), np.float32)), d)
               for t, d in zip(truth, found))
    return hits / total if total else float("nan")


def run(detector: FaceDetector, frames: list[np.ndarray], gate: MotionGate | PyramidGate | None) -> dict:
    """Detect every frame in order; seconds, crops and detections per frame, CPU seconds."""
    seconds: list[float] = []
    crops: list[int] = []
    found: list[Detections] = []
    cpu_started = time.process_time()
    for frame in frames:
        t0 = time.perf_counter()
        tiles = detector.tiles_for(frame.shape[1], frame.shape[0])
        if gate is None:
            det = detector.detect_many([frame])[0]
            crops.append(len(tiles))
        elif isinstance(gate, PyramidGate):
            plan = gate.plan("bench", frame, tiles, input_size=detector.follow_input_size)
            det = detector.detect_many([frame], tile_masks=[plan.mask], extra_tiles=[plan.extra])[0]
            gate.remember("bench", det.boxes)
            crops.append(plan.crops)
        else:
            mask = gate.select("bench", frame, tiles)
            det = detector.detect_many([frame], tile_masks=[mask])[0]
            gate.remember("bench", det.boxes)
            crops.append(int(mask.sum()))
        seconds.append(time.perf_counter() - t0)
        found.append(det)
    return {"seconds": seconds, "crops": crops, "found": found, "cpu_s": time.process_time() - cpu_started}


def matched(reference: Detections, other: Detections) -> int:
    """Reference faces that ``other`` also has (IoU >= MATCH_IOU, one to one by best IoU)."""
    if len(reference) == 0 or len(other) == 0:
        return 0
    iou = box_iou(np.asarray(reference.boxes), np.asarray(other.boxes))
    used: set[int] = set()
    hits = 0
    for i in np.argsort(-iou.max(axis=1)):
        for j in np.argsort(-iou[i]):
            if iou[i, j] < MATCH_IOU:
                break
            if int(j) not in used:
                used.add(int(j))
                hits += 1
                break
    return hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second of video")
    parser.add_argument("--keyframe", type=int, default=10, help="gate keyframe interval")
    parser.add_argument("--gates", default=",".join(GATES), help=f"comma-separated, of {', '.join(GATES)}")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    names = [g for g in args.gates.split(",") if g]
    unknown = [g for g in names if g not in GATES]
    if unknown or not names:
        parser.error(f"--gates: unknown {unknown or 'none given'}; choose from {', '.join(GATES)}")
    model_dir = paths.model_dir()
    build_all(model_dir)
    backend = LocalBackend(model_dir)
    detectors = {follow: build_analyzer(ModelSettings(detector_follow=follow), backend=backend).detector
                 for follow in ("short", "same")}
    detector = detectors["same"]
    rows = []
    clips = {label: [f.image for f in iter_video_frames(path, sample_fps=args.fps)] for label, path in VIDEOS.items()}
    truths: dict[str, list[np.ndarray]] = {}
    clips[LOADTEST], truths[LOADTEST] = loadtest_frames(args.fps)
    clips[CPU_SCENE], truths[CPU_SCENE] = cpu_scene_frames()
    for label, frames in clips.items():
        for d in detectors.values():
            d.detect_many(frames[:1], extra_tiles=[(roi_tile((10, 10, 60, 60), frame_width=frames[0].shape[1],
                                                             frame_height=frames[0].shape[0], input_size=d.follow_input_size,
                                                             factor=4.0, min_side=d.follow_input_size),)])  # warm-up
        off = run(detector, frames, None)
        reference = sum(len(d) for d in off["found"])
        row = {"video": label, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "frames": len(frames),
               "fps_off": len(frames) / sum(off["seconds"]), "crops_off": float(np.mean(off["crops"])),
               "faces_off": reference, "cpu_s_off": off["cpu_s"]}
        truth = truths.get(label)
        if truth is not None:
            row["truth_faces"] = sum(len(t) for t in truth)
            row["truth_recall_off"] = truth_recall(truth, off["found"])
        for name in names:
            make_gate, follow = GATES[name]
            on = run(detectors[follow], frames, make_gate(args.keyframe))
            hits = sum(matched(a, b) for a, b in zip(off["found"], on["found"]))
            faces = sum(len(d) for d in on["found"])
            big = sum(len(recognisable(d)) for d in off["found"])
            big_hits = sum(matched(recognisable(a), b) for a, b in zip(off["found"], on["found"]))
            row.update({f"fps_{name}": len(frames) / sum(on["seconds"]), f"crops_{name}": float(np.mean(on["crops"])),
                        f"faces_{name}": faces, f"recall_{name}": hits / reference if reference else float("nan"),
                        f"recall40_{name}": big_hits / big if big else float("nan"), "faces40_off": big,
                        f"new_{name}": faces - hits, f"cpu_s_{name}": on["cpu_s"]})
            if truth is not None:
                row[f"truth_recall_{name}"] = truth_recall(truth, on["found"])
        rows.append(row)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "python": sys.version.split()[0],
        "sample_fps": args.fps,
        "keyframe_interval": args.keyframe,
        "gates": names,
    }
    print(f"\nMachine: {meta['machine']}; date {meta['date']}; {args.fps:g} fps sampling, "
          f"keyframe every {args.keyframe} frames; local onnxruntime\n")
    heads = " / ".join(["off", *names])
    print(f"| video | frames | frames/s {heads} | CPU s {heads} | crops per frame {heads} | faces {heads} | "
          f"recall vs off: {', '.join(names)} | faces >= 40 px off; recall: {', '.join(names)} | "
          f"new faces: {', '.join(names)} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['video']} | {r['frames']} | " + " / ".join(f"{r['fps_' + n]:.1f}" for n in ["off", *names])
              + " | " + " / ".join(f"{r['cpu_s_' + n]:.2f}" for n in ["off", *names])
              + " | " + " / ".join(f"{r['crops_' + n]:.1f}" for n in ["off", *names])
              + " | " + " / ".join(f"{r['faces_' + n]}" for n in ["off", *names])
              + " | " + ", ".join(f"{r['recall_' + n]:.3f}" for n in names)
              + f" | {r['faces40_off']}; " + ", ".join(f"{r['recall40_' + n]:.3f}" for n in names)
              + " | " + ", ".join(f"{r['new_' + n]}" for n in names) + " |")
    for r in rows:
        if "truth_faces" in r:
            print(f"\n{r['video']}: of the {r['truth_faces']} faces pasted in, found (IoU >= {MATCH_IOU}) "
                  + ", ".join(f"{n} {r['truth_recall_' + n]:.3f}" for n in ["off", *names]))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
