"""Enrolment choices on the shared set: mirrored views, and several references (best photo vs mean).

Open-set FNIR at FPIR 1e-2 and 1e-3 (thresholds on the searches; 1e-3 extrapolated by a tail
fit), raw scores, UTKFace people as the non-mated searches:

* one reference per person (the first photo of each labelled person with two or more), with and
  without the mirror image's descriptor averaged in (the mirrored photo analysed again, as
  ``openlfr run`` does, or the aligned chip flipped, as the registry does from the chip it keeps);
* five references per person (people with seven or more photos): the best of the five photos
  (the store's max over a subject's points), their mean direction alone, both (photos and mean),
  and the mirrored photos' mean.

Usage: .venv/bin/python benchmarks/enrolment_references.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import subject_calibration as sc  # noqa: E402 - the shared-set loader of the sibling benchmark

from openlfr import paths  # noqa: E402
from openlfr.cohort.norm import score_matrix  # noqa: E402
from openlfr.config import ModelSettings  # noqa: E402
from openlfr.evaluation.identification import open_set  # noqa: E402
from openlfr.vision.factory import build_analyzer  # noqa: E402
from openlfr.vision.images import load_image  # noqa: E402
from openlfr.watchlist.references import unit_mean, with_mirror  # noqa: E402


def main() -> int:
    faces = sc.load_faces(paths.build_dir() / "eval-cache")
    labelled: dict[str, list[sc.Face]] = defaultdict(list)
    for face in faces:
        if not face.key.startswith("utkface_balanced/"):
            labelled[face.identity].append(face)
    strangers = [f for f in faces if f.key.startswith("utkface_balanced/")]
    analyzer = build_analyzer(ModelSettings())

    def mirrored(face: sc.Face) -> np.ndarray | None:
        found = analyzer.analyze(load_image(sc.FACES / face.key)[:, ::-1].copy())
        return found.embeddings[int(np.argmax(found.boxes[:, 2] - found.boxes[:, 0]))] if len(found) else None

    def chip_mirrored(face: sc.Face) -> np.ndarray | None:
        """The registry's rule: the kept aligned chip flipped, embedded directly (no second detection)."""
        located = analyzer.locate_many([load_image(sc.FACES / face.key)], keep_chips=True)[0]
        if not len(located) or located.chips is None:
            return None
        chip = located.chips[int(np.argmax(located.boxes[:, 2] - located.boxes[:, 0]))]
        return analyzer.embedder.embed(chip[None, :, ::-1].copy())[0]

    def figures(gallery: np.ndarray, gallery_ids: list[str], mates: list[sc.Face], enrolled: list[str]) -> str:
        probes = np.stack([f.vector for f in mates + strangers])
        ids = [f.identity for f in mates] + [f"stranger{i}" for i in range(len(strangers))]
        result = open_set(score_matrix(probes, gallery).astype(np.float64), gallery_ids, ids, enrolled=set(enrolled))
        return (f"FNIR@1e-2 {result.fnir_at_fpir(1e-2).fnir:.1%}, @1e-3 {result.fnir_at_fpir(1e-3).fnir:.1%}, "
                f"rank-1 {result.rank1:.1%}")

    people = sorted(k for k, v in labelled.items() if len(v) >= 2)
    mates = [f for k in people for f in labelled[k][1:]]
    plain = np.stack([labelled[k][0].vector for k in people])
    mirror = np.stack([with_mirror(labelled[k][0].vector, mirrored(labelled[k][0])) for k in people])
    print(f"one reference, {len(people)} people, {len(mates)} mated and {len(strangers)} non-mated searches:")
    print(f"  photo                {figures(plain, people, mates, people)}")
    print(f"  photo + mirror       {figures(mirror, people, mates, people)}")
    chip_mirror = np.stack([with_mirror(labelled[k][0].vector, chip_mirrored(labelled[k][0])) for k in people])
    print(f"  photo + chip mirror  {figures(chip_mirror, people, mates, people)}")

    many = sorted(k for k, v in labelled.items() if len(v) >= 7)
    mates = [f for k in many for f in labelled[k][5:]]
    photos = np.stack([f.vector for k in many for f in labelled[k][:5]])
    photo_ids = [k for k in many for _ in range(5)]
    means = np.stack([unit_mean([f.vector for f in labelled[k][:5]]) for k in many])
    mirrored_means = np.stack([unit_mean([with_mirror(f.vector, mirrored(f)) for f in labelled[k][:5]]) for k in many])
    print(f"five references, {len(many)} people, {len(mates)} mated searches:")
    print(f"  first photo only     {figures(np.stack([labelled[k][0].vector for k in many]), many, mates, many)}")
    print(f"  best of 5 photos     {figures(photos, photo_ids, mates, many)}")
    print(f"  mean of 5            {figures(means, many, mates, many)}")
    print(f"  best of photos+mean  {figures(np.concatenate([photos, means]), photo_ids + many, mates, many)}")
    print(f"  mean of 5 mirrored   {figures(mirrored_means, many, mates, many)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
