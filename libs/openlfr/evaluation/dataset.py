"""Evaluation data: face images grouped by identity, with optional group attributes.

Two layouts are read:

* a folder per person: ``root/<identity>/**/<image>`` (hidden files and folders ignored; a
  file directly under ``root`` has no identity and is counted, not used);
* a labels CSV with columns ``path,identity`` (paths relative to the faces folder). When the
  CSV also has an ``image_kind`` column (the shared face set's ``labels.csv`` does), only rows
  of kind ``face`` or ``aligned_crop`` are used; rows without an identity are left out.

Identities listed as the same person in an ``identity_links.csv`` (columns
``identity_a,identity_b``; found beside the labels CSV or under the faces folder, or given
explicitly) are merged into one before anything is scored, so a linked pair never counts as an
impostor pair.

Attributes (``--attributes``): a CSV with a ``path`` or an ``identity`` column and any other
columns, each a grouping (``sex``, ``ethnicity``, ``subset``...). Empty cells mean "unknown"
and put the image in no group of that column.

Nothing here decodes an image: unreadable files, images without a face and duplicates are
found and counted by :mod:`openlfr.evaluation.run`.

Run as a module to write evaluation tables of the shared face set (see ``shared_set_tables``)::

    python -m openlfr.evaluation.dataset --faces ../shared/data/faces --out build/eval-tables
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

logger = logging.getLogger(__name__)

#: File name endings read as images; anything else in a person's folder is counted and skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"})

#: ``image_kind`` values of a labels CSV that show one labelled person (the shared set's kinds).
FACE_KINDS = frozenset({"face", "aligned_crop"})

#: The file of linked identities beside a labels CSV or under the faces folder.
IDENTITY_LINKS = "identity_links.csv"

SkipReason = Literal[
    "not_in_identity_folder",
    "not_an_image",
    "missing_file",
    "no_identity",
    "excluded_kind",
    "outside_faces_folder",
]


class DatasetError(ValueError):
    """The evaluation input cannot be used at all (no images, unreadable tables, bad columns)."""


@dataclass(frozen=True, slots=True)
class FaceImage:
    """One labelled image.

    Attributes:
        path: where the file is.
        key: its path relative to the faces folder, with ``/`` separators (the id reports use).
        identity: the person, after linked identities are merged.
        label: the identity as the input gave it (before merging).
    """

    path: Path
    key: str
    identity: str
    label: str


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """An input entry that was not used, and why."""

    key: str
    reason: SkipReason
    detail: str


@dataclass(slots=True)
class Dataset:
    """The labelled images of one evaluation and their group attributes.

    Attributes:
        root: the faces folder.
        layout: ``folders`` (a folder per person) or ``labels`` (a labels CSV).
        images: every usable entry, sorted by key.
        skipped: entries left out before any image was read, with reasons.
        merged: identity label -> the identity it was merged into (linked identities only).
        attributes: image key -> {column: value} (only non-empty values).
        attribute_columns: the grouping columns, in the attributes file's order.
        sources: the files read (labels, links, attributes), for the report.
    """

    root: Path
    layout: Literal["folders", "labels"]
    images: list[FaceImage]
    skipped: list[SkippedInput] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    attribute_columns: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def by_identity(self) -> dict[str, list[FaceImage]]:
        """Images per identity, identities sorted."""
        out: dict[str, list[FaceImage]] = {}
        for image in self.images:
            out.setdefault(image.identity, []).append(image)
        return dict(sorted(out.items()))

    def skipped_by_reason(self) -> dict[str, int]:
        """Count of skipped entries per reason."""
        out: dict[str, int] = {}
        for item in self.skipped:
            out[item.reason] = out.get(item.reason, 0) + 1
        return dict(sorted(out.items()))


def load_dataset(
    faces: Path,
    *,
    labels: Path | None = None,
    attributes: Path | None = None,
    identity_links: Path | None = None,
) -> Dataset:
    """Read the images, their identities and their attributes.

    Args:
        faces: the faces folder (a folder per person when ``labels`` is None).
        labels: a CSV with columns ``path,identity`` (and optionally ``image_kind``).
        attributes: a CSV with a ``path`` or ``identity`` column plus grouping columns.
        identity_links: a CSV of identities that are one person (``identity_a,identity_b``);
            when None, an ``identity_links.csv`` beside ``labels`` or under ``faces`` is used.

    Raises:
        DatasetError: ``faces`` is not a folder, a table lacks its required columns, or no
            labelled image was found.
    """
    faces = Path(faces)
    if not faces.is_dir():
        raise DatasetError(f"--faces {faces}: not a folder")
    if labels is None:
        dataset = _from_folders(faces)
    else:
        dataset = _from_labels(faces, Path(labels))
    links = identity_links if identity_links is not None else _find_links(faces, labels)
    if links is not None:
        _merge_linked(dataset, Path(links))
    if not dataset.images:
        where = f"in {labels}" if labels is not None else f"under {faces} (expected a folder per person)"
        detail = ", ".join(f"{reason}: {n}" for reason, n in dataset.skipped_by_reason().items())
        raise DatasetError(f"no labelled face images {where}" + (f" (skipped {detail})" if detail else ""))
    if attributes is not None:
        _attach_attributes(dataset, Path(attributes))
    return dataset


def _key(root: Path, path: Path) -> str:
    return PurePosixPath(path.relative_to(root)).as_posix()


def _hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def _from_folders(root: Path) -> Dataset:
    images: list[FaceImage] = []
    skipped: list[SkippedInput] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skipped.append(SkippedInput(entry.name, "not_in_identity_folder", "a file directly under the faces folder"))
            continue
        for path in sorted(entry.rglob("*")):
            if _hidden(path.relative_to(entry).parts) or not path.is_file():
                continue
            key = _key(root, path)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(SkippedInput(key, "not_an_image", f"suffix {path.suffix or '(none)'!r}"))
                continue
            images.append(FaceImage(path=path, key=key, identity=entry.name, label=entry.name))
    return Dataset(root=root, layout="folders", images=images, skipped=skipped, sources={"faces": str(root)})


def _read_csv(path: Path, *, what: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{what} {path}: cannot read ({exc})") from exc
    stripped = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in rows]
    return columns, stripped


def _from_labels(root: Path, labels: Path) -> Dataset:
    columns, rows = _read_csv(labels, what="--labels")
    missing = {"path", "identity"} - set(columns)
    if missing:
        raise DatasetError(f"--labels {labels}: needs columns path,identity (missing {', '.join(sorted(missing))})")
    has_kind = "image_kind" in columns
    images: list[FaceImage] = []
    skipped: list[SkippedInput] = []
    seen: set[str] = set()
    resolved_root = root.resolve()
    for row in rows:
        raw = row["path"]
        if not raw:
            continue
        path = Path(raw) if Path(raw).is_absolute() else root / raw
        try:
            key = _key(resolved_root, path.resolve())
        except ValueError:
            key = raw
            skipped.append(SkippedInput(key, "outside_faces_folder", f"not under {root}"))
            continue
        if key in seen:
            continue
        seen.add(key)
        if has_kind and row.get("image_kind", "") not in FACE_KINDS:
            skipped.append(SkippedInput(key, "excluded_kind", f"image_kind {row.get('image_kind') or '(empty)'!r}"))
            continue
        identity = row["identity"]
        if not identity:
            skipped.append(SkippedInput(key, "no_identity", "no identity in the labels file"))
            continue
        if not path.is_file():
            skipped.append(SkippedInput(key, "missing_file", f"{path} does not exist"))
            continue
        images.append(FaceImage(path=path, key=key, identity=identity, label=identity))
    images.sort(key=lambda image: image.key)
    return Dataset(
        root=root, layout="labels", images=images, skipped=skipped,
        sources={"faces": str(root), "labels": str(labels)},
    )


def _find_links(faces: Path, labels: Path | None) -> Path | None:
    candidates = ([Path(labels).parent / IDENTITY_LINKS] if labels is not None else []) + [faces / IDENTITY_LINKS]
    return next((c for c in candidates if c.is_file()), None)


def _merge_linked(dataset: Dataset, links: Path) -> None:
    columns, rows = _read_csv(links, what="identity links")
    if not {"identity_a", "identity_b"} <= set(columns):
        raise DatasetError(f"identity links {links}: needs columns identity_a,identity_b")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for row in rows:
        a, b = find(row["identity_a"]), find(row["identity_b"])
        if a and b and a != b:
            # The smaller name represents the merged person, so the choice is deterministic.
            lo, hi = sorted((a, b))
            parent[hi] = lo
    present = {image.label for image in dataset.images}
    merged = {label: find(label) for label in present if find(label) != label}
    if merged:
        dataset.images = [
            FaceImage(path=i.path, key=i.key, identity=merged.get(i.label, i.label), label=i.label)
            for i in dataset.images
        ]
    dataset.merged = dict(sorted(merged.items()))
    dataset.sources["identity_links"] = str(links)
    logger.info('identity links applied links="%s" merged="%d"', links, len(merged))


def _attach_attributes(dataset: Dataset, path: Path) -> None:
    columns, rows = _read_csv(path, what="--attributes")
    if "path" in columns:
        by = "path"
    elif "identity" in columns:
        by = "identity"
    else:
        raise DatasetError(f"--attributes {path}: needs a 'path' or an 'identity' column (has {', '.join(columns)})")
    groups = [c for c in columns if c and c not in ("path", "identity")]
    if not groups:
        raise DatasetError(f"--attributes {path}: no grouping column besides {by}")
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        if not row.get(by):
            continue
        key = row[by]
        if by == "path":
            candidate = Path(key) if Path(key).is_absolute() else dataset.root / key
            try:
                key = _key(dataset.root.resolve(), candidate.resolve())
            except ValueError:
                pass
        values = {c: row[c] for c in groups if row.get(c)}
        table.setdefault(key, {}).update(values)
    attached: dict[str, dict[str, str]] = {}
    for image in dataset.images:
        if by == "path":
            values = table.get(image.key)
        else:
            values = table.get(image.label) or table.get(image.identity)
        if values:
            attached[image.key] = dict(values)
    dataset.attributes = attached
    dataset.attribute_columns = groups
    dataset.sources["attributes"] = str(path)
    logger.info('attributes attached file="%s" by="%s" columns="%s" images="%d"', path, by, ",".join(groups), len(attached))


# --- the shared face set -------------------------------------------------------------------

#: UTKFace file names: ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``.
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_")
UTKFACE_GENDER = {"0": "male", "1": "female"}
UTKFACE_RACE = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def age_band(age: int) -> str:
    """Coarse age band of an age in years (bands wide enough to hold a few dozen faces)."""
    for upper, name in ((17, "0-17"), (34, "18-34"), (54, "35-54")):
        if age <= upper:
            return name
    return "55+"


def shared_set_tables(faces: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Labels and attributes rows for evaluating the shared face set with its demographics.

    The labels rows are ``labels.csv``'s identity-labelled face images, plus every
    ``utkface_balanced`` crop as a person of its own (``utkface/<file name>``): UTKFace gives
    no identities, and its crops are of different people, so they add impostor comparisons
    and non-mated searches (FMR and FPIR by sex and ethnicity) but no genuine pair (FNMR by
    sex and ethnicity cannot be measured on this set).

    The attributes rows give, per image, ``subset`` and ``image_kind`` for every image and
    ``sex``, ``ethnicity`` and ``age_band`` where UTKFace's file name gives them.

    Raises:
        DatasetError: ``faces/labels.csv`` is missing or lacks its columns.
    """
    columns, rows = _read_csv(Path(faces) / "labels.csv", what="shared set labels")
    if not {"path", "identity", "image_kind", "subset"} <= set(columns):
        raise DatasetError(f"{faces}/labels.csv: not the shared face set's labels (columns {columns})")
    labels: list[dict[str, str]] = []
    attributes: list[dict[str, str]] = []
    for row in rows:
        identity, kind = row["identity"], row["image_kind"]
        utk = UTKFACE_NAME.match(Path(row["path"]).name) if row["subset"] == "utkface_balanced" else None
        if utk is not None:
            identity, kind = f"utkface/{Path(row['path']).name}", "face"
        if not identity or kind not in FACE_KINDS:
            continue
        labels.append({"path": row["path"], "identity": identity, "image_kind": kind})
        attrs = {"path": row["path"], "subset": row["subset"], "image_kind": row["image_kind"],
                 "sex": "", "ethnicity": "", "age_band": ""}
        if utk is not None:
            attrs.update(sex=UTKFACE_GENDER[utk.group(2)], ethnicity=UTKFACE_RACE[utk.group(3)],
                         age_band=age_band(int(utk.group(1))))
        attributes.append(attrs)
    return labels, attributes


def write_csv(path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str]) -> None:
    """Write ``rows`` with ``columns`` as a UTF-8 CSV (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``labels.csv`` and ``attributes.csv`` of the shared face set into ``--out``."""
    parser = argparse.ArgumentParser(description="Evaluation tables of the shared face set (labels + demographics).")
    parser.add_argument("--faces", type=Path, required=True, help="the shared face set folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for labels.csv and attributes.csv")
    args = parser.parse_args(argv)
    try:
        labels, attributes = shared_set_tables(args.faces)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(args.out / "labels.csv", labels, ["path", "identity", "image_kind"])
    write_csv(args.out / "attributes.csv", attributes, ["path", "subset", "image_kind", "sex", "ethnicity", "age_band"])
    print(f"wrote {len(labels)} labelled images to {args.out / 'labels.csv'} and {args.out / 'attributes.csv'}")
    print(f"use: openlfr evaluate --faces {args.faces} --labels {args.out / 'labels.csv'} "
          f"--attributes {args.out / 'attributes.csv'} --out OUTDIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
