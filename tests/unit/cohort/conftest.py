"""Real faces of the shared set, embedded once per session, as cohort material."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from openlfr import paths
from openlfr.cohort.cohort import CohortFace


@pytest.fixture(scope="session")
def shared_cohort_faces(faces_dir: Path, analyzer) -> list[CohortFace]:  # noqa: ANN001 - fixture
    """160 UTKFace crops (a person each) and the dlib "johns" (5 people, ~10 chips each)."""
    from openlfr.config import ModelSettings
    from openlfr.evaluation.embeddings import EmbeddingCache, analyse_files, analyzer_version

    utk = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[:160]
    johns = sorted(p for p in (faces_dir / "dlib" / "examples" / "johns").rglob("*.jpg"))
    inputs = [(p, "") for p in utk] + [(p, p.parent.name) for p in johns]
    cache = EmbeddingCache(paths.build_dir() / "eval-cache", analyzer_version(ModelSettings()))
    analysed = analyse_files([p for p, _ in inputs], analyzer=analyzer, cache=cache)
    out = []
    for (path, identity), result in zip(inputs, analysed, strict=True):
        if result.faces is None or len(result.faces) == 0:
            continue
        widths = result.faces.boxes[:, 2] - result.faces.boxes[:, 0]
        out.append(CohortFace(vector=result.faces.embeddings[int(np.argmax(widths))], sha256=result.sha256,
                              identity=identity))
    assert len({f.identity for f in out if f.identity}) == 5, "the dlib johns should give five people"
    return out


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
