"""Evaluation input: a folder per person, a labels CSV, attributes, identity links, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from openlfr.evaluation.dataset import (
    DatasetError,
    age_band,
    load_dataset,
    shared_set_tables,
    write_csv,
)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    write_csv(path, rows, list(rows[0]))
    return path


def test_folder_per_person_reads_identities_and_counts_what_it_skips(tmp_path: Path) -> None:
    _touch(tmp_path / "alice" / "1.jpg")
    _touch(tmp_path / "alice" / "sub" / "2.PNG")
    _touch(tmp_path / "alice" / ".hidden.jpg")
    _touch(tmp_path / "alice" / "notes.txt")
    _touch(tmp_path / "bob" / "1.jpeg")
    _touch(tmp_path / "stray.jpg")
    (tmp_path / ".cache").mkdir()

    ds = load_dataset(tmp_path)

    assert ds.layout == "folders"
    assert [(i.key, i.identity) for i in ds.images] == [
        ("alice/1.jpg", "alice"), ("alice/sub/2.PNG", "alice"), ("bob/1.jpeg", "bob")]
    assert ds.skipped_by_reason() == {"not_an_image": 1, "not_in_identity_folder": 1}
    assert sorted(ds.by_identity()) == ["alice", "bob"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no labelled face images"),
        (lambda root: _touch(root / "loose.jpg"), "not_in_identity_folder: 1"),
        (lambda root: _touch(root / "alice" / "readme.md"), "not_an_image: 1"),
    ],
)
def test_a_folder_without_labelled_images_is_a_clear_error(tmp_path: Path, make, message: str) -> None:
    make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_a_missing_faces_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "nope")


def test_labels_csv_keeps_face_kinds_with_an_identity_and_existing_file(tmp_path: Path) -> None:
    for name in ("a1.jpg", "a2.jpg", "scene.jpg", "anon.jpg", "b1.png"):
        _touch(tmp_path / "img" / name)
    labels = _csv(tmp_path / "labels.csv", [
        {"path": "img/a1.jpg", "identity": "Ann", "image_kind": "face"},
        {"path": "img/a2.jpg", "identity": "Ann", "image_kind": "aligned_crop"},
        {"path": "img/scene.jpg", "identity": "", "image_kind": "multi_face_scene"},
        {"path": "img/anon.jpg", "identity": "", "image_kind": "face"},
        {"path": "img/gone.jpg", "identity": "Ann", "image_kind": "face"},
        {"path": "img/b1.png", "identity": "Ben", "image_kind": "face"},
        {"path": "img/b1.png", "identity": "Ben", "image_kind": "face"},
    ])

    ds = load_dataset(tmp_path, labels=labels)

    assert [(i.key, i.identity) for i in ds.images] == [
        ("img/a1.jpg", "Ann"), ("img/a2.jpg", "Ann"), ("img/b1.png", "Ben")]
    assert ds.skipped_by_reason() == {"excluded_kind": 1, "missing_file": 1, "no_identity": 1}


def test_labels_csv_without_its_columns_is_refused(tmp_path: Path) -> None:
    labels = _csv(tmp_path / "labels.csv", [{"file": "a.jpg", "person": "x"}])
    with pytest.raises(DatasetError, match="needs columns path,identity"):
        load_dataset(tmp_path, labels=labels)


def test_linked_identities_are_merged_into_one_person(tmp_path: Path) -> None:
    _touch(tmp_path / "deepface" / "p1.jpg")
    _touch(tmp_path / "glint" / "aj.png")
    _touch(tmp_path / "glint" / "bp.png")
    labels = _csv(tmp_path / "labels.csv", [
        {"path": "deepface/p1.jpg", "identity": "deepface/person_01"},
        {"path": "glint/aj.png", "identity": "Angelina_Jolie"},
        {"path": "glint/bp.png", "identity": "Brad_Pitt"},
    ])
    # Found beside the labels file without being named.
    _csv(tmp_path / "identity_links.csv", [
        {"identity_a": "deepface/person_01", "identity_b": "Angelina_Jolie", "relation": "same"}])

    ds = load_dataset(tmp_path, labels=labels)

    assert ds.merged == {"deepface/person_01": "Angelina_Jolie"}
    assert {i.key: i.identity for i in ds.images} == {
        "deepface/p1.jpg": "Angelina_Jolie", "glint/aj.png": "Angelina_Jolie", "glint/bp.png": "Brad_Pitt"}
    assert ds.images[0].label == "deepface/person_01"


def test_attributes_by_path_attach_to_images(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "1.jpg")
    _touch(tmp_path / "a" / "2.jpg")
    attrs = _csv(tmp_path / "attrs.csv", [
        {"path": "a/1.jpg", "sex": "female", "ethnicity": ""},
        {"path": "a/2.jpg", "sex": "", "ethnicity": "Asian"},
        {"path": "elsewhere.jpg", "sex": "male", "ethnicity": "White"},
    ])

    ds = load_dataset(tmp_path, attributes=attrs)

    assert ds.attribute_columns == ["sex", "ethnicity"]
    assert ds.attributes == {"a/1.jpg": {"sex": "female"}, "a/2.jpg": {"ethnicity": "Asian"}}


def test_attributes_by_identity_attach_to_every_image_of_the_person(tmp_path: Path) -> None:
    _touch(tmp_path / "ann" / "1.jpg")
    _touch(tmp_path / "ann" / "2.jpg")
    _touch(tmp_path / "ben" / "1.jpg")
    attrs = _csv(tmp_path / "attrs.csv", [{"identity": "ann", "sex": "female"}])

    ds = load_dataset(tmp_path, attributes=attrs)

    assert ds.attributes == {"ann/1.jpg": {"sex": "female"}, "ann/2.jpg": {"sex": "female"}}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"name": "x", "sex": "f"}], "needs a 'path' or an 'identity' column"),
        ([{"path": "a/1.jpg"}], "no grouping column"),
    ],
)
def test_attributes_without_a_key_or_a_group_column_are_refused(tmp_path: Path, rows, message: str) -> None:
    _touch(tmp_path / "a" / "1.jpg")
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path, attributes=_csv(tmp_path / "attrs.csv", rows))


@pytest.mark.parametrize(("age", "band"), [(0, "0-17"), (17, "0-17"), (18, "18-34"), (54, "35-54"), (90, "55+")])
def test_age_bands(age: int, band: str) -> None:
    assert age_band(age) == band


def test_shared_set_tables_give_utkface_crops_identities_and_demographics(tmp_path: Path) -> None:
    rows = [
        {"path": "glint/A/1.png", "subset": "glint360k_celebs", "identity": "A", "image_kind": "aligned_crop"},
        {"path": "utkface_balanced/34_1_2_2017.jpg.chip.jpg", "subset": "utkface_balanced", "identity": "",
         "image_kind": "face_unlabelled"},
        {"path": "crowd/1.jpg", "subset": "crowd_scenes", "identity": "", "image_kind": "multi_face_scene"},
    ]
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    labels, attributes = shared_set_tables(tmp_path)

    assert labels == [
        {"path": "glint/A/1.png", "identity": "A", "image_kind": "aligned_crop"},
        {"path": "utkface_balanced/34_1_2_2017.jpg.chip.jpg", "identity": "utkface/34_1_2_2017.jpg.chip.jpg",
         "image_kind": "face"},
    ]
    assert attributes[1] == {"path": "utkface_balanced/34_1_2_2017.jpg.chip.jpg", "subset": "utkface_balanced",
                             "image_kind": "face_unlabelled", "sex": "female", "ethnicity": "Asian",
                             "age_band": "18-34"}
    assert attributes[0]["sex"] == ""
