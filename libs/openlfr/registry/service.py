"""The registry: watchlists, subjects, their reference images and deployments, kept in step
with the vector store and the audit log, and the deployment gate the match stage asks.

``Registry`` is assembled from one part per concern, over the shared machinery of
``openlfr.registry.core`` (every change one unit: database, vector store, audit record):

* this module: watchlists and subjects, start and stop;
* ``openlfr.registry.references``: reference images (enrolment with each reference's cohort
  statistics, chips, removal, re-scoring against a new cohort);
* ``openlfr.registry.deployments``: deployments (snapshot, per-subject thresholds calibrated
  to a target false-alert rate, audited changes);
* ``openlfr.registry.deployment_gate``: the deployment gate the match stage asks per frame, and
  the deployments' activity counts.
* ``openlfr.registry.reembedding``: which embedder each reference is of, the watchlists awaiting
  re-embedding after an embedder change (their deployments withheld by the gate), and the
  re-embedding job (``POST /v1/reembed``).

At start the registry loads nothing itself: the hosting service gives it the background cohort
(``OPENLFR_REGISTRY_COHORT``), checked against the embedding model; references scored against
another cohort (or none) are re-scored, and running deployments calibrated on another cohort
are re-calibrated, before the gate answers.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from openlfr.audit.log import AuditLog
from openlfr.cohort.cohort import Cohort
from openlfr.registry.core import MAX_PAGE, RegistryCore, check_page, iso, new_id
from openlfr.registry.db import RegistryDb
from openlfr.registry.deployments import DeploymentsMixin, snapshot_fingerprint
from openlfr.registry.exceptions import Conflict, NotFound
from openlfr.registry.models import (
    ImagePublic,
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
from openlfr.registry.reembedding import ReembeddingMixin
from openlfr.registry.references import ReferencesMixin, RescoreReport
from openlfr.registry.settings import RegistrySettings
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.watchlist.store import VectorStore

__all__ = ["MAX_PAGE", "Registry", "RescoreReport", "snapshot_fingerprint"]

logger = logging.getLogger(__name__)


class Registry(ReembeddingMixin, ReferencesMixin, DeploymentsMixin, RegistryCore):
    """Watchlists, subjects, reference images and deployments; the match stage's deployment gate.

    Args:
        db: the registry's database (the caller opens and closes it).
        store: the vector store the match stage searches (the caller opens and closes it).
        analyzer: the live pipeline's face analyzer (same models, same settings), for enrolment.
        audit: the hash-chained audit log every change is written to.
        settings: floors, horizons and limits.
        model_version: the embedding model deployments match with
            (``openlfr.models.build.model_version(model_dir, EMBEDDER.name)``).
        cohort: the background cohort (``Cohort.load(settings.cohort)``), embedded by that
            model. Its normaliser (``registry.norm``) is the one the match stage must use.
        clock: wall clock in Unix seconds (injectable for tests).

    Raises:
        CohortError: the cohort was embedded by another model (naming ``OPENLFR_REGISTRY_COHORT``).
        BackendUnavailable: the vector store cannot be reached to re-score references.
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
        cohort: Cohort,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(db=db, store=store, analyzer=analyzer, audit=audit, settings=settings,
                         model_version=model_version, cohort=cohort, clock=clock)
        try:
            self._init_reembedding()
            #: What the start-up re-scoring did (nothing when every reference had this cohort's statistics).
            self.rescored = self.rescore_references()
            self.recalibrate_deployments()
            self._refresh_gate()
        except BaseException:
            self._flusher.shutdown(wait=False)
            raise
        logger.info('registry ready cohort="%s" model_version="%s"', self.cohort_id, model_version)

    # -- watchlists --------------------------------------------------------------------------

    def create_watchlist(self, body: WatchlistCreate, *, actor: str) -> WatchlistPublic:
        """Create a watchlist.

        Raises:
            Conflict: the id is taken.
        """
        watchlist_id = body.id or new_id("wl")
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
        return self._watchlist_public(row, self._pending_reembedding())

    def list_watchlists(self, *, limit: int = 100, offset: int = 0) -> WatchlistPage:
        """Watchlists by id."""
        check_page(limit, offset)
        rows = self.db.all(
            "SELECT w.*, (SELECT COUNT(*) FROM subjects s WHERE s.watchlist_id = w.id) AS subject_count "
            "FROM watchlists w ORDER BY w.id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = self.db.one("SELECT COUNT(*) AS n FROM watchlists")
        pending = self._pending_reembedding()
        return WatchlistPage(
            items=[self._watchlist_public(r, pending) for r in rows], total=int(total["n"]) if total else 0,
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

    def set_watchlist_suspended(self, watchlist_id: str, *, suspended: bool, actor: str) -> WatchlistPublic:
        """Suspend a whole watchlist (no deployment searches its subjects) or resume it.

        Audited (``watchlist.suspend`` / ``watchlist.resume``) when it changes anything; asking
        for the state it is in changes nothing and records nothing. The subjects keep their own
        status, so resuming the watchlist brings back exactly the subjects that were searchable
        before. The deployment gate the match stage asks is rebuilt before the answer.

        Raises:
            NotFound: no such watchlist.
        """
        now = self._clock()
        with self._change() as tx:
            row = self._watchlist_row(tx.conn, watchlist_id)
            if row is None:
                raise NotFound("watchlist", watchlist_id)
            changed = (row["suspended_ts"] is not None) != suspended
            if changed:
                tx.conn.execute(
                    "UPDATE watchlists SET suspended_ts = ?, suspended_by = ?, updated_ts = ? WHERE id = ?",
                    (now if suspended else None, actor if suspended else None, now, watchlist_id),
                )
                searched_by = [
                    r["id"] for r in tx.conn.execute(
                        "SELECT d.id FROM deployments d JOIN deployment_watchlists w ON w.deployment_id = d.id "
                        "WHERE w.watchlist_id = ? AND d.status = 'active' AND d.end_ts > ? ORDER BY d.id",
                        (watchlist_id, now),
                    )
                ]
                self._audit(
                    actor, "watchlist.suspend" if suspended else "watchlist.resume", f"watchlist/{watchlist_id}",
                    {"before": {"suspended": not suspended}, "after": {"suspended": suspended},
                     "active_deployments": searched_by},
                )
        if changed:
            self._refresh_gate()
            logger.info('watchlist %s watchlist_id="%s" actor="%s"', "suspended" if suspended else "resumed",
                        watchlist_id, actor)
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
        subject_id = body.id or new_id("s")
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
                           "legal_basis": body.legal_basis, "expires_at": iso(expires_ts), "status": body.status}},
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
        check_page(limit, offset)
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
                    diff["expires_at"] = {"before": iso(expiry["before"]), "after": iso(expiry["after"])}
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
                            "status": row["status"], "expires_at": iso(row["expires_ts"])}},
            )
        logger.info('subject deleted subject_id="%s" images="%d" actor="%s"', subject_id, len(images), actor)

    # -- lifecycle ---------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Whether the database and the vector store answer. Watchlists awaiting re-embedding
        are named in the reason but do not make the service unready: its API must stay
        reachable to start the re-embedding, and the gate already withholds their deployments."""
        ok, reason = self.db.ready()
        if not ok:
            return ok, reason
        ok, reason = self.store.ready()
        pending = self._pending_reembedding() if ok else {}
        if pending:
            listed = ", ".join(f"{w} ({n} subjects)" for w, n in pending.items())
            return ok, f"{reason}; reembedding_needed into {self.model_version}: {listed} (POST /v1/reembed)"
        return ok, reason

    def close(self) -> None:
        """Stop a running re-embedding after its current subject, write the pending activity
        counts and stop the background writer (not the db or store)."""
        self._stop_reembed()
        with self._activity_lock:
            self._closed = True
        self._flusher.shutdown(wait=True)
        self.flush_activity()

    # -- public records -------------------------------------------------------------------------

    @staticmethod
    def _watchlist_public(row: sqlite3.Row, pending: dict[str, int]) -> WatchlistPublic:
        return WatchlistPublic(
            status="reembedding_needed" if row["id"] in pending else "ready",
            subjects_to_reembed=pending.get(row["id"], 0),
            id=row["id"], name=row["name"], description=row["description"], created_by=row["created_by"],
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
            subject_count=int(row["subject_count"]),
            suspended=row["suspended_ts"] is not None,
            suspended_at=to_datetime(row["suspended_ts"]) if row["suspended_ts"] is not None else None,
            suspended_by=row["suspended_by"],
        )

    def _subject_public(self, row: sqlite3.Row, images: list[ImagePublic]) -> SubjectPublic:
        return SubjectPublic(
            id=row["id"], watchlist_id=row["watchlist_id"], display_name=row["display_name"],
            category=row["category"], reason=row["reason"], legal_basis=row["legal_basis"], added_by=row["added_by"],
            expires_at=to_datetime(row["expires_ts"]), expired=row["expires_ts"] <= self._clock(),
            status=row["status"], images=images,
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
        )

