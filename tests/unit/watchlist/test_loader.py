"""Enrolment from a folder tree of real photos: what is enrolled, what is refused and why."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.vision.images import load_image
from openlfr.watchlist.loader import EnrolmentReport, enroll_folder
from openlfr.watchlist.qdrant_store import QdrantStore

KNN = Path("face_recognition/examples/knn_examples")

#: subject folder -> shared-set images put in it (under new names)
TREE = {
    "obama": [
        KNN / "train/obama/obama.jpg",
        KNN / "train/obama/obama2.jpg",
        Path("face_recognition/examples/two_people.jpg"),
    ],
    "rose_leslie": [
        KNN / "train/rose_leslie/img1.jpg",
        KNN / "train/rose_leslie/img2.jpg",
        Path("dlib/examples/faces/dogs.jpg"),
    ],
    "kit_harington": [KNN / "train/kit_harington/john1.jpeg", KNN / "train/kit_harington/john2.jpeg"],
    # A 112x112 aligned crop: one face, but its eyes are ~33 px apart (< 40).
    "hugh_laurie": [Path("glint360k_celebs/Hugh_Laurie/3366.png")],
}


@pytest.fixture(scope="module")
def tree(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("enrol")
    for subject, images in TREE.items():
        (root / subject).mkdir()
        for i, rel in enumerate(images):
            shutil.copy(faces_dir / rel, root / subject / f"{i}{rel.suffix}")
    (root / "kit_harington" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "kit_harington" / "empty.png").write_bytes(b"")
    shutil.copy(faces_dir / TREE["kit_harington"][0], root / "kit_harington" / "copy.jpeg")  # same bytes again
    (root / "kit_harington" / ".DS_Store").write_bytes(b"ignored")
    (root / "stray.jpg").write_bytes((faces_dir / TREE["obama"][0]).read_bytes())
    (root / "bad name").mkdir()
    shutil.copy(faces_dir / TREE["obama"][1], root / "bad name" / "x.jpg")
    return root


@pytest.fixture(scope="module")
def enrolled(tree: Path, analyzer) -> Iterator[tuple[EnrolmentReport, QdrantStore]]:
    store = QdrantStore()
    report = enroll_folder(tree, analyzer=analyzer, store=store, watchlist_id="wl-test")
    yield report, store
    store.close()


def test_good_images_are_enrolled_per_subject(enrolled) -> None:
    report, store = enrolled
    # hugh_laurie's only photo is refused: a subject with no reference is not enrolled at all.
    assert report.enrolled == {"kit_harington": 2, "obama": 2, "rose_leslie": 2}
    # Each subject with two references also gets their mean as one more point.
    assert report.images_enrolled == 6 and store.count() == 6 + 3


def test_every_refused_file_has_its_reason(enrolled, tree: Path) -> None:
    report, _ = enrolled
    refused = {str(item.path.relative_to(tree)): item.reason for item in report.refused}
    assert refused == {
        "obama/2.jpg": "multiple_faces",
        "rose_leslie/2.jpg": "no_face",
        "hugh_laurie/0.png": "too_small",
        "kit_harington/corrupt.jpg": "unreadable",
        "kit_harington/empty.png": "unreadable",
        "kit_harington/copy.jpeg": "duplicate",
        "stray.jpg": "not_in_subject_folder",
        "bad name/x.jpg": "invalid_subject_id",
    }
    details = {item.reason: item.detail for item in report.refused}
    assert "2 faces" in details["multiple_faces"] and "inter-eye" in details["too_small"]


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (KNN / "test/obama1.jpg", "obama"),
        (KNN / "test/johnsnow_test1.jpg", "kit_harington"),
        (Path("face_recognition/examples/obama-720p.jpg"), "obama"),
        (Path("face_recognition/examples/biden.jpg"), None),  # not enrolled
    ],
)
def test_held_out_photo_finds_the_enrolled_person(enrolled, analyzer, faces_dir: Path, probe: Path, expected) -> None:
    _, store = enrolled
    faces = analyzer.analyze(load_image(faces_dir / probe))
    assert len(faces) == 1
    hits = store.search(faces.embeddings[0], limit=2, watchlist_ids=["wl-test"])
    best = hits[0]
    if expected is None:
        assert best.distance > 0.6, hits
    else:
        assert best.subject_id == expected and best.distance < 0.5, hits
        assert best.watchlist_id == "wl-test"
        assert hits[1].distance - best.distance > 0.1, hits
    assert store.search(faces.embeddings[0], limit=2, watchlist_ids=["another"]) == []


def test_re_enrolment_is_idempotent_and_floors_are_settings(tree: Path, analyzer) -> None:
    store = QdrantStore()
    first = enroll_folder(tree, analyzer=analyzer, store=store, min_inter_eye_px=20.0, min_quality=0.0)
    # With lower floors the aligned crop is accepted too.
    assert first.enrolled["hugh_laurie"] == 1
    again = enroll_folder(tree, analyzer=analyzer, store=store, min_inter_eye_px=20.0, min_quality=0.0)
    templates = sum(1 for n in first.enrolled.values() if n >= 2)
    assert again.enrolled == first.enrolled and store.count() == first.images_enrolled + templates
    store.close()


def test_a_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        enroll_folder(tmp_path / "nope", analyzer=None, store=None)  # type: ignore[arg-type]


def test_references_are_mirror_averaged_and_a_subject_gets_a_template(enrolled, analyzer, faces_dir: Path, tree: Path) -> None:
    """Each stored reference is the mean direction of the aligned chip's descriptor and its
    flipped chip's (the registry's rule, worked out by hand the same way in
    tests/unit/registry/conftest.py's ``enrolled``: the two paths give the same vector for the same
    photo); a subject with two references also has their mean, found by a search."""
    from openlfr.watchlist.references import TEMPLATE_REFERENCE_ID, unit_mean

    _, store = enrolled
    photos = [tree / "kit_harington" / "0.jpeg", tree / "kit_harington" / "1.jpeg"]
    vectors = []
    for photo in photos:
        image = load_image(photo)
        plain = analyzer.analyze(image)
        if len(plain) != 1:
            continue
        flipped = analyzer.embedder.embed(np.ascontiguousarray(plain.chips[:1, :, ::-1]))[0]
        vectors.append(unit_mean([plain.embeddings[0], flipped]))
    assert len(vectors) == 2
    template = unit_mean(vectors)
    hits = store.search(template, limit=1, watchlist_ids=["wl-test"])
    assert hits[0].subject_id == "kit_harington" and hits[0].reference_image_id == TEMPLATE_REFERENCE_ID
    assert hits[0].distance < 1e-3
    for vector in vectors:
        assert store.search(vector, limit=1, watchlist_ids=["wl-test"])[0].distance < 1e-3
