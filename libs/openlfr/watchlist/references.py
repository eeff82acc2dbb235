"""How enrolment turns a subject's accepted photos into the vectors the store searches.

Two measured choices (``benchmarks/enrolment_references.py``; docs/accuracy.md, "Enrolment"):

* **Mirrored views.** Each reference is the mean direction of the photo's descriptor and its
  mirror image's (at the two's mean length). With one photo per subject this lowered FNIR at
  FPIR 1e-2 from 27.8% to 24.5% on the shared set (1e-3: 47.4% to 44.5%); with five photos it
  changed nothing measurable, so it costs one more embedding per photo and only helps.
* **A subject template.** A subject with two or more references also gets their mean as one
  more point (``TEMPLATE_REFERENCE_ID``); the store's search takes each subject's best point, so
  a probe is compared with the nearest photo and with the subject's mean. With five photos a
  subject: FNIR at FPIR 1e-2 14.1% (best photo alone) to 7.6% (best of photos and mean).

Both enrolment paths follow these rules, in the same way: the mirror is the aligned chip
flipped, in ``openlfr run``'s folder enrolment (``openlfr.watchlist.loader``) and in the
registry (from the chip it keeps: ``openlfr.registry.core``), so the two give the same vector for
the same photo; under an embedder that does not take dlib's chip, the mirrored photo is
analysed again (re-embedding always does: ``openlfr.watchlist.reembed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The reference id of a subject's mean-of-references point.
TEMPLATE_REFERENCE_ID = "subject-template"


def unit_mean(vectors: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The mean direction of ``vectors`` at their mean length (stays in the model's space).

    Raises:
        ValueError: no vectors, a zero vector, or vectors that cancel out.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"unit_mean: expected a non-empty (n, d) array, got shape {array.shape}")
    lengths = np.linalg.norm(array, axis=1)
    if not (lengths > 0).all():
        raise ValueError("unit_mean: a zero vector has no direction")
    mean = (array / lengths[:, None]).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not norm > 0.0:
        raise ValueError("unit_mean: the vectors cancel out")
    return (mean / norm * lengths.mean()).astype(np.float32)


def subject_points(references: Sequence[tuple[str, np.ndarray, float]]) -> list[tuple[str, np.ndarray, float]]:
    """The points the store holds for one subject: ``(reference id, vector, enrolment time)`` of each
    reference, and, with two or more, the template (their :func:`unit_mean`).

    The template's enrolment time is its newest member's: a deployment whose snapshot predates a
    reference does not search a mean that includes it.
    """
    points = list(references)
    if len(points) >= 2:
        points.append((TEMPLATE_REFERENCE_ID, unit_mean([v for _, v, _ in points]), max(t for _, _, t in points)))
    return points


def with_mirror(vector: np.ndarray, mirrored: np.ndarray | None) -> np.ndarray:
    """A photo's reference vector: averaged with its mirror image's when one was found."""
    if mirrored is None:
        return np.asarray(vector, dtype=np.float32)
    return unit_mean([vector, mirrored])
