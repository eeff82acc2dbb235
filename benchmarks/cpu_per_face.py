"""CPU seconds per ground-truth face: ``openlfr run`` on a file against the ``face_recognition`` loop.

One command, the same frames, whole processes (issue 12's Targets):

* **The scene** (built once under ``build/benchmarks/cpu_per_face/``, kept for later runs): a
  26 s 1280x720 video at 10 fps (MJPG, every frame a JPEG as ingest would make it) of 16 people
  from ``../shared/data/faces`` crossing two lanes of a blurred street, one after another, 3 of
  them enrolled (their first photo, one face in it, in ``watchlist/``; their second photo walks),
  13 strangers (people with any number of photos, their first photo walking); face
  boxes about 110 px wide (``openlfr.testing.loadgen``'s sprites); ``truth.json`` holds every
  frame's pasted faces. Seeded; the same seed gives the same scene.
* **openlfr**: ``openlfr run --source scene.avi --watchlist watchlist --sample-fps 10 --json``
  as a child process (every frame; models, enrolment, cohort, all stages in one process).
* **face_recognition**: the loop of ``load-tests/baseline_face_recognition.py`` (dlib HOG with
  one upsampling, 5-point landmarks, the ResNet descriptor, nearest enrolled descriptor within
  0.6) as a child process on the same video file, enrolling the same photos; its "alert" is the
  first recognition of a person after a 2 s gap.
* **Measured**: each child's CPU seconds (user + system, from ``wait4``'s rusage: every thread
  of the whole process, start-up included) and wall time; CPU seconds per ground-truth face
  (pasted faces summed over frames); the ratio loop / openlfr; the alerts of each, scored by
  ``openlfr.testing.loadgen.check_alerts`` (each walk of an enrolled person seen in at least 3
  frames must alert once; an alert naming anyone not on screen is wrong). Each child's output
  is kept under ``build/benchmarks/cpu_per_face/runs/``.

The two run one after the other, never at once. ``--repeat N`` alternates them N times and
reports each run and each side's least CPU (the run least disturbed by other work on shared
cores). ``--env KEY=VALUE`` sets a variable for the openlfr child only (e.g.
``OPENLFR_DETECT_GATING=off``, ``OPENLFR_ORT_ALLOW_SPINNING=1``); ``--only openlfr`` skips the
loop for A/B runs of openlfr settings (the ratio then needs a loop figure from another run).

Usage:
    .venv/bin/python benchmarks/cpu_per_face.py [--repeat 2] [--only openlfr|baseline]
        [--env KEY=VALUE ...] [--openlfr-cmd ".venv/bin/openlfr"] [--json out.json]
Prints one Markdown row per run and a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from openlfr import paths

logger = logging.getLogger("openlfr.benchmarks.cpu_per_face")

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
SCENE_ROOT = paths.build_dir() / "benchmarks" / "cpu_per_face"
BACKGROUND = "facenet_pytorch/examples/video.mp4"
LOADTESTS = paths.REPO_ROOT / "load-tests"

FPS = 10.0
DURATION_S = 26.0
PEOPLE = 16
ENROLLED = 3
#: The two lanes used, of ``openlfr.testing.loadgen.LANES`` (top and bottom).
LANES_USED = (0, 2)
WALK_FRAMES = 28
WALK_PERIOD = 30
LANE_OFFSETS = (2, 16)
CAMERA = "cam-1"
#: The match stage's ``min_votes`` and ``track_max_gap_s`` defaults: a walk needs this many
#: frames to be expected to alert; passes within the gap may be one track.
MIN_VOTES = 3
TRACK_GAP_S = 2.0
SCENE_VERSION = 2


# -- the scene ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scene:
    """Where a built scene lies."""

    root: Path

    @property
    def video(self) -> Path:
        return self.root / "scene.avi"

    @property
    def watchlist(self) -> Path:
        return self.root / "watchlist"

    @property
    def truth(self) -> Path:
        return self.root / "truth.json"

    def built(self) -> bool:
        return self.video.is_file() and self.truth.is_file() and self.watchlist.is_dir()


def build_scene(seed: int) -> Scene:
    """Compose the scene for ``seed`` unless it is already built; return where it lies."""
    import cv2
    import numpy as np

    from openlfr.config import ModelSettings
    from openlfr.testing.loadgen import Walk, blurred_background, make_sprite, read_people, render_frame
    from openlfr.vision.factory import build_analyzer
    from openlfr.vision.images import load_image

    scene = Scene(SCENE_ROOT / f"v{SCENE_VERSION}-seed{seed}")
    if scene.built():
        return scene
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    analyzer = build_analyzer(ModelSettings())

    def faces_in(photo: Path) -> tuple[np.ndarray, np.ndarray]:
        rgb = load_image(photo)
        return rgb, analyzer.analyze(rgb).boxes

    def largest(boxes: np.ndarray) -> np.ndarray:
        return boxes[int(np.argmax(boxes[:, 2] - boxes[:, 0]))]

    # Enrolled: people with 2+ photos, in seeded order, whose first photo shows exactly one face
    # (so both sides can enrol it) and whose second shows one to walk with. Strangers: everyone
    # else, their first photo with a face.
    everyone = read_people(FACES_DIR)
    people = [everyone[int(i)] for i in rng.permutation(len(everyone))]
    enrolled: dict[str, Path] = {}
    sprites = []
    for person in people:
        if len(enrolled) == ENROLLED:
            break
        if len(person.photos) < 2 or len(faces_in(person.photos[0])[1]) != 1:
            continue
        rgb, boxes = faces_in(person.photos[1])
        if len(boxes):
            enrolled[person.person_id] = person.photos[0]
            sprites.append(make_sprite(rgb, largest(boxes), person_id=person.person_id, enrolled=True))
    for person in people:
        if len(sprites) == PEOPLE:
            break
        if person.person_id in enrolled:
            continue
        rgb, boxes = faces_in(person.photos[0])
        if len(boxes):
            sprites.append(make_sprite(rgb, largest(boxes), person_id=person.person_id, enrolled=False))
    if len(enrolled) != ENROLLED or len(sprites) != PEOPLE:
        raise ValueError(f"found {len(enrolled)} people to enrol and {len(sprites)} to walk, expected "
                         f"{ENROLLED} and {PEOPLE}")
    order = [int(i) for i in rng.permutation(PEOPLE)]
    walks = []
    for n, sprite_index in enumerate(order):
        lane_no = n % 2
        start = LANE_OFFSETS[lane_no] + (n // 2) * WALK_PERIOD
        walks.append(Walk(f"{CAMERA}/w{n}", sprite_index, LANES_USED[lane_no], start, WALK_FRAMES,
                          bool(rng.random() < 0.5)))
    cap = cv2.VideoCapture(str(FACES_DIR / BACKGROUND))
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise ValueError(f"cannot read the background {FACES_DIR / BACKGROUND}")
    background = blurred_background(bgr)

    SCENE_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tmp-", dir=SCENE_ROOT))
    frames = int(round(DURATION_S * FPS))
    writer = cv2.VideoWriter(str(work / "scene.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (1280, 720))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 90)
    truth_frames = []
    for index in range(frames):
        rgb, faces = render_frame(background, sprites, walks, index)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        truth_frames.append([{"walk_id": f.walk_id, "person_id": f.person_id, "enrolled": f.enrolled,
                              "box": [round(v, 1) for v in f.box]} for f in faces])
    writer.release()
    for person_id, photo in enrolled.items():
        (work / "watchlist" / person_id).mkdir(parents=True)
        (work / "watchlist" / person_id / photo.name).write_bytes(photo.read_bytes())
    truth = {
        "seed": seed, "fps": FPS, "frames": frames, "camera_id": CAMERA, "frame_faces": truth_frames,
        "people": [{"person_id": s.person_id, "enrolled": s.enrolled} for s in sprites],
        "enrolled": sorted(enrolled),
    }
    (work / "truth.json").write_text(json.dumps(truth) + "\n")
    if scene.root.exists():  # another run built it meanwhile
        return scene
    work.rename(scene.root)
    logger.info('built scene path="%s" seconds=%.1f', scene.root, time.monotonic() - started)
    return scene


def truth_of(scene: Scene) -> tuple[Any, dict[str, Any]]:
    """The scene's ``GroundTruth`` (capture time = frame index / fps) and its raw JSON."""
    from openlfr.testing.loadgen import GroundTruth, TruthFace

    raw = json.loads(scene.truth.read_text())
    truth = GroundTruth()
    for index, faces in enumerate(raw["frame_faces"]):
        truth.add_frame(raw["camera_id"], index / raw["fps"],
                        [TruthFace(f["walk_id"], f["person_id"], f["enrolled"], tuple(f["box"])) for f in faces])
    return truth, raw


