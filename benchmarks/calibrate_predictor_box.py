"""Fit the map from BlazeFace boxes to the dlib-detector boxes the 5-point predictor expects.

dlib's shape predictor was trained on boxes from dlib's HOG detector. This script runs both
detectors on the single-face photos of the shared set, pairs their boxes, and prints the
median centre shift (as a fraction of the BlazeFace box size) and size ratios: the constants
of ``openlfr.vision.analyzer.PREDICTOR_BOX_FIT``. It then reports how far the landmarks
found from mapped BlazeFace boxes are from those found from dlib's own boxes.

Usage: .venv/bin/python benchmarks/calibrate_predictor_box.py
"""

from __future__ import annotations

import csv
import sys

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.inference.local import LocalBackend
from openlfr.models.build import build_all
from openlfr.models.shape_predictor import ShapePredictor
from openlfr.models.sources import dlib_model_path
from openlfr.vision import analyzer as analyzer_mod
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


def main() -> int:
    import dlib

    build_all(paths.model_dir())
    analyzer = build_analyzer(ModelSettings(), backend=LocalBackend(paths.model_dir()))
    predictor = ShapePredictor.load(dlib_model_path("shape_predictor_5"))
    hog = dlib.get_frontal_face_detector()
    with (FACES / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image_kind"] == "face"]
    pairs = []
    images = {}
    for row in rows:
        img = load_image(FACES / row["path"])
        dets = hog(img, 1)
        blaze = analyzer.detector.detect(img)
        if len(dets) != 1 or len(blaze) != 1:
            continue
        r = dets[0]
        d = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64)
        b = np.asarray(blaze.boxes[0], np.float64)
        pairs.append((d, b))
        images[row["path"]] = (img, d, b)
    d = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    dx = ((d[:, 0] + d[:, 2]) / 2 - (b[:, 0] + b[:, 2]) / 2) / bw
    dy = ((d[:, 1] + d[:, 3]) / 2 - (b[:, 1] + b[:, 3]) / 2) / bh
    sw = (d[:, 2] - d[:, 0]) / bw
    sh = (d[:, 3] - d[:, 1]) / bh
    fit = tuple(round(float(np.median(v)), 3) for v in (dx, dy, sw, sh))
    print(f"paired faces: {len(pairs)}")
    print(f"PREDICTOR_BOX_FIT = {fit}  # (dx, dy, sw, sh); spread (IQR): "
          + ", ".join(f"{np.subtract(*np.percentile(v, [75, 25])):.3f}" for v in (dx, dy, sw, sh)))
    for label, box_fit in (("identity", (0.0, 0.0, 1.0, 1.0)), ("fitted", fit)):
        analyzer_mod.PREDICTOR_BOX_FIT = box_fit
        errs = []
        for img, dbox, bbox in images.values():
            ref = predictor.predict(img, dbox.astype(np.float32))
            got = predictor.predict(img, analyzer_mod.predictor_boxes(bbox[None].astype(np.float32))[0])
            inter_eye = np.linalg.norm(ref[0:2].mean(0) - ref[2:4].mean(0))
            errs.append(np.linalg.norm(got - ref, axis=1).mean() / inter_eye)
        print(f"{label:8s}: landmark error vs dlib-box landmarks, mean {np.mean(errs):.3f} / "
              f"p90 {np.percentile(errs, 90):.3f} of the inter-eye distance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
