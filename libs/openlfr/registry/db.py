"""The registry's SQLite database: watchlists, subjects, reference images, deployments, stats.

One connection, guarded by a re-entrant lock, serves every thread (the service is one process
and its writes are few); a file database runs in WAL mode with ``synchronous=FULL`` and foreign
keys on. ``schema_version`` records the layout (one row per version applied); an older file is
migrated in place at open, in one transaction, and a file written by a newer layout is refused.

What is kept of a reference image is its aligned 150x150 chip (JPEG for reviewers, PNG so its
vector can be rebuilt exactly) and its quality figures; never the original file, never a
vector (those live in the vector store only), and nothing about people who are not enrolled.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openlfr.registry.exceptions import RegistryDbError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4

_SCHEMA_V1 = """
CREATE TABLE watchlists (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ts  REAL NOT NULL,
    updated_ts  REAL NOT NULL
);

CREATE TABLE subjects (
    id           TEXT PRIMARY KEY,
    watchlist_id TEXT NOT NULL REFERENCES watchlists(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    category     TEXT NOT NULL CHECK (category IN
                     ('wanted', 'suspect', 'missing_person', 'vulnerable_person', 'risk_to_self_or_others')),
    reason       TEXT NOT NULL,
    legal_basis  TEXT NOT NULL,
    added_by     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    expires_ts   REAL NOT NULL,
    created_ts   REAL NOT NULL,
    updated_ts   REAL NOT NULL
);
CREATE INDEX subjects_by_watchlist ON subjects (watchlist_id, id);

CREATE TABLE reference_images (
    subject_id     TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    source         TEXT NOT NULL,
    added_by       TEXT NOT NULL,
    added_ts       REAL NOT NULL,
    chip_jpeg      BLOB NOT NULL,
    chip_png       BLOB NOT NULL,
    face_px        REAL NOT NULL,
    inter_eye_px   REAL NOT NULL,
    blur           REAL NOT NULL,
    yaw            REAL NOT NULL,
    roll_deg       REAL NOT NULL,
    detector_score REAL NOT NULL,
    quality_score  REAL NOT NULL,
    PRIMARY KEY (subject_id, id)
);
CREATE INDEX reference_images_by_id ON reference_images (id);

CREATE TABLE deployments (
    id                   TEXT PRIMARY KEY,
    purpose              TEXT NOT NULL,
    authorised_by        TEXT NOT NULL,
    created_by           TEXT NOT NULL,
    start_ts             REAL NOT NULL,
    end_ts               REAL NOT NULL,
    threshold            REAL NOT NULL CHECK (threshold > 0 AND threshold <= 1),
    status               TEXT NOT NULL CHECK (status IN ('active', 'ended')),
    snapshot_ts          REAL NOT NULL,
    snapshot_subjects    INTEGER NOT NULL,
    snapshot_images      INTEGER NOT NULL,
    snapshot_fingerprint TEXT NOT NULL,
    model_version        TEXT NOT NULL,
    created_ts           REAL NOT NULL,
    updated_ts           REAL NOT NULL,
    ended_ts             REAL,
    ended_by             TEXT,
    end_reason           TEXT,
    CHECK (end_ts > start_ts)
);

CREATE TABLE deployment_cameras (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    camera_id     TEXT NOT NULL,
    PRIMARY KEY (deployment_id, camera_id)
);
CREATE INDEX deployment_cameras_by_camera ON deployment_cameras (camera_id);

-- No foreign key to watchlists: an ended deployment goes on naming a watchlist deleted later.
CREATE TABLE deployment_watchlists (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    watchlist_id  TEXT NOT NULL,
    PRIMARY KEY (deployment_id, watchlist_id)
);
CREATE INDEX deployment_watchlists_by_watchlist ON deployment_watchlists (watchlist_id);

CREATE TABLE deployment_stats (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    faces         INTEGER NOT NULL DEFAULT 0 CHECK (faces >= 0),
    tracks        INTEGER NOT NULL DEFAULT 0 CHECK (tracks >= 0),
    updated_ts    REAL
);
"""


#: Version 2: per-subject thresholds. Each reference's statistics against the background cohort
#: (and which cohort); each deployment's threshold mode, target and operating point. Rows of
#: version 1 keep working as they did: their references have no statistics until the registry
#: re-scores them at start, and their deployments are ``global`` (one raw threshold, as before)
#: with no operating point.
_SCHEMA_V2 = """
ALTER TABLE reference_images ADD COLUMN norm_mu REAL;
ALTER TABLE reference_images ADD COLUMN norm_sd REAL CHECK (norm_sd IS NULL OR norm_sd > 0);
ALTER TABLE reference_images ADD COLUMN norm_cohort TEXT;
CREATE INDEX reference_images_by_cohort ON reference_images (norm_cohort);

ALTER TABLE deployments ADD COLUMN threshold_mode TEXT NOT NULL DEFAULT 'global'
    CHECK (threshold_mode IN ('per_subject', 'global'));
ALTER TABLE deployments ADD COLUMN target_fpir REAL
    CHECK (target_fpir IS NULL OR (target_fpir > 0 AND target_fpir < 1));
ALTER TABLE deployments ADD COLUMN accept_fpir REAL
    CHECK (accept_fpir IS NULL OR (accept_fpir > 0 AND accept_fpir < 1));
ALTER TABLE deployments ADD COLUMN norm_threshold REAL CHECK (threshold_mode = 'global' OR norm_threshold IS NOT NULL);
ALTER TABLE deployments ADD COLUMN cohort TEXT;
ALTER TABLE deployments ADD COLUMN point_watchlist_size INTEGER;
ALTER TABLE deployments ADD COLUMN per_comparison_fmr REAL;
ALTER TABLE deployments ADD COLUMN expected_fpir REAL;
ALTER TABLE deployments ADD COLUMN expected_fnmr REAL;
ALTER TABLE deployments ADD COLUMN point_method TEXT;
ALTER TABLE deployments ADD COLUMN point_ts REAL
"""

#: Version 3: which embedder each reference's vector is of (``name@sha12``), so the registry knows
#: when the running embedder's store lacks references it holds (``openlfr.registry.reembedding``).
#: Rows of version 2 get NULL here, and the registry sets them to the embedder it runs at its
#: first start after the migration: the model the store they are in was pinned to.
_SCHEMA_V3 = """
ALTER TABLE reference_images ADD COLUMN model_version TEXT;
CREATE INDEX reference_images_by_model ON reference_images (model_version)
"""

#: A watchlist suspended as a whole (by whom, since when): deployments over it do not search it
#: until it is resumed. Rows of earlier versions are active (NULL).
_SCHEMA_V4 = """
ALTER TABLE watchlists ADD COLUMN suspended_ts REAL;
ALTER TABLE watchlists ADD COLUMN suspended_by TEXT
"""

#: The statements that bring a database from the previous version to each version.
_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4}


class RegistryDb:
    """The registry's SQLite database, safe to share between threads.

    Args:
        path: the database file (its folder is created), or ``":memory:"``.

    Raises:
        RegistryDbError: the file cannot be opened, WAL cannot be turned on, or it was written
            by a newer schema than this code knows.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.in_memory = self.path == ":memory:"
        if not self.in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit at the driver level; transactions are explicit (BEGIN IMMEDIATE).
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise RegistryDbError(f"cannot open the registry database {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        logger.info('registry database open path="%s" schema_version="%d"', self.path, SCHEMA_VERSION)

    def _configure(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            raise RegistryDbError(f"{self.path}: this SQLite build cannot enforce foreign keys")
        if not self.in_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RegistryDbError(f"{self.path}: cannot use WAL journal mode (got {mode!r})")
            # Every committed change (and so every audited one) survives a power cut.
            conn.execute("PRAGMA synchronous = FULL")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_ts REAL NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0]) if row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise RegistryDbError(
                    f"{self.path}: schema version {current} is newer than this code's {SCHEMA_VERSION}; "
                    "run a newer openlfr"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_ts) VALUES (?, ?)", (version, time.time())
                )
                logger.info(
                    'registry schema %s path="%s" version="%d"', "created" if version == 1 else "migrated",
                    self.path, version,
                )

    @property
    def schema_version(self) -> int:
        """The layout version the database holds."""
        row = self.one("SELECT MAX(version) AS v FROM schema_version")
        return int(row["v"]) if row is not None else 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the connection for one write transaction; commit on success, roll back on error.

        Re-entrant: a nested call joins the outer transaction.
        """
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of a query."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query, or None."""
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def ready(self) -> tuple[bool, str]:
        """Whether the database answers."""
        try:
            self.one("SELECT 1")
        except sqlite3.Error as exc:
            return False, f"registry database {self.path}: {exc}"
        return True, "ok"

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._conn.close()