# -- the children ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One child process: its CPU and wall seconds, exit status and output."""

    cpu_s: float
    user_s: float
    system_s: float
    wall_s: float
    max_rss_mb: float
    status: int
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], *, env: dict[str, str]) -> ChildRun:
    """Run ``argv`` to its end; its rusage from ``wait4`` (the whole process, all threads)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=paths.REPO_ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        return ChildRun(cpu_s=usage.ru_utime + usage.ru_stime, user_s=usage.ru_utime, system_s=usage.ru_stime,
                        wall_s=wall, max_rss_mb=usage.ru_maxrss / 1024, status=proc.returncode,
                        stdout=out.read().decode(errors="replace"), stderr=err.read().decode(errors="replace"))


def openlfr_alerts(stdout: str, fps: float) -> list[Any]:
    """``openlfr run --json``'s alerts at their frame's time in the video (the frame id's
    sequence number: every frame of the file is sampled)."""
    from openlfr.testing.loadgen import ObservedAlert

    alerts = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        seq = int(record["frame_id"].rsplit(":", 1)[1])
        alerts.append(ObservedAlert(record["camera_id"], record["subject_id"], seq / fps, record["alert_id"]))
    return alerts


def baseline_child(video: Path, watchlist: Path) -> int:
    """The ``face_recognition`` loop on every frame of ``video``: one JSON line per alert."""
    import cv2

    sys.path.insert(0, str(LOADTESTS))
    from baseline_face_recognition import FaceRecognitionLoop  # the load test's loop, as it is

    loop = FaceRecognitionLoop()
    photos = {d.name: sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(watchlist.iterdir()) if d.is_dir()}
    known = loop.enrol(photos)
    cap = cv2.VideoCapture(str(video))
    last_seen: dict[str, int] = {}
    index = -1
    faces = 0
    gap_frames = TRACK_GAP_S * FPS
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        index += 1
        found = loop.encodings(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        faces += len(found)
        for _, vector in found:
            name = loop.identify(vector, known)
            if name is None:
                continue
            if name not in last_seen or index - last_seen[name] > gap_frames:
                print(json.dumps({"camera_id": CAMERA, "subject_id": name, "frame": index}), flush=True)
            last_seen[name] = index
    cap.release()
    print(json.dumps({"summary": {"frames": index + 1, "faces": faces}}), flush=True)
    return 0


def baseline_alerts(stdout: str, fps: float) -> tuple[list[Any], dict[str, Any]]:
    from openlfr.testing.loadgen import ObservedAlert

    alerts, summary = [], {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "summary" in record:
            summary = record["summary"]
        else:
            alerts.append(ObservedAlert(record["camera_id"], record["subject_id"], record["frame"] / fps))
    return alerts, summary


# -- the comparison ----------------------------------------------------------------------------


def measure(side: str, scene: Scene, args: argparse.Namespace, truth: Any, fps: float) -> dict[str, Any]:
    """One run of one side, scored."""
    from openlfr.testing.loadgen import check_alerts

    env = dict(os.environ)
    if side == "openlfr":
        env.update(dict(kv.split("=", 1) for kv in args.env))
        argv = [*shlex.split(args.openlfr_cmd), "run", "--source", str(scene.video), "--watchlist",
                str(scene.watchlist), "--sample-fps", f"{FPS:g}", "--json", "--camera-id", CAMERA]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "_baseline", str(scene.video), str(scene.watchlist)]
    child = run_child(argv, env=env)
    logs = SCENE_ROOT / "runs" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{side}"
    logs.parent.mkdir(parents=True, exist_ok=True)
    logs.with_suffix(".out").write_text(child.stdout)
    logs.with_suffix(".err").write_text(child.stderr)
    if child.status != 0:
        raise RuntimeError(f"{side} exited {child.status}: {child.stderr[-2000:]}")
    extra: dict[str, Any] = {}
    if side == "openlfr":
        alerts = openlfr_alerts(child.stdout, fps)
        for line in child.stderr.splitlines():
            if line.startswith("openlfr run summary: "):
                extra = json.loads(line.split(": ", 1)[1])
    else:
        alerts, extra = baseline_alerts(child.stdout, fps)
    correctness = check_alerts(truth, alerts, min_frames=MIN_VOTES, slack_s=0.5 / fps, rejoin_gap_s=TRACK_GAP_S)
    return {
        "side": side, "cpu_s": round(child.cpu_s, 2), "user_s": round(child.user_s, 2),
        "system_s": round(child.system_s, 2), "wall_s": round(child.wall_s, 2),
        "cores_busy": round(child.cpu_s / child.wall_s, 2), "max_rss_mb": round(child.max_rss_mb),
        "cpu_ms_per_truth_face": round(1e3 * child.cpu_s / truth.faces, 2),
        "correctness": correctness.summary(), "summary": extra,
        "load_at_end": [round(v, 2) for v in os.getloadavg()], "output": str(logs.with_suffix(".out")),
    }


def row(r: dict[str, Any]) -> str:
    c = r["correctness"]
    return (f"| {r['side']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['cores_busy']:.2f} | "
            f"{r['cpu_ms_per_truth_face']:.1f} | {r['summary'].get('faces', '-')} | "
            f"{c['matched']} / {c['expected']}, {c['duplicates']}, "
            f"{c['unexpected']} | {r['load_at_end'][0]:.2f} |")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_baseline"]:
        return baseline_child(Path(argv[1]), Path(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two this many times")
    parser.add_argument("--only", choices=("openlfr", "baseline"), help="run one side only")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a variable for the openlfr child (repeatable)")
    parser.add_argument("--openlfr-cmd", dest="openlfr_cmd", default=str(paths.REPO_ROOT / ".venv" / "bin" / "openlfr"),
                        help="the openlfr command (another checkout's, for a before/after)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1")
    for kv in args.env:
        if "=" not in kv:
            parser.error(f"--env {kv!r}: expected KEY=VALUE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    scene = build_scene(args.seed)
    truth, raw = truth_of(scene)
    fps = raw["fps"]
    sides = [args.only] if args.only else ["openlfr", "baseline"]
    runs = []
    print(f"scene {scene.root}: {raw['frames']} frames at {fps:g} fps, {len(raw['people'])} people "
          f"({len(raw['enrolled'])} enrolled), {truth.faces} ground-truth faces")
    print("| side | CPU s | wall s | cores busy | CPU ms per truth face | faces embedded (openlfr) or found (loop) | "
          "alerts ok / expected, dup, wrong | load (1 min, at end) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for _ in range(args.repeat):
        for side in sides:
            result = measure(side, scene, args, truth, fps)
            runs.append(result)
            print(row(result), flush=True)
    best = {side: min((r for r in runs if r["side"] == side), key=lambda r: r["cpu_s"]) for side in sides}
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
            "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "command": " ".join([sys.executable, *sys.argv]), "env": args.env, "openlfr_cmd": args.openlfr_cmd,
            "scene": str(scene.root),
            "scene_sha256": hashlib.sha256(scene.video.read_bytes()).hexdigest()[:12],
        },
        "truth_faces": truth.faces, "frames": raw["frames"], "runs": runs,
        "best": {side: {"cpu_s": r["cpu_s"], "cpu_ms_per_truth_face": r["cpu_ms_per_truth_face"]}
                 for side, r in best.items()},
    }
    if len(best) == 2:
        ratio = best["baseline"]["cpu_s"] / best["openlfr"]["cpu_s"]
        report["ratio_least_cpu"] = round(ratio, 2)
        report["ratio_per_repeat"] = [round(b["cpu_s"] / o["cpu_s"], 2) for o, b in zip(runs[0::2], runs[1::2])]
        print(f"CPU per ground-truth face, least of {args.repeat}: openlfr {best['openlfr']['cpu_ms_per_truth_face']:.1f} ms, "
              f"face_recognition {best['baseline']['cpu_ms_per_truth_face']:.1f} ms: ratio {ratio:.2f}x "
              f"(per repeat: {', '.join(f'{x:.2f}x' for x in report['ratio_per_repeat'])}; target 20x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
