"""Moving the registry's references to another embedder: which references are of which
embedder, what waits for re-embedding, and the re-embedding job.

Each reference records the embedder its vector is of (``reference_images.model_version``).
When the service starts with another embedder (``OPENLFR_EMBEDDER``), its store (a collection
of that model's own) lacks those references: the watchlists holding them report
``reembedding_needed`` and the deployment gate withholds every deployment over them, so
nothing matches against a partial watchlist. Nothing is re-embedded at start: an operator
starts it (``POST /v1/reembed``, audited with their name), and it runs in a background thread,
subject by subject, from the kept lossless chips through the running analyzer
(``openlfr.watchlist.reembed``), each subject one change (database and store in step). When it
completes the gate is rebuilt and deployments over complete watchlists match again. A subject
none of whose references could be moved is named (``lost_subjects``) and its references stay of
the old embedder, so its watchlist stays withheld until the operator deletes the subject or
enrols a new image and removes the old ones: nothing is dropped silently.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from openlfr.registry.core import STARTUP_ACTOR, RegistryCore
from openlfr.registry.exceptions import Conflict
from openlfr.registry.models import ReembedFailure, ReembedStatus, to_datetime

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    """The state of the current (or last) re-embedding, changed by its thread under the job lock."""

    state: str = "idle"
    started_by: str | None = None
    started_ts: float | None = None
    finished_ts: float | None = None
    total: int = 0
    done: int = 0
    moved: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    error: str | None = None


class ReembeddingMixin(RegistryCore):
    """References across embedders (part of :class:`~openlfr.registry.service.Registry`)."""

    def _init_reembedding(self) -> None:
        """Set up the job state and give references of unknown embedder the running one.

        References from before schema version 3 are in the store the service runs with (it is
        pinned to the running embedder), so they are that embedder's.
        """
        self._job = _Job()
        self._job_lock = threading.Lock()
        self._job_thread: threading.Thread | None = None
        self._job_stop = threading.Event()
        with self.db.transaction() as conn:
            n = conn.execute(
                "UPDATE reference_images SET model_version = ? WHERE model_version IS NULL", (self.model_version,)
            ).rowcount
        if n:
            logger.info('references given the running embedder references="%d" model_version="%s"',
                        n, self.model_version)
        pending = self._pending_reembedding()
        if pending:
            logger.warning(
                'watchlists need re-embedding into the running embedder; their deployments do not match until '
                'POST /v1/reembed completes model_version="%s" watchlists="%s"',
                self.model_version, ",".join(f"{w}:{n}" for w, n in pending.items()),
            )

    def reembedding_needed(self) -> dict[str, int]:
        """Watchlist id -> subjects with references not of the running embedder."""
        return self._pending_reembedding()

    def reembed_status(self) -> ReembedStatus:
        """The current or last re-embedding (``idle`` if none since start), and what waits now."""
        with self._job_lock:
            job = self._job
            return ReembedStatus(
                state=job.state,  # type: ignore[arg-type]
                model_version=self.model_version,
                started_by=job.started_by,
                started_at=to_datetime(job.started_ts) if job.started_ts is not None else None,
                finished_at=to_datetime(job.finished_ts) if job.finished_ts is not None else None,
                total=job.total, done=job.done, subjects_moved=list(job.moved),
                failed=[ReembedFailure(subject_id=s, reference_image_id=i, reason=r) for s, i, r in job.failed],
                lost_subjects=list(job.lost), error=job.error,
                watchlists_needing=self._pending_reembedding(),
            )

    def start_reembed(self, *, actor: str) -> ReembedStatus:
        """Start re-embedding every reference not of the running embedder, in a background thread.

        Audited (``watchlist.reembed``, event ``started``, with the counts to move).

        Raises:
            Conflict: a re-embedding is running.
        """
        with self._job_lock:
            if self._job.state == "running":
                raise Conflict(
                    f"a re-embedding is already running (started by {self._job.started_by}, "
                    f"{self._job.done} of {self._job.total} references done); follow it with GET /v1/reembed"
                )
            rows = self.db.all(
                "SELECT subject_id, COUNT(*) AS n FROM reference_images WHERE model_version != ? "
                "GROUP BY subject_id ORDER BY subject_id",
                (self.model_version,),
            )
            subjects = [(r["subject_id"], int(r["n"])) for r in rows]
            total = sum(n for _, n in subjects)
            pending = self._pending_reembedding()
            self._job = _Job(state="running", started_by=actor, started_ts=self._clock(), total=total)
            with self._lock:  # audit records are appended one change at a time
                self._audit(actor, "watchlist.reembed", "registry/reembed",
                            {"event": "started", "model_version": self.model_version, "references": total,
                             "subjects": len(subjects), "watchlists": dict(pending)})
            self._job_stop.clear()
            self._job_thread = threading.Thread(
                target=self._run_reembed, args=(subjects, actor), name="registry-reembed", daemon=True
            )
            self._job_thread.start()
        logger.info('re-embedding started actor="%s" model_version="%s" subjects="%d" references="%d"',
                    actor, self.model_version, len(subjects), total)
        return self.reembed_status()

    def wait_reembed(self, timeout: float | None = None) -> bool:
        """Wait for the running re-embedding to end; True when none runs (any more)."""
        thread = self._job_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _stop_reembed(self) -> None:
        """Stop the job after the subject it is on (at close) and wait for it."""
        self._job_stop.set()
        self.wait_reembed()

    def _run_reembed(self, subjects: list[tuple[str, int]], actor: str) -> None:
        job = self._job
        try:
            for subject_id, n in subjects:
                if self._job_stop.is_set():
                    raise RuntimeError("stopped: the registry closed")
                self._reembed_subject(subject_id, n, job)
            state, error = "completed", None
        except Exception as exc:
            logger.exception("re-embedding stopped")
            state, error = "failed", str(exc)
        self._refresh_gate()
        with self._job_lock:
            job.state, job.error, job.finished_ts = state, error, self._clock()
        try:
            with self._lock:
                self._audit(actor or STARTUP_ACTOR, "watchlist.reembed", "registry/reembed",
                            {"event": state, "model_version": self.model_version, "references": job.total,
                             "done": job.done, "subjects_moved": len(job.moved),
                             "references_failed": len(job.failed),
                             "failed_subjects": sorted({s for s, _, _ in job.failed}),
                             "lost_subjects": list(job.lost), "error": error})
        except Exception:
            logger.exception("cannot audit the end of the re-embedding")
        log = logger.info if state == "completed" and not job.failed else logger.warning
        log('re-embedding %s model_version="%s" moved="%d" failed="%d" lost="%d"',
            state, self.model_version, len(job.moved), len(job.failed), len(job.lost))

    def _reembed_subject(self, subject_id: str, n: int, job: _Job) -> None:
        """Move one subject's ``n`` references of other embedders, as one change; failures are recorded."""
        result = None
        try:
            with self._change() as tx:
                subject = tx.conn.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone()
                pending = tx.conn.execute(
                    "SELECT COUNT(*) AS n FROM reference_images WHERE subject_id = ? AND model_version != ?",
                    (subject_id, self.model_version),
                ).fetchone()
                if subject is not None and pending["n"]:  # else deleted or moved meanwhile
                    tx.touched.add(subject_id)
                    result = self._sync_subject_vectors(tx.conn, subject_id, move=True)
        except Exception as exc:
            logger.exception('cannot re-embed a subject subject_id="%s"', subject_id)
            with self._job_lock:
                job.failed.append((subject_id, "*", f"error: {exc}"))
                job.done += n
            return
        with self._job_lock:
            job.done += n
            if result is None:
                return
            job.failed.extend((subject_id, image_id, reason) for image_id, reason in result.failed)
            if not result.images:
                job.lost.append(subject_id)
                logger.warning('re-embedding lost subject subject_id="%s": no reference could be embedded', subject_id)
            if not result.failed:
                job.moved.append(subject_id)
