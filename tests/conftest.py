"""Session fixtures shared by every tier: the shared face set and the built models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from openlfr import paths

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared, labelled face set (``../shared/data/faces``)."""
    if not (FACES_DIR / "labels.csv").is_file():
        pytest.fail(f"the shared face set is missing: {FACES_DIR}/labels.csv")
    return FACES_DIR


@pytest.fixture(scope="session")
def face_labels(faces_dir: Path) -> list[dict[str, str]]:
    """Rows of labels.csv."""
    with (faces_dir / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The project's built models; built here if set-up has not (idempotent)."""
    from openlfr.models.build import build_all

    directory = paths.model_dir()
    build_all(directory)
    return directory


@pytest.fixture(scope="session")
def local_backend(model_dir: Path):
    """One onnxruntime backend over the built models for the whole session."""
    from openlfr.inference.local import LocalBackend

    backend = LocalBackend(model_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def analyzer(local_backend):
    """The production face analyzer on the local backend."""
    from openlfr.config import ModelSettings
    from openlfr.vision.factory import build_analyzer

    return build_analyzer(ModelSettings(), backend=local_backend, keep_chips=True)


@pytest.fixture(scope="session")
def shared_cohort_faces(faces_dir: Path, analyzer) -> list:  # noqa: ANN001 - fixture; list[CohortFace]
    """Real faces of the shared set as background-cohort material, embedded once per session:
    160 UTKFace crops (a person each) and the dlib "johns" (5 people, ~10 chips each)."""
    import numpy as np

    from openlfr.cohort.cohort import CohortFace
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
