"""How close a re-encoded copy of an enrolled photo lands to it, against another photo of the same
person: the measurement behind the registry's near-duplicate check
(``OPENLFR_REGISTRY_NEAR_DUPLICATE_SCORE``).

For people of the shared set with two or more photos: the registry's reference vector (aligned
chip and its mirror, ``openlfr.registry.core``) of photo A, of copies of A an uploader might
make (JPEG quality 40, PNG, scaled to 60%, 4% cropped off each side, brighter and more
contrasted, all combined), and of the person's photo B. Prints the store scores
(``1 - distance / 2``) of the copies and of B against A, per embedder.

Usage: .venv/bin/python benchmarks/near_duplicates.py [--people 60] [--embedder dlib_resnet_v1]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from openlfr.config import ModelSettings
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image
from openlfr.watchlist.references import with_mirror
from openlfr.watchlist.store import distance_to_score

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    h, w = image.shape[:2]

    def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    dy, dx = int(h * 0.04), int(w * 0.04)
    out = {
        "jpeg q40": jpeg(bgr, 40),
        "png": cv2.imdecode(cv2.imencode(".png", bgr)[1], cv2.IMREAD_COLOR),
        "scaled 60%": cv2.resize(bgr, (int(w * 0.6), int(h * 0.6)), interpolation=cv2.INTER_AREA),
        "cropped 4%": bgr[dy : h - dy, dx : w - dx].copy(),
        "brighter": cv2.convertScaleAbs(bgr, alpha=1.2, beta=20),
    }
    out["all combined"] = jpeg(cv2.convertScaleAbs(cv2.resize(bgr[dy : h - dy, dx : w - dx], None, fx=0.6, fy=0.6,
                                                               interpolation=cv2.INTER_AREA), alpha=1.2, beta=20), 40)
    return {k: cv2.cvtColor(v, cv2.COLOR_BGR2RGB) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--embedder", default="dlib_resnet_v1")
    args = parser.parse_args()
    analyzer = build_analyzer(ModelSettings(embedder=args.embedder), keep_chips=True)

    def vector(image: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(image)
        if not len(faces) or faces.chips is None or faces.embeddings is None:
            return None
        i = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))
        flipped = analyzer.embedder.embed(np.ascontiguousarray(faces.chips[i : i + 1, :, ::-1]))[0]
        return with_mirror(faces.embeddings[i], flipped)

    photos: dict[str, list[str]] = defaultdict(list)
    with (FACES / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            if not row["path"].startswith("utkface_balanced/"):
                photos[row["identity"]].append(row["path"])
    people = sorted(k for k, v in photos.items() if len(v) >= 2)[: args.people]
    scores: dict[str, list[float]] = defaultdict(list)
    for person in people:
        a_image = load_image(FACES / photos[person][0])
        a = vector(a_image)
        b = vector(load_image(FACES / photos[person][1]))
        if a is None or b is None:
            continue
        scores["another photo of the person"].append(distance_to_score(float(np.linalg.norm(a - b))))
        for name, copy in _variants(a_image).items():
            v = vector(copy)
            if v is not None:
                scores[f"copy: {name}"].append(distance_to_score(float(np.linalg.norm(a - v))))
    print(f"{args.embedder}: store score against photo A ({len(scores['another photo of the person'])} people)")
    print(f"{'':32s} {'min':>6s} {'p5':>6s} {'median':>6s} {'max':>6s}")
    for name, values in scores.items():
        x = np.asarray(values)
        print(f"{name:32s} {x.min():6.3f} {np.percentile(x, 5):6.3f} {np.median(x):6.3f} {x.max():6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
