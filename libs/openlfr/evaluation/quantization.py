"""The int8 models' accuracy against their fp32 originals, on the shared face set.

Detector: recall on the images with ground-truth boxes (``detection_boxes.csv``; WIDER FACE
val crowds, dlib's PASCAL VOC photos, Obama), a box found when one detection overlaps it with
IoU >= 0.4 (one-to-one, best overlaps first). Embedder: the same chips (the fp32 analyzer's
largest face of every image in ``pairs.csv``) embedded by both models, giving each model's EER
on the pairs and the cosine between the two vectors of every face. Used by the accuracy gates
(tests/unit/models/test_int8.py) and benchmarks/int8_models.py.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openlfr.evaluation.verification import equal_error_rate, roc
from openlfr.vision.detector import FaceDetector, box_iou
from openlfr.vision.embedder import FaceEmbedder
from openlfr.vision.images import load_image

#: A ground-truth box counts as found at this IoU with a detection (as tests/unit/vision/test_detector.py).
MATCH_IOU = 0.4


def ground_truth_boxes(faces_dir: Path) -> dict[str, np.ndarray]:
    """``detection_boxes.csv`` as (n, 4) x1, y1, x2, y2 boxes per image path."""
    boxes: dict[str, list[list[float]]] = {}
    with (faces_dir / "detection_boxes.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
            boxes.setdefault(row["path"], []).append([x, y, x + w, y + h])
    return {path: np.asarray(b, np.float32) for path, b in sorted(boxes.items())}


def matched(gt: np.ndarray, found: np.ndarray) -> int:
    """How many ground-truth boxes one detection each covers (greedy by IoU, best first)."""
    if len(found) == 0 or len(gt) == 0:
        return 0
    iou = box_iou(gt, found)
    pairs = sorted(zip(*np.nonzero(iou >= MATCH_IOU), strict=True), key=lambda ij: -iou[ij])
    used_gt: set[int] = set()
    used_det: set[int] = set()
    for i, j in pairs:
        if i not in used_gt and j not in used_det:
            used_gt.add(int(i))
            used_det.add(int(j))
    return len(used_gt)


@dataclass(frozen=True, slots=True)
class Recall:
    """Ground-truth boxes found, of all, and per image."""

    found: int
    total: int
    per_image: dict[str, tuple[int, int]]

    @property
    def recall(self) -> float:
        return self.found / self.total


def detector_recall(detector: FaceDetector, faces_dir: Path, gt: dict[str, np.ndarray] | None = None) -> Recall:
    """The detector's recall on the shared set's ground-truth boxes."""
    gt = gt if gt is not None else ground_truth_boxes(faces_dir)
    paths = sorted(gt)
    found = detector.detect_many([load_image(faces_dir / p) for p in paths])
    per_image = {p: (matched(gt[p], f.boxes), len(gt[p])) for p, f in zip(paths, found, strict=True)}
    return Recall(
        found=sum(h for h, _ in per_image.values()), total=sum(n for _, n in per_image.values()), per_image=per_image
    )


def read_pairs(faces_dir: Path) -> list[tuple[str, str, bool]]:
    """``pairs.csv`` as (path_a, path_b, same person)."""
    with (faces_dir / "pairs.csv").open(newline="") as fh:
        return [(r["path_a"], r["path_b"], r["same"] == "1") for r in csv.DictReader(fh)]


def largest_face_chips(analyzer: object, faces_dir: Path, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The chip of the largest face of each image where the analyzer finds one.

    Args:
        analyzer: a ``FaceAnalyzer`` built with ``keep_chips=True``.
    """
    chips: dict[str, np.ndarray] = {}
    for path in paths:
        faces = analyzer.analyze(load_image(faces_dir / path))  # type: ignore[attr-defined]
        if len(faces) == 0:
            continue
        chips[path] = faces.chips[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]
    return chips


@dataclass(frozen=True, slots=True)
class Agreement:
    """Two embedders on the same chips: each one's EER on the pairs, and per-face cosines."""

    eer_reference: float
    eer_candidate: float
    cosines: np.ndarray
    pairs_used: int


def pair_eer(vectors: dict[str, np.ndarray], pairs: Sequence[tuple[str, str, bool]]) -> float:
    """EER of Euclidean distances over the pairs whose two images both have a vector."""
    genuine, impostor = [], []
    for a, b, same in pairs:
        if a in vectors and b in vectors:
            (genuine if same else impostor).append(float(np.linalg.norm(vectors[a] - vectors[b])))
    return equal_error_rate(roc(np.asarray(genuine), np.asarray(impostor)))[0]


def embedder_agreement(
    reference: FaceEmbedder,
    candidate: FaceEmbedder,
    chips: dict[str, np.ndarray],
    pairs: Sequence[tuple[str, str, bool]],
) -> Agreement:
    """Embed the same chips with both embedders and compare (see :class:`Agreement`)."""
    names = sorted(chips)
    batch = np.stack([chips[n] for n in names])
    ref = reference.embed(batch)
    cand = candidate.embed(batch)
    cosines = (ref * cand).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    return Agreement(
        eer_reference=pair_eer(dict(zip(names, ref, strict=True)), pairs),
        eer_candidate=pair_eer(dict(zip(names, cand, strict=True)), pairs),
        cosines=cosines,
        pairs_used=sum(a in chips and b in chips for a, b, _ in pairs),
    )
