"""What every part of the registry shares: its collaborators, the unit of change, the vector
store kept in step with the database, and the helpers of its operations.

``RegistryCore`` holds the database, the vector store, the analyzer, the audit log, the
settings and the background cohort, and runs every change as one unit (``_change``): the
database rows are written in a transaction, the vector store is changed, the audit record is
appended, and only then is the transaction committed. If any step fails the transaction is
rolled back and the subjects whose vectors were touched are rebuilt from the database, so the
store never searches what the database does not hold. (An audit record whose commit then fails
cannot be taken back; SQLite commits of a local file practically do not fail once the writes
succeeded.)

Reference vectors live only in the vector store. To rebuild one (the store's role has no
per-image delete or read) the subject's vectors are deleted and re-made from their kept chips:
every vector is a function of its lossless chip (``_sync_subject_vectors``), so the rebuilt
vectors are the enrolled ones. The subject is unsearchable for that moment. Every vector the registry writes
carries its statistics against the loaded cohort (``openlfr.cohort.norm``), which give the
subject a threshold of its own; the database records them and which cohort they came from.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import JsonValue

from openlfr.audit.log import Action, AuditLog
from openlfr.cohort.cohort import Cohort
from openlfr.cohort.norm import NormStats
from openlfr.models.manifest import builtin_manifest
from openlfr.pipeline.deployments import ActiveDeployment
from openlfr.registry.db import RegistryDb
from openlfr.registry.exceptions import Invalid, NotFound
from openlfr.registry.models import to_datetime
from openlfr.registry.settings import RegistrySettings
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.watchlist.reembed import mirrored_vectors
from openlfr.watchlist.references import TEMPLATE_REFERENCE_ID, subject_points, with_mirror
from openlfr.watchlist.store import EntryStatus, VectorStore, WatchlistEntry

logger = logging.getLogger(__name__)

#: The setting that names the cohort file (errors about the cohort name it).
COHORT_SETTING = "OPENLFR_REGISTRY_COHORT"
#: The actor of the changes the registry makes itself at start (re-scoring, re-calibration).
STARTUP_ACTOR = "registry (start-up)"
#: Most items one list call returns.
MAX_PAGE = 1000
DAY_S = 86_400.0


@dataclass(slots=True)
class SyncResult:
    """What ``RegistryCore._sync_subject_vectors`` wrote for one subject.

    Attributes:
        images: references in the store (the template not counted).
        failed: ``(reference image id, reason)`` of each reference not embedded.
    """

    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 (UTC)."""
    return to_datetime(ts).isoformat()


def new_id(prefix: str) -> str:
    """A fresh id ``<prefix>-<16 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def check_page(limit: int, offset: int) -> None:
    """Refuse a page outside 1..MAX_PAGE items or a negative offset (``Invalid``)."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit", f"expected 1..{MAX_PAGE}, got {limit}")
    if offset < 0:
        raise Invalid("offset", f"expected >= 0, got {offset}")


@dataclass(frozen=True, slots=True)
class GateWindow:
    """One active deployment as the gate sees it for one camera."""

    start_ts: float
    end_ts: float
    deployment: ActiveDeployment
    #: Why the gate does not give this deployment now (its watchlists await re-embedding), or None.
    withheld: str | None = None


@dataclass(slots=True)
class Tx:
    """One change in progress: its connection and the subjects whose vectors it touched."""

    conn: sqlite3.Connection
    touched: set[str] = field(default_factory=set)


