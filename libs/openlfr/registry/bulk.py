"""Bulk enrolment through the registry's API: a folder with one sub-folder per subject (as
``openlfr.watchlist.loader`` reads it) or a CSV of ``path,subject_id`` rows.

Each image is uploaded on its own, so the registry applies the same policy as to any other
enrolment and audits each one. Subjects that do not exist are created on the watchlist, with
the per-row values of the CSV where given and the defaults otherwise. One bad file never stops
the run: every file that is not enrolled is in the report with the reason. Only an
authentication or authorisation failure stops it (nothing else would succeed either).

All or nothing per subject, on the registry's side: a subject that does not exist yet goes up
with its photos in one request (``POST /v1/watchlists/{id}/enrolments``), which keeps the subject
only when a photo is enrolled, so no subject without an image is left behind even if this run is
killed; photos beyond one request's share follow one at a time once the subject has an image. A
watchlist the run created is deleted again when nothing was enrolled on it; the report names
what was not enrolled and why. A subject that existed before the run is never deleted.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from openlfr.registry.client import IMAGE_CONTENT_TYPES, RegistryClient
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable
from openlfr.registry.models import MAX_ENROLMENT_IMAGES, SLUG_PATTERN, Category, SubjectCreate, WatchlistCreate
from openlfr.watchlist.loader import subject_files

logger = logging.getLogger(__name__)

CSV_REQUIRED = ("path", "subject_id")
CSV_OPTIONAL = ("display_name", "category", "reason", "legal_basis", "expires_at", "source")
_SLUG = re.compile(SLUG_PATTERN)
_SUBJECT_FIELDS = ("display_name", "category", "reason", "legal_basis", "expires_at")
#: Most bytes of photos (before base64) one all-or-nothing request carries: well under the API's
#: default body limit (``OPENLFR_API_MAX_BODY_BYTES``, 16 MiB) once base64 adds a third.
REQUEST_IMAGE_BYTES = 8 * 1024 * 1024

#: Why a file was not enrolled, besides the registry's own image refusals
#: (``unreadable``, ``no_face``, ``multiple_faces``, ``too_small``, ``too_blurred``, ``low_quality``).
BULK_REASONS = (
    "not_in_subject_folder",  # a file directly under the folder
    "invalid_subject_id",  # a folder name or CSV subject_id that is not a valid id
    "invalid_row",  # a CSV row without path or subject_id
    "missing_file",  # a CSV path that is not a file
    "unreadable",  # cannot be read (locally) or decoded (by the registry)
    "unsupported_type",  # a suffix other than .jpg .jpeg .png .webp .bmp
    "invalid_subject",  # the subject's values (defaults or CSV) are not valid
    "subject_refused",  # the registry refused to create the subject
    "subject_on_other_watchlist",  # the subject id exists on another watchlist
    "duplicate",  # the same image is already a reference
    "near_duplicate",  # a copy of a photo already enrolled on another subject
    "too_many_images",  # the subject has the most images allowed
    "refused",  # any other refusal by the registry (413, 422...)
    "unreachable",  # the registry did not answer
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectDefaults:
    """Values for subjects the run creates and for images, where a CSV row gives none.

    Attributes:
        category: one of ``openlfr.registry.models.CATEGORIES``.
        reason: why the subjects are on the watchlist.
        legal_basis: the law or warrant it rests on.
        expires_at: when they come off (timezone-aware; within the registry's horizon).
        source: where the images came from (provenance of every upload).
    """

    category: Category
    reason: str
    legal_basis: str
    expires_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class BulkRefusal:
    """A file that was not enrolled, and why."""

    path: Path
    subject_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class BulkReport:
    """What :func:`bulk_enrol` did.

    Attributes:
        watchlist_id: the watchlist enrolled on.
        subjects_created: the subjects the run created and kept (each with an image), in order.
        enrolled: per subject, images enrolled by this run.
        refused: every file not enrolled, with the reason.
        subjects_removed: subjects not enrolled because every photo was refused (the registry kept
            none of them).
        watchlist_created: the run created the watchlist.
        watchlist_removed: ... and deleted it again, nothing having been enrolled.
        watchlist_kept: why a watchlist the run created with nothing enrolled was not deleted.
    """

    watchlist_id: str
    subjects_created: list[str] = field(default_factory=list)
    enrolled: dict[str, int] = field(default_factory=dict)
    refused: list[BulkRefusal] = field(default_factory=list)
    subjects_removed: list[str] = field(default_factory=list)
    watchlist_created: bool = False
    watchlist_removed: bool = False
    watchlist_kept: str | None = None

    @property
    def images_enrolled(self) -> int:
        """Images enrolled in all."""
        return sum(self.enrolled.values())

    def refused_by_reason(self) -> dict[str, int]:
        """Count of refused files per reason."""
        out: dict[str, int] = {}
        for item in self.refused:
            out[item.reason] = out.get(item.reason, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """The report in a few lines of text: counts, then each refused file and why."""
        lines = [
            f"watchlist {self.watchlist_id}: {len(self.subjects_created)} subjects created, "
            f"{self.images_enrolled} images enrolled, {len(self.refused)} files refused"
        ]
        for subject_id in self.subjects_removed:
            files = sum(1 for item in self.refused if item.subject_id == subject_id)
            lines.append(f"subject {subject_id} not enrolled: every one of its {files} file(s) was refused; the "
                         "registry kept no subject for it")
        if self.watchlist_removed:
            lines.append(f"watchlist {self.watchlist_id} deleted again: this run created it and enrolled nothing")
        elif self.watchlist_kept:
            lines.append(f"watchlist {self.watchlist_id} was created by this run and is kept: {self.watchlist_kept}")
        if self.refused:
            lines.append("refused by reason: " + ", ".join(f"{k} {v}" for k, v in self.refused_by_reason().items()))
            lines.extend(
                f"  {item.path} ({item.subject_id or '-'}): {item.reason}: {item.detail}" for item in self.refused
            )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Item:
    path: Path
    subject_id: str
    values: dict[str, str]  # a CSV row's optional columns that are not empty


def bulk_enrol(
    client: RegistryClient,
    *,
    watchlist_id: str,
    defaults: SubjectDefaults,
    folder: Path | None = None,
    csv_path: Path | None = None,
    progress: bool = True,
    watchlist_name: str | None = None,
) -> BulkReport:
    """Enrol every image of a folder tree or a CSV on a watchlist, through the registry's API.

    Args:
        client: a client whose token has the ``watchlist_admin`` role.
        watchlist_id: the watchlist (it must exist).
        defaults: values for the subjects created and the images' source.
        folder: ``folder/<subject_id>/**/<image>``; hidden files and folders are ignored.
        csv_path: a CSV with ``path,subject_id`` and optionally ``display_name, category,
            reason, legal_basis, expires_at, source`` columns; relative paths are from the
            CSV's folder. Give exactly one of ``folder`` and ``csv_path``.
        progress: show a progress bar on stderr.
        watchlist_name: when given, a missing watchlist is created with this name (and deleted
            again at the end when nothing was enrolled on it); when None it must exist.

    Returns:
        The subjects created, the images enrolled per subject, every refused file with why,
        and what was deleted again (all or nothing per subject).

    Raises:
        ValueError: neither or both of ``folder`` and ``csv_path``, a missing folder, or a
            CSV without the required columns.
        RegistryApiError: the watchlist does not exist (404) and ``watchlist_name`` is None,
            or the token is refused (401/403).
        RegistryUnreachable: the registry does not answer at the start.
    """
    if (folder is None) == (csv_path is None):
        raise ValueError("bulk_enrol: give exactly one of folder and csv_path")
    report = BulkReport(watchlist_id=watchlist_id)
    found = _folder_items(Path(folder), report) if folder is not None else _csv_items(Path(csv_path or ""), report)
    items = list(found)
    try:
        client.get_watchlist(watchlist_id)  # 404 before any work
    except RegistryApiError as exc:
        if exc.status_code != 404 or watchlist_name is None:
            raise
        client.create_watchlist(WatchlistCreate(id=watchlist_id, name=watchlist_name))
        report.watchlist_created = True
        logger.info('bulk enrolment created watchlist watchlist_id="%s"', watchlist_id)
    try:
        _enrol_items(client, items, watchlist_id=watchlist_id, defaults=defaults, report=report, progress=progress)
    except BaseException:
        # Stopped (Ctrl-C, a refused token): an empty watchlist it created goes all the same (the
        # registry never keeps a subject it created without an image).
        _remove_empty_watchlist(client, report)
        raise
    _remove_empty_watchlist(client, report)
    logger.info(
        'bulk enrolment done watchlist_id="%s" subjects_created="%d" images="%d" refused="%d"',
        watchlist_id, len(report.subjects_created), report.images_enrolled, len(report.refused),
    )
    return report


def _enrol_items(
    client: RegistryClient, items: list[_Item], *, watchlist_id: str, defaults: SubjectDefaults, report: BulkReport,
    progress: bool,
) -> None:
    by_subject: dict[str, list[_Item]] = {}
    for item in items:
        by_subject.setdefault(item.subject_id, []).append(item)
    with tqdm(total=len(items), desc=f"enrolling on {watchlist_id}", unit="image", file=sys.stderr,
              disable=not progress) as bar:

        def done(n: int = 1) -> None:
            bar.update(n)
            bar.set_postfix(enrolled=report.images_enrolled, refused=len(report.refused), refresh=False)

        for subject_id, group in by_subject.items():
            state = _subject_state(client, subject_id, watchlist_id)
            if state == "new":
                rest = _enrol_new_subject(client, group, watchlist_id, defaults, report, done)
            elif state == "exists":
                rest = group
            else:
                reason, _, detail = state.partition(":")
                report.refused.extend(BulkRefusal(i.path, subject_id, reason, detail.strip()) for i in group)
                done(len(group))
                rest = []
            for item in rest:
                report.enrolled.setdefault(item.subject_id, 0)
                _upload(client, item, defaults, report)
                done()


def _remove_empty_watchlist(client: RegistryClient, report: BulkReport) -> None:
    """Delete the watchlist this run created when nothing was enrolled on it (``watchlist_kept``
    says why not, when it is kept)."""
    if not report.watchlist_created or report.images_enrolled:
        return
    try:
        others = client.get_watchlist(report.watchlist_id).subject_count
        if others:
            report.watchlist_kept = f"{others} subject(s) were put on it by someone else meanwhile"
            return
        client.delete_watchlist(report.watchlist_id)
    except (RegistryApiError, RegistryUnreachable) as exc:
        report.watchlist_kept = f"it could not be deleted: {exc}"
        logger.warning('bulk enrolment could not delete the empty watchlist it created watchlist_id="%s" '
                       'error="%s"', report.watchlist_id, exc)
        return
    report.watchlist_removed = True


def _folder_items(root: Path, report: BulkReport) -> Iterator[_Item]:
    if not root.is_dir():
        raise ValueError(f"bulk_enrol: {root} is not a folder")
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report.refused.append(
                BulkRefusal(entry, None, "not_in_subject_folder", "images must sit in a folder per subject")
            )
            continue
        files = subject_files(entry)
        if not _SLUG.match(entry.name):
            detail = f"folder name {entry.name!r} does not match {SLUG_PATTERN}"
            report.refused.extend(BulkRefusal(path, None, "invalid_subject_id", detail) for path in files)
            continue
        for path in files:
            yield _Item(path, entry.name, {})


def _csv_items(csv_path: Path, report: BulkReport) -> Iterator[_Item]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"bulk_enrol: cannot read {csv_path}: {exc.strerror or exc}") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"bulk_enrol: {csv_path} lacks the columns {missing} (has {columns})")
    unknown = [c for c in columns if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if unknown:
        raise ValueError(f"bulk_enrol: {csv_path} has unknown columns {unknown}; known: {CSV_REQUIRED + CSV_OPTIONAL}")
    base = csv_path.parent
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        raw_path, subject_id = row.get("path", ""), row.get("subject_id", "")
        where = Path(raw_path) if raw_path else Path(f"{csv_path.name}:{line}")
        if not raw_path or not subject_id:
            detail = f"line {line}: path and subject_id are required"
            report.refused.append(BulkRefusal(where, subject_id or None, "invalid_row", detail))
            continue
        path = where if where.is_absolute() else base / where
        if not _SLUG.match(subject_id):
            report.refused.append(
                BulkRefusal(path, subject_id, "invalid_subject_id", f"line {line}: does not match {SLUG_PATTERN}")
            )
            continue
        if not path.is_file():
            report.refused.append(BulkRefusal(path, subject_id, "missing_file", f"line {line}: no such file"))
            continue
        yield _Item(path, subject_id, {k: row[k] for k in CSV_OPTIONAL if row.get(k)})


def _subject_state(client: RegistryClient, subject_id: str, watchlist_id: str) -> str:
    """``exists`` (on this watchlist), ``new``, or ``"reason: detail"`` why its files cannot go up."""
    try:
        existing = client.get_subject(subject_id)
    except RegistryApiError as exc:
        if exc.status_code in (401, 403):
            raise
        return "new" if exc.status_code == 404 else f"subject_refused: {exc.message}"
    except RegistryUnreachable as exc:
        return f"unreachable: {exc}"
    if existing.watchlist_id != watchlist_id:
        return f"subject_on_other_watchlist: subject {subject_id!r} is on watchlist {existing.watchlist_id!r}"
    return "exists"


def _enrol_new_subject(
    client: RegistryClient, group: list[_Item], watchlist_id: str, defaults: SubjectDefaults, report: BulkReport,
    done: Callable[[int], None],
) -> list[_Item]:
    """Create the subject with its first photos in one all-or-nothing request (the next share of
    photos if every one of a share is refused); returns the photos left for single uploads once
    the subject exists with an image, none when it could not be created."""
    subject_id = group[0].subject_id
    values = {
        "id": subject_id,
        "display_name": group[0].values.get("display_name", subject_id),
        "category": group[0].values.get("category", defaults.category),
        "reason": group[0].values.get("reason", defaults.reason),
        "legal_basis": group[0].values.get("legal_basis", defaults.legal_basis),
        "expires_at": group[0].values.get("expires_at", defaults.expires_at),
    }
    try:
        body = SubjectCreate.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        report.refused.extend(BulkRefusal(i.path, subject_id, "invalid_subject", problems) for i in group)
        done(len(group))
        return []
    pending = list(group)
    while pending:
        share: list[tuple[_Item, bytes, str]] = []
        size = 0
        while pending and len(share) < MAX_ENROLMENT_IMAGES:
            item = pending[0]
            upload = _read(item, report)
            if upload is None:
                pending.pop(0)
                done(1)
                continue
            if share and size + len(upload[0]) > REQUEST_IMAGE_BYTES:
                break
            pending.pop(0)
            share.append((item, *upload))
            size += len(upload[0])
        if not share:
            break
        images = [(data, content_type, share_item.values.get("source", defaults.source))
                  for share_item, data, content_type in share]
        try:
            enrolled = client.enrol_subject(watchlist_id, body, images)
        except RegistryApiError as exc:
            if exc.status_code in (401, 403):
                raise
            refused = exc.detail.get("refused") if isinstance(exc.detail, dict) else None
            if exc.reason == "no_image_enrolled" and isinstance(refused, list):
                for refusal in refused:
                    item = share[int(refusal["index"])][0]
                    report.refused.append(BulkRefusal(item.path, subject_id, refusal["reason"], refusal["message"]))
                done(len(share))
                continue  # nothing was kept: try the next share of photos
            report.refused.extend(BulkRefusal(i.path, subject_id, "subject_refused", exc.message) for i, _, _ in share)
            report.refused.extend(BulkRefusal(i.path, subject_id, "subject_refused", exc.message) for i in pending)
            done(len(share) + len(pending))
            return []
        except RegistryUnreachable as exc:
            report.refused.extend(BulkRefusal(i.path, subject_id, "unreachable", str(exc)) for i, _, _ in share)
            done(len(share))
            continue
        report.subjects_created.append(subject_id)
        report.enrolled[subject_id] = len(enrolled.images)
        for refusal in enrolled.refused:
            item = share[refusal.index][0]
            report.refused.append(BulkRefusal(item.path, subject_id, refusal.reason, refusal.message))
        logger.info('bulk enrolment created subject subject_id="%s" watchlist_id="%s" images="%d"',
                    subject_id, watchlist_id, len(enrolled.images))
        done(len(share))
        return pending
    if subject_id not in report.subjects_removed and any(r.subject_id == subject_id for r in report.refused):
        report.subjects_removed.append(subject_id)
    return []


def _read(item: _Item, report: BulkReport) -> tuple[bytes, str] | None:
    """A file's bytes and content type, or None with the file in ``report.refused`` and why."""
    content_type = IMAGE_CONTENT_TYPES.get(item.path.suffix.lower())
    if content_type is None:
        suffix = item.path.suffix or "(none)"
        detail = f"suffix {suffix!r} is not one of {sorted(IMAGE_CONTENT_TYPES)}"
        report.refused.append(BulkRefusal(item.path, item.subject_id, "unsupported_type", detail))
        return None
    try:
        return item.path.read_bytes(), content_type
    except OSError as exc:
        report.refused.append(BulkRefusal(item.path, item.subject_id, "unreadable",
                                          f"cannot read file ({exc.strerror or exc})"))
        return None


def _upload(client: RegistryClient, item: _Item, defaults: SubjectDefaults, report: BulkReport) -> None:
    def refuse(reason: str, detail: str) -> None:
        report.refused.append(BulkRefusal(item.path, item.subject_id, reason, detail))
        logger.info('bulk enrolment refused path="%s" reason="%s"', item.path, reason)

    upload = _read(item, report)
    if upload is None:
        return
    data, content_type = upload
    source = item.values.get("source", defaults.source)
    try:
        client.enrol_image(item.subject_id, data, content_type=content_type, source=source)
    except RegistryApiError as exc:
        if exc.status_code in (401, 403):
            raise
        if exc.reason is not None:  # the registry's refusal: no_face, duplicate, too_many_images...
            refuse(exc.reason, exc.message)
        elif exc.status_code == 415:
            refuse("unsupported_type", exc.message)
        else:
            refuse("refused", f"HTTP {exc.status_code}: {exc.message}")
        return
    except RegistryUnreachable as exc:
        refuse("unreachable", str(exc))
        return
    report.enrolled[item.subject_id] = report.enrolled.get(item.subject_id, 0) + 1
