"""Alert records, their two-person review, per-deployment tallies and retention, in SQLite.

Review states::

    pending ──confirm (reviewer A)──▶ awaiting_second ──confirm (reviewer B ≠ A)──▶ confirmed
       │                                   │
       └──reject (reason)──▶ rejected ◀────┘──reject (reason, any reviewer but A)

``confirmed`` is the only actionable state; ``confirmed`` and ``rejected`` are final. Every step
is kept (reviewer, decision, reason or note, time) with its alert.

Tallies per deployment (alerts, confirmed, rejected, awaiting_second) live in their own table and
change in the same transaction as the alert or the review that moves them, so they stay exact
and survive the retention purges that delete the records they count.

Retention is measured from the face's capture time (``capture_ts``): the probe and reference crops
and the scene crop go after ``crop_retention_s``, the whole record with its review steps after
``record_retention_s``. An alert already older than the record retention when it arrives is not
kept (it was kept and purged before, or would be purged at once), so a replay of the alerts
topic cannot count an alert twice; one older than the crop retention is kept without its crops.
Deleted content is overwritten on disk (``secure_delete``) and the write-ahead log is truncated
after a purge, so purged crops do not linger in the file.

One connection serves every thread, behind a lock: the Kafka loop thread adds alerts while the
HTTP threads read and review.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from openlfr.messages.models import Alert
from openlfr.review.exceptions import AlertNotFound, InvalidCursor, InvalidReview, ReviewConflict
from openlfr.review.records import (
    DECISIONS,
    STATUSES,
    AlertPage,
    AlertRecord,
    AlertSummary,
    Chips,
    Decision,
    PurgeResult,
    ReviewOutcome,
    ReviewStep,
    Status,
    Tallies,
)

logger = logging.getLogger(__name__)

#: Longest reason (of a reject) or note (of a confirm), in characters.
MAX_REASON_CHARS = 2000
#: Longest reviewer name (the token holder's name, at most 64 in ``openlfr.api.auth``).
MAX_REVIEWER_CHARS = 128
#: The tallies key of alerts that carry no deployment id (not a legal id, so it cannot clash).
NO_DEPLOYMENT = "(none)"
#: Most records one list call returns.
MAX_PAGE = 500

DAY_S = 86400.0
DEFAULT_CROP_RETENTION_S = 31 * DAY_S
DEFAULT_RECORD_RETENTION_S = 365 * DAY_S

#: 2: the probe's scene crop (``scene_jpeg``), added to a version-1 file in place.
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id            TEXT PRIMARY KEY,
    deployment_id       TEXT,
    camera_id           TEXT NOT NULL,
    frame_id            TEXT NOT NULL,
    trace_id            TEXT NOT NULL,
    track_id            TEXT NOT NULL,
    subject_id          TEXT NOT NULL,
    watchlist_id        TEXT NOT NULL,
    capture_ts          REAL NOT NULL,
    alert_ts            REAL NOT NULL,
    received_ts         REAL NOT NULL,
    score               REAL NOT NULL,
    margin              REAL NOT NULL,
    threshold           REAL NOT NULL,
    reference_image_id  TEXT,
    embedder_model      TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'awaiting_second', 'confirmed', 'rejected')),
    status_ts           REAL NOT NULL,
    probe_chip_jpeg     BLOB,
    reference_chip_jpeg BLOB,
    had_reference       INTEGER NOT NULL,
    crops_purged_ts     REAL,
    scene_jpeg          BLOB
);
CREATE INDEX IF NOT EXISTS alerts_by_capture ON alerts (capture_ts DESC, alert_id DESC);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, capture_ts DESC);
CREATE INDEX IF NOT EXISTS alerts_by_deployment ON alerts (deployment_id, capture_ts DESC);
CREATE INDEX IF NOT EXISTS alerts_by_camera ON alerts (camera_id, capture_ts DESC);
CREATE TABLE IF NOT EXISTS reviews (
    alert_id  TEXT NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
    step      INTEGER NOT NULL CHECK (step IN (1, 2)),
    reviewer  TEXT NOT NULL,
    decision  TEXT NOT NULL CHECK (decision IN ('confirm', 'reject')),
    reason    TEXT,
    ts        REAL NOT NULL,
    PRIMARY KEY (alert_id, step)
);
CREATE TABLE IF NOT EXISTS tallies (
    deployment      TEXT PRIMARY KEY,
    alerts          INTEGER NOT NULL DEFAULT 0,
    confirmed       INTEGER NOT NULL DEFAULT 0,
    rejected        INTEGER NOT NULL DEFAULT 0,
    awaiting_second INTEGER NOT NULL DEFAULT 0
);
"""