class RegistryCore:
    """The registry's collaborators and the machinery its operations share.

    Args:
        db: the registry's database (the caller opens and closes it).
        store: the vector store the match stage searches (the caller opens and closes it).
        analyzer: the live pipeline's face analyzer (same models, same settings), for enrolment.
        audit: the hash-chained audit log every change is written to.
        settings: floors, horizons and limits.
        model_version: the embedding model deployments match with
            (``openlfr.models.build.model_version(model_dir, EMBEDDER.name)``).
        cohort: the background cohort (``OPENLFR_REGISTRY_COHORT``), embedded by that model:
            references are scored against it and deployments calibrated on it.
        clock: wall clock in Unix seconds (injectable for tests).

    Raises:
        ValueError: an empty model version.
        CohortError: the cohort was embedded by another model (the message names
            ``OPENLFR_REGISTRY_COHORT``).
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
        if not model_version:
            raise ValueError("Registry.model_version: must not be empty")
        cohort.check_model(model_version, embed_mirror=analyzer.embedder.mirror, setting=COHORT_SETTING)
        builtin = builtin_manifest(model_version)
        near = settings.near_duplicate_score or (builtin.near_duplicate_score if builtin is not None else None)
        if near is None:
            raise ValueError(
                f"OPENLFR_REGISTRY_NEAR_DUPLICATE_SCORE: required with the embedder {model_version} (no built-in "
                "value): the store score above which a new reference is a copy of another subject's photo; "
                "measure it with benchmarks/near_duplicates.py --embedder MANIFEST"
            )
        #: The store score above which a new reference is refused as a copy of another subject's.
        self.near_duplicate_score = near
        self.db = db
        self.store = store
        self.analyzer = analyzer
        self.audit = audit
        self.settings = settings
        self.model_version = model_version
        self.cohort = cohort
        #: The cohort's normaliser; the match stage is given this same one.
        self.norm = cohort.norm()
        self.policy = settings.policy()
        self._clock = clock
        self._lock = threading.RLock()  # one change at a time: database, store and audit in step
        self._analyze_lock = threading.Lock()  # one enrolment image analysed at a time (bounded memory)
        # The deployment gate and the activity counts (``openlfr.registry.deployment_gate``).
        self._gate: Mapping[str, tuple[GateWindow, ...]] = {}
        self._activity_lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._last_flush = time.monotonic()
        self._flush_scheduled = False
        self._closed = False
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-activity")
        #: Active deployments the gate withholds (deployment id -> why), set with the gate.
        self._withheld: dict[str, str] = {}
        #: Deployment id -> gate answers withheld from it since start (frames it did not match).
        self.withheld_lookups: dict[str, int] = {}

    @property
    def cohort_id(self) -> str:
        """The loaded cohort's id (``cohort@<fingerprint prefix>``)."""
        return self.norm.cohort_id

    # -- the unit of change --------------------------------------------------------------

    @contextmanager
    def _change(self) -> Iterator[Tx]:
        """One change: a transaction under the registry's lock; on failure, roll back and
        rebuild the touched subjects' vectors from the database."""
        with self._lock:
            tx: Tx | None = None
            try:
                with self.db.transaction() as conn:
                    tx = Tx(conn)
                    yield tx
            except BaseException:
                for subject_id in sorted(tx.touched if tx else ()):
                    self._repair(subject_id)
                raise
            if self._withheld:  # a change may complete a watchlist (a subject deleted, an image removed)
                self._refresh_gate()

    def _refresh_gate(self) -> None:
        """Rebuild the deployment gate (``openlfr.registry.deployment_gate`` does)."""

    def _pending_reembedding(self) -> dict[str, int]:
        """Watchlist id -> subjects with references of another embedder than the running one
        (not in the running embedder's store); empty when every reference is of it."""
        rows = self.db.all(
            "SELECT s.watchlist_id, COUNT(DISTINCT s.id) AS n FROM subjects s "
            "JOIN reference_images r ON r.subject_id = s.id WHERE r.model_version != ? "
            "GROUP BY s.watchlist_id ORDER BY s.watchlist_id",
            (self.model_version,),
        )
        return {r["watchlist_id"]: int(r["n"]) for r in rows}

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

    def _audit(self, actor: str, action: Action, target: str, details: dict[str, JsonValue]) -> None:
        self.audit.append(actor=actor, action=action, target=target, details=details, ts=self._clock())

    # -- the vector store in step with the database ---------------------------------------

    def _sync_subject_vectors(self, conn: sqlite3.Connection, subject_id: str, *, move: bool = False) -> SyncResult:
        """Make the store hold exactly the subject's references of the running embedder as ``conn``
        sees them, by the enrolment rules (``openlfr.watchlist.references``: each reference its
        chip's and its flipped chip's mean direction; with two or more, their template too), each
        point with its statistics against the loaded cohort (recorded in the database too).

        Every vector is a function of the kept chip (dlib's 150x150, padding 0.25): a chip the
        running embedder takes as it is is embedded directly, flipped and not; a chip of another
        shape (dlib's chip under another embedder) goes through the analyzer, which finds and aligns
        the face in it its own way, for it and its mirror image (as re-embedding does). So an
        enrolment and every later rebuild give the same vectors.

        Args:
            move: also take the references of other embedders (re-embedding,
                ``openlfr.registry.reembedding``); each one embedded is recorded as the running
                embedder's. Without it they are left out of the store.

        Returns:
            the references embedded, and those that failed (no face found in the kept chip; they
            stay as they were: out of the store and, when moving, of their old embedder).
        """
        subject = conn.execute(
            "SELECT watchlist_id, status, expires_ts FROM subjects WHERE id = ?", (subject_id,)
        ).fetchone()
        self.store.delete_subject(subject_id)
        if subject is None:
            return SyncResult()
        which = "" if move else " AND model_version = ?"
        rows = conn.execute(
            f"SELECT id, added_ts, chip_png FROM reference_images WHERE subject_id = ?{which} ORDER BY id",  # noqa: S608
            (subject_id,) if move else (subject_id, self.model_version),
        ).fetchall()
        if not rows:
            return SyncResult()
        vectors = self._chip_vectors([self._decode_chip(bytes(r["chip_png"])) for r in rows])
        result = SyncResult(failed=[(r["id"], "no face found in the kept chip") for r, v in zip(rows, vectors,
                                                                                               strict=True) if v is None])
        embedded = [(r, v) for r, v in zip(rows, vectors, strict=True) if v is not None]
        if not embedded:
            return result
        points = subject_points([(r["id"], v, float(r["added_ts"])) for r, v in embedded])
        mu, sd = self.norm.stats_arrays(np.stack([v for _, v, _ in points]))
        stats = [NormStats(mu=float(m), sd=float(s)) for m, s in zip(mu, sd, strict=True)]
        conn.executemany(
            "UPDATE reference_images SET model_version = ?, norm_mu = ?, norm_sd = ?, norm_cohort = ? "
            "WHERE subject_id = ? AND id = ?",
            [(self.model_version, s.mu, s.sd, self.cohort_id, subject_id, ref_id)
             for (ref_id, _, _), s in zip(points, stats, strict=True) if ref_id != TEMPLATE_REFERENCE_ID],
        )
        self.store.upsert([
            self._entry(subject_id, watchlist_id=subject["watchlist_id"], image_id=ref_id, vector=vector,
                        status=subject["status"], expires_ts=float(subject["expires_ts"]),
                        enrolled_ts=ts,  # the snapshots of running deployments still include it
                        stats=s)
            for (ref_id, vector, ts), s in zip(points, stats, strict=True)
        ])
        result.images = len(embedded)
        return result

    def _chip_vectors(self, chips: list[np.ndarray]) -> list[np.ndarray | None]:
        """The reference vector of each kept chip (see ``_sync_subject_vectors``); None where the
        analyzer finds no face in a chip of another shape than the embedder's."""
        side = self.analyzer.embedder.chip_size
        out: list[np.ndarray | None] = [None] * len(chips)
        direct = [i for i, c in enumerate(chips) if c.shape[:2] == (side, side)]
        other = [i for i, c in enumerate(chips) if c.shape[:2] != (side, side)]
        with self._analyze_lock:
            if direct and self.analyzer.embedder.mirror:  # it averages each chip with its flipped copy itself
                for i, vector in zip(direct, self.analyzer.embedder.embed(np.stack([chips[i] for i in direct])), strict=True):
                    out[i] = vector
            elif direct:
                views = [chips[i] for i in direct] + [np.ascontiguousarray(chips[i][:, ::-1]) for i in direct]
                embedded = self.analyzer.embedder.embed(np.stack(views))
                for k, i in enumerate(direct):
                    out[i] = with_mirror(embedded[k], embedded[len(direct) + k])
            if other:
                for i, vector in zip(other, mirrored_vectors([chips[i] for i in other], self.analyzer), strict=True):
                    out[i] = vector
        return out

    def _entry(
        self, subject_id: str, *, watchlist_id: str, image_id: str, vector: np.ndarray, status: EntryStatus,
        expires_ts: float, enrolled_ts: float, stats: NormStats,
    ) -> WatchlistEntry:
        """A store entry of one reference with its statistics against the loaded cohort, stamped with
        the model that made it (a store pinned to another refuses it)."""
        return WatchlistEntry(
            subject_id=subject_id, watchlist_id=watchlist_id, reference_image_id=image_id, vector=vector,
            status=status, expires_ts=expires_ts, enrolled_ts=enrolled_ts, norm=stats, norm_cohort=self.cohort_id,
            model_version=self.model_version,
        )

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

    # -- checks and row readers ------------------------------------------------------------

    def _check_expiry(self, expires_ts: float, now: float) -> float:
        if expires_ts <= now:
            raise Invalid("expires_at", f"{iso(expires_ts)} is not in the future")
        horizon = now + self.settings.max_expiry_days * DAY_S
        if expires_ts > horizon:
            raise Invalid(
                "expires_at",
                f"{iso(expires_ts)} is beyond the maximum horizon of {self.settings.max_expiry_days} days "
                f"(at the latest {iso(horizon)})",
            )
        return expires_ts

    def _watchlist_row(self, conn: sqlite3.Connection, watchlist_id: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM watchlists WHERE id = ?", (watchlist_id,)).fetchone()

    def _subject_row(self, subject_id: str, conn: sqlite3.Connection | None = None) -> sqlite3.Row:
        sql, params = "SELECT * FROM subjects WHERE id = ?", (subject_id,)
        row = conn.execute(sql, params).fetchone() if conn is not None else self.db.one(sql, params)
        if row is None:
            raise NotFound("subject", subject_id)
        return row
