"""Embedding a cohort from image files through the live face path.

The cohort's faces go through the same ``FaceAnalyzer`` as enrolment and live matching (the
evaluation's embedding cache is reused), the largest face of each image is taken, and images
without a face or that cannot be read are counted with their reason, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openlfr.cohort.cohort import Cohort, CohortFace, make_cohort
from openlfr.cohort.exceptions import CohortError
from openlfr.cohort.norm import DEFAULT_TOP_FRACTION
from openlfr.evaluation.embeddings import EmbeddingCache, ImageAnalyzer, analyse_files

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class CohortInput:
    """One image offered to the cohort and its person ("" = a person of their own)."""

    path: Path
    identity: str = ""


@dataclass(slots=True)
class CohortBuild:
    """A built cohort and what was left out."""

    cohort: Cohort
    refused: list[tuple[str, str]] = field(default_factory=list)


def folder_inputs(root: Path, *, one_per_person: bool) -> list[CohortInput]:
    """The images under ``root``: a folder per person, or (``one_per_person``) every image under
    it a different person.

    Raises:
        CohortError: ``root`` is not a folder, or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise CohortError(f"DIR {root}: not a folder")
    images = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(x.startswith(".") for x in p.relative_to(root).parts)
    )
    out: list[CohortInput] = []
    for path in images:
        parts = path.relative_to(root).parts
        if one_per_person:
            out.append(CohortInput(path, ""))
        elif len(parts) >= 2:
            out.append(CohortInput(path, parts[0]))
    if not out:
        how = "images" if one_per_person else "images in a folder per person (or pass --one-per-person)"
        raise CohortError(f"DIR {root}: no {how}")
    return out


def embed_cohort(
    inputs: Sequence[CohortInput],
    *,
    analyzer: ImageAnalyzer | None,
    cache: EmbeddingCache | None,
    model_version: str,
    embed_mirror: bool,
    top_fraction: float = DEFAULT_TOP_FRACTION,
    exclude_identities: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    meta: dict[str, object] | None = None,
) -> CohortBuild:
    """Embed the inputs (largest face of each) and make the cohort.

    Raises:
        CohortError: too few usable faces (``openlfr.cohort.cohort.MIN_COHORT``).
    """
    excluded = set(exclude_identities)
    kept = [item for item in inputs if not (item.identity and item.identity in excluded)]
    refused: list[tuple[str, str]] = [(str(i.path), "excluded identity") for i in inputs if i not in kept]
    analysed = analyse_files([i.path for i in kept], analyzer=analyzer, cache=cache, progress=progress)
    faces: list[CohortFace] = []
    seen: set[str] = set()
    for item, result in zip(kept, analysed, strict=True):
        if result.faces is None:
            refused.append((str(item.path), result.error or "unreadable"))
            continue
        if len(result.faces) == 0 or result.faces.embeddings is None:
            refused.append((str(item.path), "no face found"))
            continue
        if result.sha256 in seen:
            refused.append((str(item.path), "a byte copy of another cohort image"))
            continue
        seen.add(result.sha256)
        widths = result.faces.boxes[:, 2] - result.faces.boxes[:, 0]
        vector = np.asarray(result.faces.embeddings[int(np.argmax(widths))], dtype=np.float32)
        faces.append(CohortFace(vector=vector, sha256=result.sha256, identity=item.identity))
    header = dict(meta or {})
    header["refused"] = len(refused)
    cohort = make_cohort(faces, model_version=model_version, embed_mirror=embed_mirror, top_fraction=top_fraction,
                         meta=header)
    return CohortBuild(cohort=cohort, refused=refused)
