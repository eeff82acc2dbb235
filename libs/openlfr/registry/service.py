"""The registry: watchlists, subjects, their reference images and deployments, kept in step
with the vector store and the audit log, and the deployment gate the match stage asks.

Every change runs as one unit under one lock: the database rows are written in a transaction,
the vector store is changed, the audit record is appended, and only then is the transaction
committed. If any step fails the transaction is rolled back and the subjects whose vectors were
touched are rebuilt from the database, so the store never searches what the database does not
hold. (An audit record whose commit then fails cannot be taken back; SQLite commits of a local
file practically do not fail once the writes succeeded.)

Reference vectors live only in the vector store. To take one image's vector out (the store's
role has no per-image delete) the subject's vectors are deleted and the remaining ones rebuilt
from their kept chips: the lossless chip is exactly what the embedder saw at enrolment, so the
rebuilt vectors are the enrolled ones. The subject is unsearchable for that moment.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import JsonValue

from openlfr.audit.log import Action, AuditLog
from openlfr.pipeline.deployments import ActiveDeployment
from openlfr.registry.db import RegistryDb
from openlfr.registry.exceptions import Conflict, ImageRefused, Invalid, NotFound
from openlfr.registry.models import (
    DeploymentCreate,
    DeploymentPage,
    DeploymentPublic,
    DeploymentStats,
    DeploymentStatus,
    DeploymentUpdate,
    ImagePublic,
    ImageQuality,
    Snapshot,
    SubjectCreate,
    SubjectPage,
    SubjectPublic,
    SubjectUpdate,
    WatchlistCreate,
    WatchlistPage,
    WatchlistPublic,
    WatchlistUpdate,
    to_datetime,
)
from openlfr.registry.settings import RegistrySettings
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import decode_image
from openlfr.watchlist.loader import reference_image_id
from openlfr.watchlist.store import VectorStore, WatchlistEntry

logger = logging.getLogger(__name__)

_DAY_S = 86_400.0
_QUALITY_COLUMNS = ("face_px", "inter_eye_px", "blur", "yaw", "roll_deg", "detector_score")
_IMAGE_COLUMNS = ", ".join(("subject_id", "id", "sha256", "source", "added_by", "added_ts", *_QUALITY_COLUMNS,
                            "quality_score"))
#: Most items one list call returns.
MAX_PAGE = 1000


def snapshot_fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    """SHA-256 (hex) of the sorted ``subject_id<TAB>reference_image_id`` lines joined by newlines."""
    text = "\n".join(f"{subject}\t{image}" for subject, image in sorted(pairs))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _iso(ts: float) -> str:
    return to_datetime(ts).isoformat()


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit", f"expected 1..{MAX_PAGE}, got {limit}")
    if offset < 0:
        raise Invalid("offset", f"expected >= 0, got {offset}")


@dataclass(frozen=True, slots=True)
class _Window:
    """One active deployment as the gate sees it for one camera."""

    start_ts: float
    end_ts: float
    deployment: ActiveDeployment


@dataclass(slots=True)
class _Tx:
    """One change in progress: its connection and the subjects whose vectors it touched."""

    conn: sqlite3.Connection
    touched: set[str] = field(default_factory=set)


class Registry:
    """Watchlists, subjects, reference images and deployments; the match stage's deployment gate.

    Args:
        db: the registry's database (the caller opens and closes it).
        store: the vector store the match stage searches (the caller opens and closes it).
        analyzer: the live pipeline's face analyzer (same models, same settings), for enrolment.
        audit: the hash-chained audit log every change is written to.
        settings: floors, horizons and limits.
        model_version: the embedding model deployments match with
            (``openlfr.models.build.model_version(model_dir, EMBEDDER.name)``).
        clock: wall clock in Unix seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        db: RegistryDb,
        store: VectorStore,
        analyzer: FaceAnalyzer,
        audit: AuditLog,
        settings: RegistrySettings,
        model_version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not model_version:
            raise ValueError("Registry.model_version: must not be empty")
        self.db = db
        self.store = store
        self.analyzer = analyzer
        self.audit = audit
        self.settings = settings
        self.model_version = model_version
        self.policy = settings.policy()
        self._clock = clock
        self._lock = threading.RLock()  # one change at a time: database, store and audit in step
        self._analyze_lock = threading.Lock()  # one enrolment image analysed at a time (bounded memory)
        self._gate: Mapping[str, tuple[_Window, ...]] = {}
        self._activity_lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._last_flush = time.monotonic()
        self._flush_scheduled = False
        self._closed = False
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-activity")
        self._refresh_gate()

    # -- the deployment gate (called by the match stage) -------------------------------------

    def active_for(self, camera_id: str, ts: float) -> ActiveDeployment | None:
        """The deployment covering ``camera_id`` at ``ts``: active, camera listed, start <= ts < end."""
        for window in self._gate.get(camera_id, ()):
            if window.start_ts <= ts < window.end_ts:
                return window.deployment
        return None

    def reference_chip(self, subject_id: str, reference_image_id: str) -> bytes | None:
        """The JPEG chip of a reference image, or None when it is not (or no longer) kept."""
        row = self.db.one(
            "SELECT chip_jpeg FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, reference_image_id)
        )
        return bytes(row["chip_jpeg"]) if row is not None else None

    def record_activity(self, deployment_id: str, *, faces: int, tracks: int) -> None:
        """Add to a deployment's counts. Kept in memory and written at most every
        ``activity_flush_s`` seconds by a background thread, so the caller never waits on the database.
        """
        if faces < 0 or tracks < 0:
            raise ValueError(f"record_activity: counts must be >= 0, got faces={faces} tracks={tracks}")
        if faces == 0 and tracks == 0:
            return
        with self._activity_lock:
            counts = self._pending.setdefault(deployment_id, [0, 0])
            counts[0] += faces
            counts[1] += tracks
            due = (
                not self._closed
                and not self._flush_scheduled
                and time.monotonic() - self._last_flush >= self.settings.activity_flush_s
            )
            if due:
                self._flush_scheduled = True
        if due:
            self._flusher.submit(self._background_flush)

    def flush_activity(self) -> None:
        """Write the pending activity counts to the database now."""
        with self._activity_lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not pending:
            return
        now = self._clock()
        try:
            with self.db.transaction() as conn:
                for deployment_id, (faces, tracks) in pending.items():
                    cursor = conn.execute(
                        "UPDATE deployment_stats SET faces = faces + ?, tracks = tracks + ?, updated_ts = ? "
                        "WHERE deployment_id = ?",
                        (faces, tracks, now, deployment_id),
                    )
                    if cursor.rowcount == 0:
                        logger.warning('activity for an unknown deployment deployment_id="%s" dropped', deployment_id)
        except BaseException:
            with self._activity_lock:  # keep the counts for the next flush
                for deployment_id, (faces, tracks) in pending.items():
                    counts = self._pending.setdefault(deployment_id, [0, 0])
                    counts[0] += faces
                    counts[1] += tracks
            raise

    def _background_flush(self) -> None:
        try:
            self.flush_activity()
        except Exception:
            logger.exception("writing deployment activity failed; kept for the next flush")
        finally:
            with self._activity_lock:
                self._flush_scheduled = False

    # -- watchlists --------------------------------------------------------------------------

    def create_watchlist(self, body: WatchlistCreate, *, actor: str) -> WatchlistPublic:
        """Create a watchlist.

        Raises:
            Conflict: the id is taken.
        """
        watchlist_id = body.id or _new_id("wl")
        now = self._clock()
        with self._change() as tx:
            if self._watchlist_row(tx.conn, watchlist_id) is not None:
                raise Conflict(f"watchlist {watchlist_id!r} already exists")
            tx.conn.execute(
                "INSERT INTO watchlists (id, name, description, created_by, created_ts, updated_ts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (watchlist_id, body.name, body.description, actor, now, now),
            )
            self._audit(
                actor, "watchlist.create", f"watchlist/{watchlist_id}",
                {"after": {"name": body.name, "description": body.description}},
            )
        logger.info('watchlist created watchlist_id="%s" actor="%s"', watchlist_id, actor)
        return self.get_watchlist(watchlist_id)

    def get_watchlist(self, watchlist_id: str) -> WatchlistPublic:
        """One watchlist. Raises NotFound."""
        row = self.db.one(
            "SELECT w.*, (SELECT COUNT(*) FROM subjects s WHERE s.watchlist_id = w.id) AS subject_count "
            "FROM watchlists w WHERE w.id = ?",
            (watchlist_id,),
        )
        if row is None:
            raise NotFound("watchlist", watchlist_id)
        return self._watchlist_public(row)

    def list_watchlists(self, *, limit: int = 100, offset: int = 0) -> WatchlistPage:
        """Watchlists by id."""
        _page(limit, offset)
        rows = self.db.all(
            "SELECT w.*, (SELECT COUNT(*) FROM subjects s WHERE s.watchlist_id = w.id) AS subject_count "
            "FROM watchlists w ORDER BY w.id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = self.db.one("SELECT COUNT(*) AS n FROM watchlists")
        return WatchlistPage(
            items=[self._watchlist_public(r) for r in rows], total=int(total["n"]) if total else 0,
            limit=limit, offset=offset,
        )

    def update_watchlist(self, watchlist_id: str, body: WatchlistUpdate, *, actor: str) -> WatchlistPublic:
        """Rename or re-describe a watchlist. Raises NotFound."""
        with self._change() as tx:
            row = self._watchlist_row(tx.conn, watchlist_id)
            if row is None:
                raise NotFound("watchlist", watchlist_id)
            diff = {k: {"before": row[k], "after": v} for k, v in body.changes().items() if row[k] != v}
            if diff:
                sets = ", ".join(f"{k} = ?" for k in diff)
                tx.conn.execute(
                    f"UPDATE watchlists SET {sets}, updated_ts = ? WHERE id = ?",  # noqa: S608 - names from the model
                    (*(d["after"] for d in diff.values()), self._clock(), watchlist_id),
                )
                self._audit(actor, "watchlist.update", f"watchlist/{watchlist_id}", {"changes": diff})
        return self.get_watchlist(watchlist_id)

    def delete_watchlist(self, watchlist_id: str, *, actor: str) -> None:
        """Delete a watchlist with its subjects, their images and their vectors.

        Raises:
            NotFound: no such watchlist.
            Conflict: an active deployment searches it.
        """
        now = self._clock()
        with self._change() as tx:
            row = self._watchlist_row(tx.conn, watchlist_id)
            if row is None:
                raise NotFound("watchlist", watchlist_id)
            users = [
                r["id"]
                for r in tx.conn.execute(
                    "SELECT d.id FROM deployments d JOIN deployment_watchlists w ON w.deployment_id = d.id "
                    "WHERE w.watchlist_id = ? AND d.status = 'active' AND d.end_ts > ? ORDER BY d.id",
                    (watchlist_id, now),
                )
            ]
            if users:
                raise Conflict(
                    f"watchlist {watchlist_id!r} is searched by active deployments {users}; end them first"
                )
            subjects = [
                r["id"]
                for r in tx.conn.execute("SELECT id FROM subjects WHERE watchlist_id = ? ORDER BY id", (watchlist_id,))
            ]
            for subject_id in subjects:
                tx.touched.add(subject_id)
                self.store.delete_subject(subject_id)
            tx.conn.execute("DELETE FROM watchlists WHERE id = ?", (watchlist_id,))  # cascades to subjects, images
            self._audit(
                actor, "watchlist.delete", f"watchlist/{watchlist_id}",
                {"before": {"name": row["name"], "description": row["description"]},
                 "subjects_deleted": len(subjects), "subject_ids": list(subjects)},
            )
        logger.info('watchlist deleted watchlist_id="%s" subjects="%d" actor="%s"', watchlist_id, len(subjects), actor)

    # -- subjects ----------------------------------------------------------------------------

    def create_subject(self, watchlist_id: str, body: SubjectCreate, *, actor: str) -> SubjectPublic:
        """Put a subject on a watchlist (searchable once an image is enrolled).

        Raises:
            NotFound: no such watchlist.
            Conflict: the subject id is taken (on any watchlist).
            Invalid: the expiry is in the past or beyond the horizon.
        """
        now = self._clock()
        expires_ts = self._check_expiry(body.expires_at.timestamp(), now)
        subject_id = body.id or _new_id("s")
        with self._change() as tx:
            if self._watchlist_row(tx.conn, watchlist_id) is None:
                raise NotFound("watchlist", watchlist_id)
            taken = tx.conn.execute("SELECT watchlist_id FROM subjects WHERE id = ?", (subject_id,)).fetchone()
            if taken is not None:
                raise Conflict(f"subject {subject_id!r} already exists (on watchlist {taken['watchlist_id']!r})")
            tx.conn.execute(
                "INSERT INTO subjects (id, watchlist_id, display_name, category, reason, legal_basis, added_by, "
                "status, expires_ts, created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subject_id, watchlist_id, body.display_name, body.category, body.reason, body.legal_basis, actor,
                 body.status, expires_ts, now, now),
            )
            tx.conn.execute("UPDATE watchlists SET updated_ts = ? WHERE id = ?", (now, watchlist_id))
            self._audit(
                actor, "subject.enrol", f"subject/{subject_id}",
                {"event": "subject_created", "watchlist_id": watchlist_id,
                 "after": {"display_name": body.display_name, "category": body.category, "reason": body.reason,
                           "legal_basis": body.legal_basis, "expires_at": _iso(expires_ts), "status": body.status}},
            )
        logger.info('subject created subject_id="%s" watchlist_id="%s" actor="%s"', subject_id, watchlist_id, actor)
        return self.get_subject(subject_id)

    def get_subject(self, subject_id: str) -> SubjectPublic:
        """One subject with its images. Raises NotFound."""
        row = self.db.one("SELECT * FROM subjects WHERE id = ?", (subject_id,))
        if row is None:
            raise NotFound("subject", subject_id)
        return self._subject_public(row, self._images_of([subject_id]).get(subject_id, []))

    def list_subjects(self, watchlist_id: str, *, limit: int = 100, offset: int = 0) -> SubjectPage:
        """A watchlist's subjects by id, with their images. Raises NotFound."""
        _page(limit, offset)
        self.get_watchlist(watchlist_id)
        rows = self.db.all(
            "SELECT * FROM subjects WHERE watchlist_id = ? ORDER BY id LIMIT ? OFFSET ?", (watchlist_id, limit, offset)
        )
        total = self.db.one("SELECT COUNT(*) AS n FROM subjects WHERE watchlist_id = ?", (watchlist_id,))
        images = self._images_of([r["id"] for r in rows])
        return SubjectPage(
            items=[self._subject_public(r, images.get(r["id"], [])) for r in rows],
            total=int(total["n"]) if total else 0, limit=limit, offset=offset,
        )

    def update_subject(self, subject_id: str, body: SubjectUpdate, *, actor: str) -> SubjectPublic:
        """Change a subject; a status or expiry change reaches the vector store before this returns.

        Raises:
            NotFound: no such subject.
            Invalid: the new expiry is in the past or beyond the horizon.
        """
        now = self._clock()
        changes = body.changes()
        if "expires_at" in changes:
            changes["expires_ts"] = self._check_expiry(body.expires_at.timestamp(), now)  # type: ignore[union-attr]
            del changes["expires_at"]
        with self._change() as tx:
            row = tx.conn.execute("SELECT * FROM subjects WHERE id = ?", (subject_id,)).fetchone()
            if row is None:
                raise NotFound("subject", subject_id)
            diff = {k: {"before": row[k], "after": v} for k, v in changes.items() if row[k] != v}
            if diff:
                sets = ", ".join(f"{k} = ?" for k in diff)
                tx.conn.execute(
                    f"UPDATE subjects SET {sets}, updated_ts = ? WHERE id = ?",  # noqa: S608 - names from the model
                    (*(d["after"] for d in diff.values()), now, subject_id),
                )
                if "status" in diff or "expires_ts" in diff:
                    tx.touched.add(subject_id)
                    self.store.set_subject_state(
                        subject_id,
                        status=changes.get("status", row["status"]),  # type: ignore[arg-type]
                        expires_ts=float(changes.get("expires_ts", row["expires_ts"])),  # type: ignore[arg-type]
                    )
                if "expires_ts" in diff:
                    expiry = diff.pop("expires_ts")
                    diff["expires_at"] = {"before": _iso(expiry["before"]), "after": _iso(expiry["after"])}
                self._audit(
                    actor, "subject.update", f"subject/{subject_id}",
                    {"event": "subject_changed", "watchlist_id": row["watchlist_id"], "changes": diff},
                )
        return self.get_subject(subject_id)

    def delete_subject(self, subject_id: str, *, actor: str) -> None:
        """Delete a subject, its images and its vectors (gone from search before this returns).

        Raises:
            NotFound: no such subject.
        """
        with self._change() as tx:
            row = tx.conn.execute("SELECT * FROM subjects WHERE id = ?", (subject_id,)).fetchone()
            if row is None:
                raise NotFound("subject", subject_id)
            images = [r["id"] for r in tx.conn.execute(
                "SELECT id FROM reference_images WHERE subject_id = ? ORDER BY id", (subject_id,)
            )]
            tx.touched.add(subject_id)
            self.store.delete_subject(subject_id)
            tx.conn.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
            tx.conn.execute("UPDATE watchlists SET updated_ts = ? WHERE id = ?", (self._clock(), row["watchlist_id"]))
            self._audit(
                actor, "subject.delete", f"subject/{subject_id}",
                {"watchlist_id": row["watchlist_id"], "image_ids": images,
                 "before": {"display_name": row["display_name"], "category": row["category"],
                            "status": row["status"], "expires_at": _iso(row["expires_ts"])}},
            )
        logger.info('subject deleted subject_id="%s" images="%d" actor="%s"', subject_id, len(images), actor)

    # -- reference images --------------------------------------------------------------------

    def enrol_image(
        self, subject_id: str, data: bytes, *, source: str, actor: str, image: np.ndarray | None = None
    ) -> ImagePublic:
        """Analyse one image and, if it passes the enrolment policy, make it a reference of the subject.

        The image goes through the live pipeline's analyzer (detect -> landmarks -> chip ->
        quality -> embed). Kept: the aligned chip, the quality figures and the SHA-256 of
        ``data``; the vector goes to the store only; the original bytes are not kept.

        Args:
            subject_id: whose image it is.
            data: the original file's bytes (its SHA-256 is the image's id).
            source: where the image came from (required provenance).
            actor: who enrols it.
            image: ``data`` already decoded (RGB), as the API does under its limits; decoded
                here when None.

        Raises:
            NotFound: no such subject.
            Invalid: ``source`` is blank or too long.
            ImageRefused: unreadable, no face, several faces, too small, blurred or poor.
            Conflict: the same image is already a reference (of this or another subject), or
                the subject has the maximum number of images.
        """
        source = source.strip()
        if not 1 <= len(source) <= 1000:
            raise Invalid("source", "give where the image came from (1..1000 characters)")
        self._subject_row(subject_id)  # fail fast before the costly analysis
        image_id = reference_image_id(data)
        sha256 = hashlib.sha256(data).hexdigest()
        self._check_new_image(self.db.one, subject_id, image_id)
        if image is None:
            try:
                image = decode_image(data, name="enrolment image", max_pixels=self.settings.max_image_pixels)
            except ImageError as exc:
                raise ImageRefused("unreadable", str(exc)) from exc
        with self._analyze_lock:
            located = self.analyzer.locate_many([image], keep_chips=True)[0]
            problem = self.policy.refusal(located)
            if problem is not None:
                logger.info('enrolment image refused subject_id="%s" reason="%s"', subject_id, problem[0])
                raise ImageRefused(*problem)
            faces = self.analyzer.embed_many([located])[0]
        if faces.embeddings is None or faces.chips is None:
            raise RuntimeError("the analyzer returned a face without its embedding or chip")
        chip = faces.chips[0]
        chip_jpeg, chip_png = self._encode_chip(chip)
        q = faces.quality.row(0)
        now = self._clock()
        with self._change() as tx:
            row = self._subject_row(subject_id, tx.conn)
            self._check_new_image(lambda sql, p: tx.conn.execute(sql, p).fetchone(), subject_id, image_id)
            tx.conn.execute(
                f"INSERT INTO reference_images ({_IMAGE_COLUMNS}, chip_jpeg, chip_png) "  # noqa: S608 - constants
                f"VALUES ({', '.join('?' * (_IMAGE_COLUMNS.count(',') + 3))})",
                (subject_id, image_id, sha256, source, actor, now, *(q[c] for c in _QUALITY_COLUMNS), q["score"],
                 chip_jpeg, chip_png),
            )
            tx.conn.execute("UPDATE subjects SET updated_ts = ? WHERE id = ?", (now, subject_id))
            tx.touched.add(subject_id)
            self.store.upsert([
                WatchlistEntry(
                    subject_id=subject_id, watchlist_id=row["watchlist_id"], reference_image_id=image_id,
                    vector=faces.embeddings[0], status=row["status"], expires_ts=float(row["expires_ts"]),
                    enrolled_ts=now,
                )
            ])
            self._audit(
                actor, "subject.enrol", f"subject/{subject_id}",
                {"event": "image_added", "watchlist_id": row["watchlist_id"], "image_id": image_id,
                 "sha256": sha256, "source": source,
                 "quality": {k: round(v, 4) for k, v in q.items()}},
            )
        logger.info('reference image enrolled subject_id="%s" image_id="%s" actor="%s"', subject_id, image_id, actor)
        return self.get_image(subject_id, image_id)

    def get_image(self, subject_id: str, image_id: str) -> ImagePublic:
        """One reference image's record. Raises NotFound."""
        self._subject_row(subject_id)
        images = self._images_of([subject_id]).get(subject_id, [])
        for item in images:
            if item.id == image_id:
                return item
        raise NotFound("image", image_id)

    def image_chip(self, subject_id: str, image_id: str) -> bytes:
        """The JPEG chip of a reference image. Raises NotFound."""
        self._subject_row(subject_id)
        chip = self.reference_chip(subject_id, image_id)
        if chip is None:
            raise NotFound("image", image_id)
        return chip

    def delete_image(self, subject_id: str, image_id: str, *, actor: str) -> None:
        """Remove one reference image and its vector (the subject's others are rebuilt).

        Raises:
            NotFound: no such subject or image.
        """
        with self._change() as tx:
            row = self._subject_row(subject_id, tx.conn)
            image = tx.conn.execute(
                "SELECT source, sha256 FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, image_id)
            ).fetchone()
            if image is None:
                raise NotFound("image", image_id)
            tx.conn.execute("DELETE FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, image_id))
            tx.conn.execute("UPDATE subjects SET updated_ts = ? WHERE id = ?", (self._clock(), subject_id))
            tx.touched.add(subject_id)
            remaining = self._sync_subject_vectors(tx.conn, subject_id)
            self._audit(
                actor, "subject.update", f"subject/{subject_id}",
                {"event": "image_removed", "watchlist_id": row["watchlist_id"], "image_id": image_id,
                 "sha256": image["sha256"], "source": image["source"], "images_left": remaining},
            )
        logger.info('reference image deleted subject_id="%s" image_id="%s" actor="%s"', subject_id, image_id, actor)

    # -- deployments -------------------------------------------------------------------------

    def create_deployment(self, body: DeploymentCreate, *, actor: str) -> DeploymentPublic:
        """Authorise matching, taking the watchlists' snapshot now.

        Raises:
            Invalid: a watchlist that does not exist, a threshold under the floor, an end in the past.
            Conflict: the id is taken, or a camera is already covered by another active
                deployment in an overlapping window.
        """
        now = self._clock()
        start_ts, end_ts = body.start_at.timestamp(), body.end_at.timestamp()
        self._check_threshold(body.threshold)
        if end_ts <= now:
            raise Invalid("end_at", f"{body.end_at.isoformat()} is in the past")
        if start_ts < now - self.settings.max_backdate_s:
            raise Invalid(
                "start_at",
                f"{body.start_at.isoformat()} is more than {self.settings.max_backdate_s:g} s in the past; "
                "a deployment cannot authorise matching retroactively",
            )
        deployment_id = body.id or _new_id("dep")
        with self._change() as tx:
            if tx.conn.execute("SELECT 1 FROM deployments WHERE id = ?", (deployment_id,)).fetchone() is not None:
                raise Conflict(f"deployment {deployment_id!r} already exists")
            for watchlist_id in body.watchlist_ids:
                if self._watchlist_row(tx.conn, watchlist_id) is None:
                    raise Invalid("watchlist_ids", f"watchlist {watchlist_id!r} does not exist")
            self._check_overlap(tx.conn, deployment_id, body.camera_ids, start_ts, end_ts, now)
            subjects, pairs = self._snapshot(tx.conn, body.watchlist_ids, now)
            fingerprint = snapshot_fingerprint(pairs)
            tx.conn.execute(
                "INSERT INTO deployments (id, purpose, authorised_by, created_by, start_ts, end_ts, threshold, status, "
                "snapshot_ts, snapshot_subjects, snapshot_images, snapshot_fingerprint, model_version, created_ts, "
                "updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)",
                (deployment_id, body.purpose, body.authorised_by, actor, start_ts, end_ts, body.threshold, now,
                 subjects, len(pairs), fingerprint, self.model_version, now, now),
            )
            tx.conn.executemany(
                "INSERT INTO deployment_cameras (deployment_id, camera_id) VALUES (?, ?)",
                [(deployment_id, c) for c in body.camera_ids],
            )
            tx.conn.executemany(
                "INSERT INTO deployment_watchlists (deployment_id, watchlist_id) VALUES (?, ?)",
                [(deployment_id, w) for w in body.watchlist_ids],
            )
            tx.conn.execute(
                "INSERT INTO deployment_stats (deployment_id, faces, tracks) VALUES (?, 0, 0)", (deployment_id,)
            )
            self._audit(
                actor, "deployment.create", f"deployment/{deployment_id}",
                {"after": {"purpose": body.purpose, "authorised_by": body.authorised_by,
                           "camera_ids": list(body.camera_ids), "start_at": _iso(start_ts), "end_at": _iso(end_ts),
                           "watchlist_ids": list(body.watchlist_ids), "threshold": body.threshold,
                           "model_version": self.model_version},
                 "snapshot": {"snapshot_ts": now, "active_subjects": subjects, "reference_images": len(pairs),
                              "fingerprint": fingerprint}},
            )
        self._check_store_snapshot(deployment_id, body.watchlist_ids, subjects, now)
        self._refresh_gate()
        logger.info(
            'deployment created deployment_id="%s" cameras="%d" watchlists="%d" subjects="%d" actor="%s"',
            deployment_id, len(body.camera_ids), len(body.watchlist_ids), subjects, actor,
        )
        return self.get_deployment(deployment_id)

    def get_deployment(self, deployment_id: str) -> DeploymentPublic:
        """One deployment with its current counts. Raises NotFound."""
        self.flush_activity()
        row = self.db.one("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        if row is None:
            raise NotFound("deployment", deployment_id)
        return self._deployment_public(row)

    def list_deployments(
        self, *, status: DeploymentStatus | None = None, limit: int = 100, offset: int = 0
    ) -> DeploymentPage:
        """Deployments, newest first, optionally only those ``active`` or ``ended`` (as ``status`` reports)."""
        _page(limit, offset)
        self.flush_activity()
        now = self._clock()
        where: str = ""
        params: tuple[Any, ...] = ()
        if status == "active":
            where, params = "WHERE status = 'active' AND end_ts > ?", (now,)
        elif status == "ended":
            where, params = "WHERE status = 'ended' OR end_ts <= ?", (now,)
        rows = self.db.all(
            f"SELECT * FROM deployments {where} ORDER BY created_ts DESC, id LIMIT ? OFFSET ?",  # noqa: S608
            (*params, limit, offset),
        )
        total = self.db.one(f"SELECT COUNT(*) AS n FROM deployments {where}", params)  # noqa: S608
        return DeploymentPage(
            items=[self._deployment_public(r) for r in rows], total=int(total["n"]) if total else 0,
            limit=limit, offset=offset,
        )

    def update_deployment(self, deployment_id: str, body: DeploymentUpdate, *, actor: str) -> DeploymentPublic:
        """Change a running deployment's purpose, end, cameras or threshold (its watchlists and
        snapshot are fixed). A threshold change is audited as ``deployment.threshold``.

        Raises:
            NotFound: no such deployment.
            Conflict: it has ended, or a new camera or end overlaps another deployment.
            Invalid: a threshold under the floor, an end before its start or in the past.
        """
        now = self._clock()
        if body.threshold is not None:
            self._check_threshold(body.threshold)
        with self._change() as tx:
            row = tx.conn.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
            if row is None:
                raise NotFound("deployment", deployment_id)
            if self._status(row, now) == "ended":
                raise Conflict(f"deployment {deployment_id!r} has ended; create a new one")
            cameras = self._cameras(tx.conn, deployment_id)
            end_ts = float(row["end_ts"])
            if body.end_at is not None:
                end_ts = body.end_at.timestamp()
                if end_ts <= row["start_ts"]:
                    raise Invalid(
                        "end_at", f"{body.end_at.isoformat()} is not after start_at ({_iso(row['start_ts'])})"
                    )
                if end_ts <= now:
                    raise Invalid("end_at", f"{body.end_at.isoformat()} is in the past; end the deployment instead")
            new_cameras = list(body.camera_ids) if body.camera_ids is not None else cameras
            self._check_overlap(tx.conn, deployment_id, new_cameras, float(row["start_ts"]), end_ts, now)
            changes: dict[str, JsonValue] = {}
            if body.purpose is not None and body.purpose != row["purpose"]:
                tx.conn.execute("UPDATE deployments SET purpose = ? WHERE id = ?", (body.purpose, deployment_id))
                changes["purpose"] = {"before": row["purpose"], "after": body.purpose}
            if end_ts != row["end_ts"]:
                tx.conn.execute("UPDATE deployments SET end_ts = ? WHERE id = ?", (end_ts, deployment_id))
                changes["end_at"] = {"before": _iso(row["end_ts"]), "after": _iso(end_ts)}
            if sorted(new_cameras) != sorted(cameras):
                tx.conn.execute("DELETE FROM deployment_cameras WHERE deployment_id = ?", (deployment_id,))
                tx.conn.executemany(
                    "INSERT INTO deployment_cameras (deployment_id, camera_id) VALUES (?, ?)",
                    [(deployment_id, c) for c in new_cameras],
                )
                changes["camera_ids"] = {"before": sorted(cameras), "after": sorted(new_cameras)}
            threshold_changed = body.threshold is not None and body.threshold != row["threshold"]
            if threshold_changed:
                tx.conn.execute("UPDATE deployments SET threshold = ? WHERE id = ?", (body.threshold, deployment_id))
            if changes or threshold_changed:
                tx.conn.execute("UPDATE deployments SET updated_ts = ? WHERE id = ?", (now, deployment_id))
            target = f"deployment/{deployment_id}"
            if threshold_changed:
                self._audit(
                    actor, "deployment.threshold", target,
                    {"threshold": {"before": row["threshold"], "after": body.threshold},
                     "floor": self.settings.threshold_floor},
                )
            if changes:
                self._audit(actor, "deployment.update", target, {"changes": changes})
        self._refresh_gate()
        return self.get_deployment(deployment_id)

    def end_deployment(self, deployment_id: str, *, actor: str, reason: str | None = None) -> DeploymentPublic:
        """End a deployment now: the gate stops covering its cameras at once.

        Raises:
            NotFound: no such deployment.
            Conflict: it has already ended.
        """
        self.flush_activity()
        now = self._clock()
        with self._change() as tx:
            row = tx.conn.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
            if row is None:
                raise NotFound("deployment", deployment_id)
            if row["status"] == "ended":
                raise Conflict(f"deployment {deployment_id!r} was already ended at {_iso(row['ended_ts'])}")
            tx.conn.execute(
                "UPDATE deployments SET status = 'ended', ended_ts = ?, ended_by = ?, end_reason = ?, updated_ts = ? "
                "WHERE id = ?",
                (now, actor, reason, now, deployment_id),
            )
            stats = tx.conn.execute(
                "SELECT faces, tracks FROM deployment_stats WHERE deployment_id = ?", (deployment_id,)
            ).fetchone()
            self._audit(
                actor, "deployment.end", f"deployment/{deployment_id}",
                {"reason": reason, "scheduled_end_at": _iso(row["end_ts"]),
                 "stats": {"faces": stats["faces"], "tracks": stats["tracks"]} if stats else None},
            )
        self._refresh_gate()
        logger.info('deployment ended deployment_id="%s" actor="%s"', deployment_id, actor)
        return self.get_deployment(deployment_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Whether the database and the vector store answer."""
        ok, reason = self.db.ready()
        if not ok:
            return ok, reason
        return self.store.ready()

    def close(self) -> None:
        """Write the pending activity counts and stop the background writer (not the db or store)."""
        with self._activity_lock:
            self._closed = True
        self._flusher.shutdown(wait=True)
        self.flush_activity()

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _change(self) -> Iterator[_Tx]:
        """One change: a transaction under the registry's lock; on failure, roll back and
        rebuild the touched subjects' vectors from the database."""
        with self._lock:
            tx: _Tx | None = None
            try:
                with self.db.transaction() as conn:
                    tx = _Tx(conn)
                    yield tx
            except BaseException:
                for subject_id in sorted(tx.touched if tx else ()):
                    self._repair(subject_id)
                raise

    def _repair(self, subject_id: str) -> None:
        try:
            with self.db.transaction() as conn:
                self._sync_subject_vectors(conn, subject_id)
            logger.warning('subject vectors rebuilt after a failed change subject_id="%s"', subject_id)
        except Exception:
            logger.exception(
                'cannot rebuild vectors after a failed change subject_id="%s"; the store may differ from the registry',
                subject_id,
            )

    def _sync_subject_vectors(self, conn: sqlite3.Connection, subject_id: str) -> int:
        """Make the store hold exactly the subject's images as ``conn`` sees them; returns their count."""
        subject = conn.execute(
            "SELECT watchlist_id, status, expires_ts FROM subjects WHERE id = ?", (subject_id,)
        ).fetchone()
        self.store.delete_subject(subject_id)
        if subject is None:
            return 0
        rows = conn.execute(
            "SELECT id, added_ts, chip_png FROM reference_images WHERE subject_id = ? ORDER BY id", (subject_id,)
        ).fetchall()
        if not rows:
            return 0
        chips = np.stack([self._decode_chip(bytes(r["chip_png"])) for r in rows])
        with self._analyze_lock:
            vectors = self.analyzer.embedder.embed(chips)
        self.store.upsert([
            WatchlistEntry(
                subject_id=subject_id, watchlist_id=subject["watchlist_id"], reference_image_id=r["id"],
                vector=vector, status=subject["status"], expires_ts=float(subject["expires_ts"]),
                enrolled_ts=float(r["added_ts"]),  # the snapshots of running deployments still include it
            )
            for r, vector in zip(rows, vectors, strict=True)
        ])
        return len(rows)

    def _encode_chip(self, chip: np.ndarray) -> tuple[bytes, bytes]:
        bgr = cv2.cvtColor(chip, cv2.COLOR_RGB2BGR)
        ok_jpeg, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.settings.chip_jpeg_quality])
        ok_png, png = cv2.imencode(".png", bgr)
        if not (ok_jpeg and ok_png):
            raise RuntimeError("the reference chip could not be encoded")
        return jpeg.tobytes(), png.tobytes()

    @staticmethod
    def _decode_chip(png: bytes) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError("a stored reference chip cannot be decoded")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _audit(self, actor: str, action: Action, target: str, details: dict[str, JsonValue]) -> None:
        self.audit.append(actor=actor, action=action, target=target, details=details, ts=self._clock())

    def _check_expiry(self, expires_ts: float, now: float) -> float:
        if expires_ts <= now:
            raise Invalid("expires_at", f"{_iso(expires_ts)} is not in the future")
        horizon = now + self.settings.max_expiry_days * _DAY_S
        if expires_ts > horizon:
            raise Invalid(
                "expires_at",
                f"{_iso(expires_ts)} is beyond the maximum horizon of {self.settings.max_expiry_days} days "
                f"(at the latest {_iso(horizon)})",
            )
        return expires_ts

    def _check_threshold(self, threshold: float) -> None:
        floor = self.settings.threshold_floor
        if not math.isfinite(threshold) or threshold < floor:
            raise Invalid(
                "threshold", f"{threshold:g} is below the floor of {floor:g} (OPENLFR_REGISTRY_THRESHOLD_FLOOR)"
            )

    def _check_new_image(self, one: Callable[[str, tuple[Any, ...]], Any], subject_id: str, image_id: str) -> None:
        holder = one("SELECT subject_id FROM reference_images WHERE id = ? ORDER BY subject_id = ? DESC LIMIT 1",
                     (image_id, subject_id))
        if holder is not None:
            if holder["subject_id"] == subject_id:
                raise Conflict(
                    f"image {image_id!r} is already a reference of subject {subject_id!r}", reason="duplicate"
                )
            raise Conflict(
                f"this image is already a reference of subject {holder['subject_id']!r}; "
                "one photo cannot show two people",
                reason="duplicate",
            )
        count = one("SELECT COUNT(*) AS n FROM reference_images WHERE subject_id = ?", (subject_id,))
        if count is not None and count["n"] >= self.settings.max_images_per_subject:
            raise Conflict(
                f"subject {subject_id!r} has {count['n']} images, the most allowed "
                "(OPENLFR_REGISTRY_MAX_IMAGES_PER_SUBJECT); delete one first",
                reason="too_many_images",
            )

    def _check_overlap(
        self, conn: sqlite3.Connection, deployment_id: str, cameras: Sequence[str], start_ts: float, end_ts: float,
        now: float,
    ) -> None:
        """One deployment per camera at a time, so the gate's answer is never ambiguous."""
        if not cameras:
            return
        marks = ", ".join("?" * len(cameras))
        clash = conn.execute(
            "SELECT d.id, c.camera_id, d.start_ts, d.end_ts FROM deployments d "
            "JOIN deployment_cameras c ON c.deployment_id = d.id "
            f"WHERE d.status = 'active' AND d.end_ts > ? AND d.id != ? AND c.camera_id IN ({marks}) "  # noqa: S608
            "AND d.start_ts < ? AND ? < d.end_ts ORDER BY d.start_ts, c.camera_id LIMIT 1",
            (now, deployment_id, *cameras, end_ts, start_ts),
        ).fetchone()
        if clash is not None:
            raise Conflict(
                f"camera {clash['camera_id']!r} is already covered by deployment {clash['id']!r} from "
                f"{_iso(clash['start_ts'])} to {_iso(clash['end_ts'])}"
            )

    @staticmethod
    def _snapshot(
        conn: sqlite3.Connection, watchlist_ids: Sequence[str], now: float
    ) -> tuple[int, list[tuple[str, str]]]:
        """(searchable subjects, their (subject_id, image_id) pairs) of the watchlists at ``now``."""
        marks = ", ".join("?" * len(watchlist_ids))
        rows = conn.execute(
            "SELECT s.id AS subject_id, r.id AS image_id FROM subjects s "
            "JOIN reference_images r ON r.subject_id = s.id "
            f"WHERE s.watchlist_id IN ({marks}) AND s.status = 'active' AND s.expires_ts > ?",  # noqa: S608
            (*watchlist_ids, now),
        ).fetchall()
        pairs = sorted((r["subject_id"], r["image_id"]) for r in rows)
        return len({subject for subject, _ in pairs}), pairs

    def _check_store_snapshot(
        self, deployment_id: str, watchlist_ids: Sequence[str], subjects: int, now: float
    ) -> None:
        """Warn when the store's count of searchable subjects differs from the registry's."""
        try:
            in_store = self.store.count_subjects(watchlist_ids=list(watchlist_ids), enrolled_before=now)
        except Exception:
            logger.exception('cannot count the snapshot in the vector store deployment_id="%s"', deployment_id)
            return
        if in_store != subjects:
            logger.warning(
                'vector store and registry differ deployment_id="%s" registry_subjects="%d" store_subjects="%d"',
                deployment_id, subjects, in_store,
            )

    def _refresh_gate(self) -> None:
        """Rebuild the per-camera index of active deployments (after every deployment change).

        Under the registry's lock, so two changes' refreshes cannot land out of order.
        """
        with self._lock:
            self._gate = self._gate_index()

    def _gate_index(self) -> dict[str, tuple[_Window, ...]]:
        floor = self.settings.threshold_floor
        rows = self.db.all("SELECT * FROM deployments WHERE status = 'active'")
        index: dict[str, list[_Window]] = {}
        for row in rows:
            threshold = float(row["threshold"])
            if threshold < floor:  # the floor was raised after the deployment was authorised
                logger.warning(
                    'deployment threshold under the floor, raised deployment_id="%s" threshold="%g" floor="%g"',
                    row["id"], threshold, floor,
                )
                threshold = floor
            active = ActiveDeployment(
                deployment_id=row["id"],
                watchlist_ids=tuple(self._watchlists_of(row["id"])),
                threshold=threshold,
                snapshot_ts=float(row["snapshot_ts"]),
            )
            window = _Window(float(row["start_ts"]), float(row["end_ts"]), active)
            for camera_id in self._cameras(None, row["id"]):
                index.setdefault(camera_id, []).append(window)
        return {camera: tuple(sorted(windows, key=lambda w: -w.start_ts)) for camera, windows in index.items()}

    # -- row readers --------------------------------------------------------------------------

    def _watchlist_row(self, conn: sqlite3.Connection, watchlist_id: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM watchlists WHERE id = ?", (watchlist_id,)).fetchone()

    def _subject_row(self, subject_id: str, conn: sqlite3.Connection | None = None) -> sqlite3.Row:
        sql, params = "SELECT * FROM subjects WHERE id = ?", (subject_id,)
        row = conn.execute(sql, params).fetchone() if conn is not None else self.db.one(sql, params)
        if row is None:
            raise NotFound("subject", subject_id)
        return row

    def _cameras(self, conn: sqlite3.Connection | None, deployment_id: str) -> list[str]:
        sql = "SELECT camera_id FROM deployment_cameras WHERE deployment_id = ? ORDER BY camera_id"
        rows = conn.execute(sql, (deployment_id,)).fetchall() if conn is not None else self.db.all(sql, [deployment_id])
        return [r["camera_id"] for r in rows]

    def _watchlists_of(self, deployment_id: str) -> list[str]:
        rows = self.db.all(
            "SELECT watchlist_id FROM deployment_watchlists WHERE deployment_id = ? ORDER BY watchlist_id",
            (deployment_id,),
        )
        return [r["watchlist_id"] for r in rows]

    def _images_of(self, subject_ids: Sequence[str]) -> dict[str, list[ImagePublic]]:
        if not subject_ids:
            return {}
        marks = ", ".join("?" * len(subject_ids))
        rows = self.db.all(
            f"SELECT {_IMAGE_COLUMNS} FROM reference_images WHERE subject_id IN ({marks}) "  # noqa: S608
            "ORDER BY added_ts, id",
            tuple(subject_ids),
        )
        out: dict[str, list[ImagePublic]] = {}
        for r in rows:
            out.setdefault(r["subject_id"], []).append(
                ImagePublic(
                    id=r["id"], subject_id=r["subject_id"], sha256=r["sha256"], source=r["source"],
                    added_by=r["added_by"], added_at=to_datetime(r["added_ts"]),
                    quality=ImageQuality(**{c: float(r[c]) for c in _QUALITY_COLUMNS}, score=float(r["quality_score"])),
                )
            )
        return out

    @staticmethod
    def _watchlist_public(row: sqlite3.Row) -> WatchlistPublic:
        return WatchlistPublic(
            id=row["id"], name=row["name"], description=row["description"], created_by=row["created_by"],
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
            subject_count=int(row["subject_count"]),
        )

    def _subject_public(self, row: sqlite3.Row, images: list[ImagePublic]) -> SubjectPublic:
        return SubjectPublic(
            id=row["id"], watchlist_id=row["watchlist_id"], display_name=row["display_name"],
            category=row["category"], reason=row["reason"], legal_basis=row["legal_basis"], added_by=row["added_by"],
            expires_at=to_datetime(row["expires_ts"]), expired=row["expires_ts"] <= self._clock(),
            status=row["status"], images=images,
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
        )

    @staticmethod
    def _status(row: sqlite3.Row, now: float) -> Literal["active", "ended"]:
        return "ended" if row["status"] == "ended" or row["end_ts"] <= now else "active"

    def _deployment_public(self, row: sqlite3.Row) -> DeploymentPublic:
        stats = self.db.one("SELECT faces, tracks FROM deployment_stats WHERE deployment_id = ?", (row["id"],))
        return DeploymentPublic(
            id=row["id"], purpose=row["purpose"], authorised_by=row["authorised_by"], created_by=row["created_by"],
            camera_ids=self._cameras(None, row["id"]),
            start_at=to_datetime(row["start_ts"]), end_at=to_datetime(row["end_ts"]),
            watchlist_ids=self._watchlists_of(row["id"]), threshold=float(row["threshold"]),
            snapshot=Snapshot(
                snapshot_ts=float(row["snapshot_ts"]), taken_at=to_datetime(row["snapshot_ts"]),
                active_subjects=int(row["snapshot_subjects"]), reference_images=int(row["snapshot_images"]),
                fingerprint=row["snapshot_fingerprint"],
            ),
            status=self._status(row, self._clock()),
            stats=DeploymentStats(
                faces=int(stats["faces"]) if stats else 0, tracks=int(stats["tracks"]) if stats else 0
            ),
            model_version=row["model_version"],
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
            ended_at=to_datetime(row["ended_ts"]) if row["ended_ts"] is not None else None,
            ended_by=row["ended_by"], end_reason=row["end_reason"],
        )