_ALERT_COLUMNS = (
    "alert_id, deployment_id, camera_id, frame_id, trace_id, track_id, subject_id, watchlist_id, capture_ts, "
    "alert_ts, received_ts, score, margin, threshold, reference_image_id, embedder_model, status, status_ts, "
    "probe_chip_jpeg IS NOT NULL, reference_chip_jpeg IS NOT NULL, had_reference, crops_purged_ts, "
    "scene_jpeg IS NOT NULL"
)


def _encode_cursor(capture_ts: float, alert_id: str) -> str:
    return base64.urlsafe_b64encode(f"{capture_ts!r}|{alert_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts_text, alert_id = raw.split("|", 1)
        ts = float(ts_text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(f"cursor {cursor!r} is not one this API handed out") from exc
    if not math.isfinite(ts) or not alert_id:
        raise InvalidCursor(f"cursor {cursor!r} is not one this API handed out")
    return ts, alert_id


class ReviewStore:
    """Alert records and their review, in one SQLite file (or ``":memory:"``).

    Args:
        path: the database file (created with its folder), or ``":memory:"`` for tests.
        crop_retention_s: probe and reference crops are deleted this long after capture.
        record_retention_s: whole records (and their review steps) are deleted this long after
            capture; at least ``crop_retention_s``.
        clock: wall time (epoch seconds), for receipt and review times and ``purge``'s default.

    Raises:
        ValueError: bad retention periods, or a database made by a newer version.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        crop_retention_s: float = DEFAULT_CROP_RETENTION_S,
        record_retention_s: float = DEFAULT_RECORD_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(crop_retention_s) and crop_retention_s > 0):
            raise ValueError(f"ReviewStore.crop_retention_s: expected a positive number, got {crop_retention_s}")
        if not (math.isfinite(record_retention_s) and record_retention_s >= crop_retention_s):
            raise ValueError(
                f"ReviewStore.record_retention_s: expected >= crop_retention_s ({crop_retention_s}), "
                f"got {record_retention_s}"
            )
        self.path = str(path)
        self.crop_retention_s = float(crop_retention_s)
        self.record_retention_s = float(record_retention_s)
        self._clock = clock
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            self._setup()
        except Exception:
            self._conn.close()
            raise
        logger.info(
            'review store opened path="%s" crop_retention_s="%g" record_retention_s="%g"',
            self.path, self.crop_retention_s, self.record_retention_s,
        )

    def _setup(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a review, once answered, survives a power cut
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")  # purged crops are overwritten, not left in free pages
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise ValueError(
                f"review store {self.path}: schema version {version} is newer than this code's {_SCHEMA_VERSION}"
            )
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
        if "scene_jpeg" not in columns:  # a version-1 file
            conn.execute("ALTER TABLE alerts ADD COLUMN scene_jpeg BLOB")
            logger.info('review store upgraded path="%s" from_version="%d" to_version="%d"', self.path, version, 2)
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database (later calls raise ``sqlite3.ProgrammingError``)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; rolled back on any error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- alerts ---------------------------------------------------------------------------

    def add_alert(self, alert: Alert) -> bool:
        """Keep an alert (record, both crops and the scene crop) as ``pending``; True if it is new.

        Idempotent by ``alert_id``: a replayed alert changes nothing and returns False. An alert
        captured longer ago than the record retention is not kept (False); one older than the
        crop retention is kept without its crops.
        """
        now = self._clock()
        age = now - alert.capture_ts
        if age > self.record_retention_s:
            logger.warning(
                'alert not kept: older than the record retention alert_id="%s" age_s="%.0f"', alert.alert_id, age
            )
            return False
        keep_crops = age <= self.crop_retention_s
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO alerts (alert_id, deployment_id, camera_id, frame_id, trace_id, track_id, subject_id, "
                "watchlist_id, capture_ts, alert_ts, received_ts, score, margin, threshold, reference_image_id, "
                "embedder_model, status, status_ts, probe_chip_jpeg, reference_chip_jpeg, had_reference, "
                "crops_purged_ts, scene_jpeg) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id) DO NOTHING",
                (
                    alert.alert_id, alert.deployment_id, alert.camera_id, alert.frame_id, alert.trace_id,
                    alert.track_id, alert.subject_id, alert.watchlist_id, alert.capture_ts, alert.alert_ts, now,
                    alert.score, alert.margin, alert.threshold, alert.reference_image_id, alert.embedder_model, now,
                    alert.probe_chip_jpeg if keep_crops else None,
                    alert.reference_chip_jpeg if keep_crops else None,
                    alert.reference_chip_jpeg is not None,
                    None if keep_crops else now,
                    alert.scene_jpeg if keep_crops else None,
                ),
            )
            new = cur.rowcount == 1
            if new:
                conn.execute(
                    "INSERT INTO tallies (deployment, alerts) VALUES (?, 1) "
                    "ON CONFLICT (deployment) DO UPDATE SET alerts = alerts + 1",
                    (alert.deployment_id or NO_DEPLOYMENT,),
                )
        if new:
            logger.info(
                'alert stored alert_id="%s" deployment_id="%s" camera_id="%s"',
                alert.alert_id, alert.deployment_id, alert.camera_id,
            )
        return new

    def get(self, alert_id: str) -> AlertRecord:
        """The record of an alert with its review steps.

        Raises:
            AlertNotFound: no such record.
        """
        with self._lock:
            return self._get_locked(alert_id)

    def _get_locked(self, alert_id: str) -> AlertRecord:
        row = self._conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        return self._records([row])[0]

    def _records(self, rows: Sequence[tuple]) -> list[AlertRecord]:
        """Records of alert rows, each with its review steps (one query for all)."""
        ids = [row[0] for row in rows]
        steps: dict[str, list[ReviewStep]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for alert_id, step, reviewer, decision, reason, ts in self._conn.execute(
                f"SELECT alert_id, step, reviewer, decision, reason, ts FROM reviews WHERE alert_id IN ({marks}) "
                "ORDER BY alert_id, step",
                chunk,
            ):
                steps[alert_id].append(ReviewStep(step, reviewer, decision, reason, ts))
        return [
            AlertRecord(
                alert_id=r[0], deployment_id=r[1], camera_id=r[2], frame_id=r[3], trace_id=r[4], track_id=r[5],
                subject_id=r[6], watchlist_id=r[7], capture_ts=r[8], alert_ts=r[9], received_ts=r[10],
                score=r[11], margin=r[12], threshold=r[13], reference_image_id=r[14], embedder_model=r[15],
                status=r[16], status_ts=r[17], has_probe=bool(r[18]), has_reference=bool(r[19]),
                had_reference=bool(r[20]), crops_purged_ts=r[21], reviews=tuple(steps[r[0]]), has_scene=bool(r[22]),
            )
            for r in rows
        ]

    def list_alerts(
        self,
        *,
        status: Status | None = None,
        deployment_id: str | None = None,
        camera_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        needs_review_by: str | None = None,
    ) -> AlertPage:
        """Records newest first (by capture time), filtered.

        Args:
            status, deployment_id, camera_id: keep only these.
            needs_review_by: keep only alerts this reviewer may review now: pending ones, and
                those awaiting the second review whose first review someone else made.
            since, until: capture time from ``since`` (inclusive) to ``until`` (exclusive).
            limit: records per page, 1 to ``MAX_PAGE``.
            cursor: ``next_cursor`` of the page before.

        Raises:
            ValueError: a bad limit, status or window.
            InvalidCursor: a cursor this store did not hand out.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit: expected 1 to {MAX_PAGE}, got {limit}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: expected one of {list(STATUSES)}, got {status!r}")
        if since is not None and until is not None and since >= until:
            raise ValueError(f"since ({since}) must be before until ({until})")
        where, args = self._filters(
            status=status, deployment_id=deployment_id, camera_id=camera_id, needs_review_by=needs_review_by
        )
        if since is not None:
            where.append("capture_ts >= ?")
            args.append(since)
        if until is not None:
            where.append("capture_ts < ?")
            args.append(until)
        if cursor is not None:
            ts, last_id = _decode_cursor(cursor)
            where.append("(capture_ts < ? OR (capture_ts = ? AND alert_id < ?))")
            args += [ts, ts, last_id]
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY capture_ts DESC, alert_id DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
            records = self._records(rows[:limit])
        more = len(rows) > limit
        next_cursor = _encode_cursor(records[-1].capture_ts, records[-1].alert_id) if more else None
        return AlertPage(records=tuple(records), next_cursor=next_cursor)

    @staticmethod
    def _filters(
        *,
        status: Status | None = None,
        deployment_id: str | None = None,
        camera_id: str | None = None,
        needs_review_by: str | None = None,
    ) -> tuple[list[str], list[object]]:
        """SQL conditions (joined by AND) and their arguments for the list and summary filters."""
        where: list[str] = []
        args: list[object] = []
        for column, value in (("status", status), ("deployment_id", deployment_id), ("camera_id", camera_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if needs_review_by is not None:
            # The same rule as review(): anyone may make the first step, only someone else the second.
            where.append(
                "(status = 'pending' OR (status = 'awaiting_second' AND NOT EXISTS (SELECT 1 FROM reviews r "
                "WHERE r.alert_id = alerts.alert_id AND r.step = 1 AND r.reviewer = ?)))"
            )
            args.append(needs_review_by.strip())
        return where, args

    def summary(
        self,
        *,
        deployment_id: str | None = None,
        camera_id: str | None = None,
        reviewer: str | None = None,
    ) -> AlertSummary:
        """Counts per status of the kept records (filtered by deployment and camera), how many
        ``reviewer`` may review now, and the camera and deployment ids there are to filter by."""
        where, args = self._filters(deployment_id=deployment_id, camera_id=camera_id)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            rows = self._conn.execute(f"SELECT status, COUNT(*) FROM alerts{clause} GROUP BY status", args).fetchall()
            needs_review = 0
            if reviewer is not None:
                mine, mine_args = self._filters(
                    deployment_id=deployment_id, camera_id=camera_id, needs_review_by=reviewer
                )
                needs_review = self._conn.execute(
                    "SELECT COUNT(*) FROM alerts WHERE " + " AND ".join(mine), mine_args
                ).fetchone()[0]
            cameras = tuple(r[0] for r in self._conn.execute("SELECT DISTINCT camera_id FROM alerts ORDER BY 1"))
            deployments = tuple(r[0] for r in self._conn.execute(
                "SELECT DISTINCT deployment_id FROM alerts WHERE deployment_id IS NOT NULL ORDER BY 1"
            ))
        statuses: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        statuses.update({status: n for status, n in rows})
        return AlertSummary(statuses=statuses, needs_review=needs_review, cameras=cameras, deployments=deployments)

    def chips(self, alert_id: str) -> Chips:
        """The crops of an alert, the scene crop included (None where not kept).

        Raises:
            AlertNotFound: no such record.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT probe_chip_jpeg, reference_chip_jpeg, had_reference, crops_purged_ts, scene_jpeg FROM alerts "
                "WHERE alert_id = ?",
                (alert_id,),
            ).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        return Chips(probe=row[0], reference=row[1], had_reference=bool(row[2]), crops_purged_ts=row[3],
                     scene=row[4])

    # -- review ---------------------------------------------------------------------------

    def review(
        self,
        alert_id: str,
        *,
        reviewer: str,
        decision: Decision,
        reason: str | None = None,
        expected_step: int | None = None,
        before_commit: Callable[[ReviewOutcome], None] | None = None,
    ) -> ReviewOutcome:
        """Record one review step and move the alert's status.

        Args:
            alert_id: the alert.
            reviewer: who reviews (the token holder's name).
            decision: ``confirm`` or ``reject``.
            reason: required (non-blank) for a reject; an optional note for a confirm.
            expected_step: when given, the step (1 or 2) the caller believes it makes; a
                different one is a conflict (the alert changed since the caller loaded it).
            before_commit: called with the outcome inside the transaction; if it raises, the
                review is rolled back (the API writes the audit record here, so a review that
                could not be audited did not happen).

        Raises:
            InvalidReview: bad decision, blank reviewer, a reject without a reason, a reason
                over ``MAX_REASON_CHARS``.
            AlertNotFound: no such record.
            ReviewConflict: already final; the first reviewer again; a stale ``expected_step``;
                a confirm after the crops were deleted.
        """
        reviewer = reviewer.strip()
        if not reviewer or len(reviewer) > MAX_REVIEWER_CHARS:
            raise InvalidReview(f"reviewer: expected 1 to {MAX_REVIEWER_CHARS} characters, got {len(reviewer)}")
        if decision not in DECISIONS:
            raise InvalidReview(f"decision: expected one of {list(DECISIONS)}, got {decision!r}")
        reason = reason.strip() if reason is not None else None
        reason = reason or None
        if decision == "reject" and reason is None:
            raise InvalidReview("a reject needs a reason: say why the alert is wrong")
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise InvalidReview(f"reason: at most {MAX_REASON_CHARS} characters, got {len(reason)}")
        if expected_step is not None and expected_step not in (1, 2):
            raise InvalidReview(f"step: expected 1 or 2, got {expected_step}")
        now = self._clock()
        with self._tx() as conn:
            before = self._get_locked(alert_id)
            if before.final:
                last = before.reviews[-1] if before.reviews else None
                by = f" by {last.reviewer}" if last else ""
                raise ReviewConflict(
                    "final",
                    f"alert {alert_id} is already {before.status}{by}; a final decision is not reviewed again",
                )
            step_no = 1 if before.status == "pending" else 2
            if expected_step is not None and expected_step != step_no:
                raise ReviewConflict(
                    "stale_step",
                    f"this would be review step {step_no}, not step {expected_step}: alert {alert_id} changed "
                    f"since you loaded it (it is now {before.status}); reload it and review again",
                )
            if step_no == 2 and before.reviews[0].reviewer == reviewer:
                raise ReviewConflict(
                    "same_reviewer",
                    f"you ({reviewer}) already made the first review of alert {alert_id}; "
                    "the second review must be made by a different reviewer",
                )
            if decision == "confirm" and before.crops_purged_ts is not None:
                raise ReviewConflict(
                    "crops_purged",
                    f"the face crops of alert {alert_id} were deleted under the crop retention period; "
                    "it can no longer be confirmed (it can still be rejected)",
                )
            if decision == "reject":
                after: Status = "rejected"
            else:
                after = "awaiting_second" if step_no == 1 else "confirmed"
            conn.execute(
                "INSERT INTO reviews (alert_id, step, reviewer, decision, reason, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, step_no, reviewer, decision, reason, now),
            )
            conn.execute("UPDATE alerts SET status = ?, status_ts = ? WHERE alert_id = ?", (after, now, alert_id))
            changes = {
                ("pending", "awaiting_second"): "awaiting_second = awaiting_second + 1",
                ("pending", "rejected"): "rejected = rejected + 1",
                ("awaiting_second", "confirmed"): "awaiting_second = awaiting_second - 1, confirmed = confirmed + 1",
                ("awaiting_second", "rejected"): "awaiting_second = awaiting_second - 1, rejected = rejected + 1",
            }[(before.status, after)]
            conn.execute(
                f"UPDATE tallies SET {changes} WHERE deployment = ?", (before.deployment_id or NO_DEPLOYMENT,)
            )
            outcome = ReviewOutcome(
                step=ReviewStep(step_no, reviewer, decision, reason, now),
                record=self._get_locked(alert_id),
                previous_status=before.status,
            )
            if before_commit is not None:
                before_commit(outcome)
        logger.info(
            'alert reviewed alert_id="%s" step="%d" decision="%s" status="%s" reviewer="%s"',
            alert_id, step_no, decision, after, reviewer,
        )
        return outcome

    # -- tallies --------------------------------------------------------------------------

    def tallies(self, deployment_id: str | None) -> Tallies | None:
        """The counts of one deployment (None: alerts without one), or None if it has no alert."""
        key = deployment_id or NO_DEPLOYMENT
        with self._lock:
            row = self._conn.execute(
                "SELECT deployment, alerts, confirmed, rejected, awaiting_second FROM tallies WHERE deployment = ?",
                (key,),
            ).fetchone()
        return Tallies(*row) if row is not None else None

    def all_tallies(self) -> list[Tallies]:
        """The counts of every deployment that has had an alert, by deployment id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT deployment, alerts, confirmed, rejected, awaiting_second FROM tallies ORDER BY deployment"
            ).fetchall()
        return [Tallies(*row) for row in rows]

    # -- retention ------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> PurgeResult:
        """Delete crops (probe, reference and scene) older than the crop retention and records
        older than the record retention (by capture time); the tallies are not touched."""
        now = self._clock() if now is None else now
        crop_cutoff = now - self.crop_retention_s
        record_cutoff = now - self.record_retention_s
        with self._tx() as conn:
            crops = conn.execute(
                "UPDATE alerts SET probe_chip_jpeg = NULL, reference_chip_jpeg = NULL, scene_jpeg = NULL, "
                "crops_purged_ts = ? "
                "WHERE capture_ts < ? AND crops_purged_ts IS NULL",
                (now, crop_cutoff),
            ).rowcount
            records = conn.execute("DELETE FROM alerts WHERE capture_ts < ?", (record_cutoff,)).rowcount
        if crops or records:
            with self._lock:
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            logger.info('review store purged crops="%d" records="%d"', crops, records)
        return PurgeResult(crops=crops, records=records, crop_cutoff_ts=crop_cutoff, record_cutoff_ts=record_cutoff)
