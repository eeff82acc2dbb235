"""What the embed skip saves, and that it keeps the alerts: one scene, embed -> match -> alert
with every face embedded and with the skip (``openlfr.pipeline.embed_skip``), side by side.

* **The scene**: the 720p crossing scene of ``benchmarks/cpu_per_face.py`` (26 s at 10 fps,
  16 people crossing two lanes, 3 enrolled; ``scene.avi``, ``truth.json`` and ``watchlist/`` in
  ``--scene``), or any folder laid out the same way.
* **Detect once**: every frame through the detect stage with the production gate
  (``PyramidGate``), capture time = frame index / fps; the ``Faces`` messages are kept, so both
  sides get the very same faces.
* **Each side**: a fresh embed, match (template decision, defaults; the watchlist enrolled
  from ``watchlist/`` in Qdrant's memory mode, a raw threshold of distance ``--max-distance``)
  and alert stage, batches of 8 as ``openlfr run`` takes them. Measured: faces embedded,
  faces skipped by reason, CPU seconds of the embed and the match stage (the thread's CPU time
  around their ``handle`` calls), the alerts (subject and the walk they fell in), scored by
  ``openlfr.testing.loadgen.check_alerts`` against ``truth.json``.
* ``--repeat N`` runs the pair N times, alternating, and keeps each side's least CPU.

Usage:
    .venv/bin/python benchmarks/embed_skip.py [--scene build/benchmarks/cpu_per_face/v1-seed7]
        [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from openlfr import paths

logger = logging.getLogger("openlfr.benchmarks.embed_skip")

T0 = 1_000_000.0
BATCH = 8


@dataclass
class Side:
    name: str
    faces_in: int = 0
    embedded: int = 0
    skipped: dict[str, float] = field(default_factory=dict)
    embed_cpu_s: float = 0.0
    match_cpu_s: float = 0.0
    alerts: list[tuple[str, str | None, float]] = field(default_factory=list)
    correctness: dict[str, Any] = field(default_factory=dict)


def _frames(scene: Path, camera: str, fps: float) -> list[Any]:
    from openlfr.messages.models import Frame

    capture = cv2.VideoCapture(str(scene / "scene.avi"))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        n = len(frames)
        frames.append(Frame(camera_id=camera, frame_id=f"{camera}:{n}", capture_ts=T0 + n / fps,
                            trace_id=f"trace{n:08d}", width=bgr.shape[1], height=bgr.shape[0],
                            jpeg=jpeg.tobytes(), ingest_ts=time.time()))
    capture.release()
    return frames


def _walk_at(raw: dict[str, Any], subject: str, capture_ts: float) -> str | None:
    from openlfr.testing.loadgen import subject_id_for

    index = int(round((capture_ts - T0) * raw["fps"]))
    for face in raw["frame_faces"][index] if 0 <= index < len(raw["frame_faces"]) else []:
        if subject_id_for(face["person_id"]) == subject or face["person_id"] == subject:
            return str(face["walk_id"])
    return None


def run_side(name: str, *, skip: bool, faces: Sequence[Any], analyzer: Any, store: Any, subjects: dict[str, str],
             model_dir: Path, max_distance: float, raw: dict[str, Any], truth: Any) -> Side:
    from openlfr.messages.models import Alert
    from openlfr.messages.signing import MatchSigner
    from openlfr.models.build import model_version
    from openlfr.models.specs import EMBEDDER
    from openlfr.pipeline.alert import AlertSettings, AlertStage
    from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
    from openlfr.pipeline.embed import EmbedStage
    from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
    from openlfr.pipeline.match import MatchSettings, MatchStage
    from openlfr.pipeline.match_trust import StaticAuthority
    from openlfr.pipeline.stage import Incoming
    from openlfr.testing.loadgen import ObservedAlert, check_alerts
    from openlfr.watchlist.store import distance_to_score

    camera = raw["camera_id"]
    gate = StaticGate(ActiveDeployment(deployment_id="bench", watchlist_ids=("wl",),
                                       threshold=distance_to_score(max_distance), snapshot_ts=time.time()))
    signer = MatchSigner.ephemeral()
    settings = MatchSettings()
    metrics = CollectorRegistry()
    embed = EmbedStage(analyzer.embedder, embedder_model=model_version(model_dir, EMBEDDER.name), max_frame_age_s=None,
                       skip=EmbedSkip(EmbedSkipSettings.for_match(settings), registry=metrics) if skip else None)
    match = MatchStage(settings, store=store, gate=gate, registry=CollectorRegistry(), signer=signer,
                       max_clock_skew_s=None)
    alert = AlertStage(AlertSettings(), signer=signer, registry=CollectorRegistry(), max_clock_skew_s=None,
                       authority=StaticAuthority.for_run(gate.deployment, camera_ids=[camera], subjects=subjects))
    side = Side(name)
    offset = alerted = 0
    alerts: list[Alert] = []
    for start in range(0, len(faces), BATCH):
        batch = [Incoming(m, 0, offset + i) for i, m in enumerate(faces[start:start + BATCH])]
        offset += len(batch)
        side.faces_in += sum(len(m.faces) for m in faces[start:start + BATCH])
        t = time.thread_time()
        embedded = embed.handle(batch, now=time.time())
        side.embed_cpu_s += time.thread_time() - t
        out = [o.message for o in embedded.outputs]
        side.embedded += sum(len(m.faces) for m in out)  # type: ignore[attr-defined]
        t = time.thread_time()
        matched = match.handle([Incoming(m, 0, start + i) for i, m in enumerate(out)], now=time.time())  # type: ignore[arg-type]
        side.match_cpu_s += time.thread_time() - t
        if matched.outputs:
            result = alert.handle([Incoming(o.message, 0, alerted + i)  # type: ignore[arg-type]
                                   for i, o in enumerate(matched.outputs)], now=time.time())
            alerted += len(matched.outputs)
            alerts.extend(o.message for o in result.outputs if isinstance(o.message, Alert))
    side.skipped = {s.labels["reason"]: s.value for f in metrics.collect() for s in f.samples
                    if f.name == "openlfr_embed_faces_skipped" and s.name.endswith("_total")}
    side.alerts = sorted((a.subject_id, _walk_at(raw, a.subject_id, a.capture_ts), round(a.capture_ts - T0, 1))
                         for a in alerts)
    observed = [ObservedAlert(a.camera_id, a.subject_id, a.capture_ts, a.alert_id) for a in alerts]
    side.correctness = check_alerts(truth, observed, min_frames=settings.min_votes,
                                    slack_s=0.5 / raw["fps"]).summary()
    return side


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scene", type=Path, default=paths.build_dir() / "benchmarks" / "cpu_per_face" / "v1-seed7")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-distance", type=float, default=0.5, dest="max_distance")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from openlfr.config import ModelSettings
    from openlfr.models.build import model_version
    from openlfr.pipeline.detect import DetectStage
    from openlfr.pipeline.stage import Incoming
    from openlfr.testing.loadgen import GroundTruth, TruthFace
    from openlfr.vision.factory import build_analyzer
    from openlfr.vision.pyramid_gate import PyramidGate
    from openlfr.watchlist.loader import enroll_folder
    from openlfr.watchlist.qdrant_store import QdrantStore

    for need in ("scene.avi", "truth.json", "watchlist"):
        if not (args.scene / need).exists():
            print(f"--scene {args.scene}: no {need} (build it with benchmarks/cpu_per_face.py)", file=sys.stderr)
            return 2
    raw = json.loads((args.scene / "truth.json").read_text())
    truth = GroundTruth()
    for index, frame_faces in enumerate(raw["frame_faces"]):
        truth.add_frame(raw["camera_id"], T0 + index / raw["fps"],
                        [TruthFace(f["walk_id"], f["person_id"], f["enrolled"], tuple(f["box"])) for f in frame_faces])
    settings = ModelSettings()
    analyzer = build_analyzer(settings)
    store = QdrantStore(location=":memory:")
    report = enroll_folder(args.scene / "watchlist", analyzer=analyzer, store=store, watchlist_id="wl")
    subjects = {s: "wl" for s in report.enrolled}

    frames = _frames(args.scene, raw["camera_id"], raw["fps"])
    detect = DetectStage(analyzer, detector_model=model_version(settings.model_dir, analyzer.detector.spec.name),
                         max_frame_age_s=None, gate=PyramidGate(), registry=CollectorRegistry())
    faces: list[Any] = []
    t = time.thread_time()
    for start in range(0, len(frames), BATCH):
        result = detect.handle([Incoming(f, 0, start + i) for i, f in enumerate(frames[start:start + BATCH])],
                               now=time.time())
        faces.extend(o.message for o in result.outputs)
    detect_cpu = time.thread_time() - t

    runs: list[Side] = []
    for _ in range(args.repeat):
        for name, skip in (("every face", False), ("skip", True)):
            runs.append(run_side(name, skip=skip, faces=faces, analyzer=analyzer, store=store, subjects=subjects,
                                 model_dir=settings.model_dir, max_distance=args.max_distance, raw=raw, truth=truth))
    best = {name: min((r for r in runs if r.name == name), key=lambda r: r.embed_cpu_s + r.match_cpu_s)
            for name in ("every face", "skip")}
    every, skip = best["every face"], best["skip"]
    print(f"scene {args.scene}: {len(frames)} frames, {len(faces)} Faces messages, {every.faces_in} faces detected; "
          f"detect (once, PyramidGate) {detect_cpu:.1f} CPU s")
    print("| side | faces embedded | skipped (reason) | embed CPU s | match CPU s | embed+match ms per detected face "
          "| alerts ok / expected, dup, wrong |")
    print("|---|---:|---|---:|---:|---:|---|")
    for side in runs:
        c = side.correctness
        unexpected = c["unexpected"]
        print(f"| {side.name} | {side.embedded} | {json.dumps({k: int(v) for k, v in side.skipped.items()})} "
              f"| {side.embed_cpu_s:.2f} | {side.match_cpu_s:.2f} "
              f"| {1e3 * (side.embed_cpu_s + side.match_cpu_s) / side.faces_in:.2f} "
              f"| {c['matched']} / {c['expected']}, {c['duplicates']}, {unexpected} |")
    saved = 1 - skip.embedded / every.embedded
    cpu_saved = (every.embed_cpu_s + every.match_cpu_s) - (skip.embed_cpu_s + skip.match_cpu_s)
    same = every.alerts == skip.alerts
    print(f"skipped {every.embedded - skip.embedded} of {every.embedded} embeds ({100 * saved:.0f}%); "
          f"embed+match CPU {every.embed_cpu_s + every.match_cpu_s:.2f} -> {skip.embed_cpu_s + skip.match_cpu_s:.2f} s "
          f"(saved {cpu_saved:.2f} s, {100 * cpu_saved / max(detect_cpu + every.embed_cpu_s + every.match_cpu_s, 1e-9):.0f}% "
          f"of detect+embed+match); alerts the same: {same}")
    print(f"alerts every face: {every.alerts}")
    print(f"alerts skip:       {skip.alerts}")
    if args.json:
        args.json.write_text(json.dumps({
            "meta": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
                     "python": platform.python_version(), "command": " ".join(sys.argv), "scene": str(args.scene)},
            "detect_cpu_s": detect_cpu, "faces_messages": len(faces),
            "runs": [vars(r) for r in runs], "alerts_same": same,
        }, indent=1, default=str))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
