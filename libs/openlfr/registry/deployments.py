"""The registry's deployments: authorisation, the frozen snapshot, the threshold and what it is
expected to give. The deployment gate the match stage asks for every frame, rebuilt here after
every change, is :mod:`openlfr.registry.deployment_gate`'s.

A deployment authorises matching for a purpose, on named cameras, in a window, against a
snapshot of named watchlists taken at authorisation. Its threshold is, by default, per subject
(``threshold_mode="per_subject"``): the registry reads from the background cohort's held-out
pairs the normalised threshold that meets the deployment's ``target_fpir`` (default 1/6000
false alerts per stranger) on a watchlist of the snapshot's size (``openlfr.cohort.policy``),
stores it with the cohort's id and the expected false-alert and miss rates, and the match stage
requires every match to reach it on the score normalised by the subject's and the probe's
cohort statistics; ``threshold`` is then the raw floor no subject's threshold goes below. A
larger snapshot gets a stricter threshold: every enrolled person is one more chance for a
stranger to be mistaken for someone.

``threshold_mode="global"`` names one raw threshold for everyone instead; it is refused (422,
naming ``threshold`` and the numbers) when the cohort expects it to alert on more strangers
than ``target_fpir`` at the snapshot's size, unless ``accept_fpir`` covers the expected rate.
Deployments authorised before per-subject thresholds are ``global`` with no operating point
and keep matching as they did.

A target (or global threshold) change re-computes the operating point and is audited as
``deployment.threshold``. At start, active deployments whose operating point was read from
another cohort than the loaded one are re-calibrated on it (audited, ``cohort_changed``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import JsonValue

from openlfr.cohort.exceptions import ThresholdRefused
from openlfr.cohort.policy import (
    DEFAULT_TARGET_FPIR,
    PASSERS_BY,
    OperatingPoint,
    check_threshold,
    global_threshold_point,
    operating_point,
)
from openlfr.registry.core import DAY_S, STARTUP_ACTOR, check_page, iso, new_id
from openlfr.registry.deployment_gate import DeploymentGateMixin
from openlfr.registry.exceptions import Conflict, Invalid, NotFound
from openlfr.registry.models import (
    DeploymentCreate,
    DeploymentPage,
    DeploymentPublic,
    DeploymentStats,
    DeploymentStatus,
    DeploymentUpdate,
    OperatingPointPublic,
    Snapshot,
    ThresholdMode,
    to_datetime,
)

logger = logging.getLogger(__name__)

_POINT_COLUMNS = ("norm_threshold", "cohort", "point_watchlist_size", "per_comparison_fmr", "expected_fpir",
                  "expected_fnmr", "point_method", "point_ts")


def snapshot_fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    """SHA-256 (hex) of the sorted ``subject_id<TAB>reference_image_id`` lines joined by newlines."""
    text = "\n".join(f"{subject}\t{image}" for subject, image in sorted(pairs))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded up to ``digits`` significant digits (a rate to quote as enough)."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / step - 1e-9) * step


class DeploymentsMixin(DeploymentGateMixin):
    """Deployments, with the deployment gate they rebuild (part of :class:`~openlfr.registry.service.Registry`)."""

    # -- deployments -------------------------------------------------------------------------

    def create_deployment(self, body: DeploymentCreate, *, actor: str) -> DeploymentPublic:
        """Authorise matching, taking the watchlists' snapshot and calibrating the threshold now.

        Raises:
            Invalid: a watchlist that does not exist, a threshold under the floor, a global
                threshold the cohort expects above the target (and ``accept_fpir``), an end in
                the past.
            Conflict: the id is taken, or a camera is already covered by another active
                deployment in an overlapping window.
        """
        now = self._clock()
        start_ts, end_ts = body.start_at.timestamp(), body.end_at.timestamp()
        threshold = self.settings.threshold_floor if body.threshold is None else body.threshold
        self._check_threshold(threshold)
        if end_ts <= now:
            raise Invalid("end_at", f"{body.end_at.isoformat()} is in the past")
        if start_ts < now - self.settings.max_backdate_s:
            raise Invalid(
                "start_at",
                f"{body.start_at.isoformat()} is more than {self.settings.max_backdate_s:g} s in the past; "
                "a deployment cannot authorise matching retroactively",
            )
        self._check_length(start_ts, end_ts)
        if body.calibrated_for is not None and body.calibrated_for != self.model_version:
            raise Invalid(
                "calibrated_for",
                f"the threshold was calibrated for model {body.calibrated_for}; this registry matches with "
                f"{self.model_version}, whose scores mean something else: calibrate again with openlfr evaluate "
                "under this model, or use per-subject thresholds",
            )
        deployment_id = body.id or new_id("dep")
        with self._change() as tx:
            if tx.conn.execute("SELECT 1 FROM deployments WHERE id = ?", (deployment_id,)).fetchone() is not None:
                raise Conflict(f"deployment {deployment_id!r} already exists")
            for watchlist_id in body.watchlist_ids:
                if self._watchlist_row(tx.conn, watchlist_id) is None:
                    raise Invalid("watchlist_ids", f"watchlist {watchlist_id!r} does not exist")
            self._check_overlap(tx.conn, deployment_id, body.camera_ids, start_ts, end_ts, now)
            subjects, pairs = self._snapshot(tx.conn, body.watchlist_ids, now)
            fingerprint = snapshot_fingerprint(pairs)
            point = self._operating_point(
                mode=body.threshold_mode, threshold=threshold, subjects=subjects, target_fpir=body.target_fpir,
                accept_fpir=body.accept_fpir, field="threshold",
            )
            tx.conn.execute(
                "INSERT INTO deployments (id, purpose, authorised_by, created_by, start_ts, end_ts, threshold, status, "
                "snapshot_ts, snapshot_subjects, snapshot_images, snapshot_fingerprint, model_version, created_ts, "
                f"updated_ts, threshold_mode, target_fpir, accept_fpir, {', '.join(_POINT_COLUMNS)}) "  # noqa: S608
                f"VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                f"{', '.join('?' * len(_POINT_COLUMNS))})",
                (deployment_id, body.purpose, body.authorised_by, actor, start_ts, end_ts, threshold, now,
                 subjects, len(pairs), fingerprint, self.model_version, now, now, body.threshold_mode,
                 body.target_fpir, body.accept_fpir, *self._point_values(point, now)),
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
                           "camera_ids": list(body.camera_ids), "start_at": iso(start_ts), "end_at": iso(end_ts),
                           "watchlist_ids": list(body.watchlist_ids), "threshold_mode": body.threshold_mode,
                           "threshold": threshold, "target_fpir": body.target_fpir, "accept_fpir": body.accept_fpir,
                           "model_version": self.model_version},
                 "snapshot": {"snapshot_ts": now, "active_subjects": subjects, "reference_images": len(pairs),
                              "fingerprint": fingerprint},
                 "operating_point": self._point_record(point)},
            )
        self._check_store_snapshot(deployment_id, body.watchlist_ids, subjects, now)
        self._refresh_gate()
        logger.info(
            'deployment created deployment_id="%s" cameras="%d" watchlists="%d" subjects="%d" mode="%s" '
            'expected_fpir="%.3g" actor="%s"',
            deployment_id, len(body.camera_ids), len(body.watchlist_ids), subjects, body.threshold_mode,
            point.expected_fpir, actor,
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
        check_page(limit, offset)
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
        """Change a running deployment's purpose, end, cameras, threshold or target (its
        watchlists and snapshot are fixed). A threshold or target change is audited as
        ``deployment.threshold``; a new target (or a new global threshold) re-computes the
        operating point at the snapshot's size.

        Raises:
            NotFound: no such deployment.
            Conflict: it has ended, or a new camera or end overlaps another deployment.
            Invalid: a threshold under the floor, a global threshold the cohort expects above
                the target, ``accept_fpir`` on a per-subject deployment, an end before its
                start or in the past.
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
                        "end_at", f"{body.end_at.isoformat()} is not after start_at ({iso(row['start_ts'])})"
                    )
                if end_ts <= now:
                    raise Invalid("end_at", f"{body.end_at.isoformat()} is in the past; end the deployment instead")
                self._check_length(float(row["start_ts"]), end_ts)
            new_cameras = list(body.camera_ids) if body.camera_ids is not None else cameras
            self._check_overlap(tx.conn, deployment_id, new_cameras, float(row["start_ts"]), end_ts, now)
            changes: dict[str, JsonValue] = {}
            if body.purpose is not None and body.purpose != row["purpose"]:
                tx.conn.execute("UPDATE deployments SET purpose = ? WHERE id = ?", (body.purpose, deployment_id))
                changes["purpose"] = {"before": row["purpose"], "after": body.purpose}
            if end_ts != row["end_ts"]:
                tx.conn.execute("UPDATE deployments SET end_ts = ? WHERE id = ?", (end_ts, deployment_id))
                changes["end_at"] = {"before": iso(row["end_ts"]), "after": iso(end_ts)}
            if sorted(new_cameras) != sorted(cameras):
                tx.conn.execute("DELETE FROM deployment_cameras WHERE deployment_id = ?", (deployment_id,))
                tx.conn.executemany(
                    "INSERT INTO deployment_cameras (deployment_id, camera_id) VALUES (?, ?)",
                    [(deployment_id, c) for c in new_cameras],
                )
                changes["camera_ids"] = {"before": sorted(cameras), "after": sorted(new_cameras)}
            threshold_change = self._threshold_change(tx.conn, row, body, now)
            if changes or threshold_change:
                tx.conn.execute("UPDATE deployments SET updated_ts = ? WHERE id = ?", (now, deployment_id))
            target = f"deployment/{deployment_id}"
            if threshold_change:
                self._audit(actor, "deployment.threshold", target, threshold_change)
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
                raise Conflict(f"deployment {deployment_id!r} was already ended at {iso(row['ended_ts'])}")
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
                {"reason": reason, "scheduled_end_at": iso(row["end_ts"]),
                 "stats": {"faces": stats["faces"], "tracks": stats["tracks"]} if stats else None},
            )
        self._refresh_gate()
        logger.info('deployment ended deployment_id="%s" actor="%s"', deployment_id, actor)
        return self.get_deployment(deployment_id)

    def recalibrate_deployments(self, *, actor: str = STARTUP_ACTOR) -> list[str]:
        """Re-read the operating point of every running deployment calibrated on another cohort
        than the loaded one (a new cohort file), at its snapshot's size and target; each one
        audited as ``deployment.threshold`` (event ``cohort_changed``). A global threshold the
        new cohort expects above its accepted rate is kept (it was authorised) and logged.

        Returns:
            The ids of the deployments re-calibrated.
        """
        now = self._clock()
        rows = self.db.all(
            "SELECT * FROM deployments WHERE status = 'active' AND end_ts > ? AND cohort IS NOT NULL AND cohort != ? "
            "ORDER BY id",
            (now, self.cohort_id),
        )
        done: list[str] = []
        for row in rows:
            with self._change() as tx:
                mode: ThresholdMode = row["threshold_mode"]
                target = float(row["target_fpir"]) if row["target_fpir"] is not None else DEFAULT_TARGET_FPIR
                accept = float(row["accept_fpir"]) if row["accept_fpir"] is not None else None
                point = self._operating_point(
                    mode=mode, threshold=float(row["threshold"]), subjects=int(row["snapshot_subjects"]),
                    target_fpir=target, accept_fpir=accept, field="threshold", refuse=False,
                )
                if point.expected_fpir > (accept if accept is not None else target):
                    logger.warning(
                        'a running deployment\'s global threshold exceeds its accepted rate on the new cohort '
                        'deployment_id="%s" expected_fpir="%.3g" target_fpir="%.3g" accept_fpir="%s"',
                        row["id"], point.expected_fpir, target, accept,
                    )
                self._store_point(tx.conn, row["id"], point, now)
                tx.conn.execute("UPDATE deployments SET updated_ts = ? WHERE id = ?", (now, row["id"]))
                self._audit(
                    actor, "deployment.threshold", f"deployment/{row['id']}",
                    {"event": "cohort_changed", "threshold_mode": mode,
                     "cohort": {"before": row["cohort"], "after": self.cohort_id},
                     "operating_point": {"before": self._row_point_record(row), "after": self._point_record(point)}},
                )
            done.append(row["id"])
            logger.info(
                'deployment re-calibrated on the new cohort deployment_id="%s" cohort_before="%s" cohort="%s"',
                row["id"], row["cohort"], self.cohort_id,
            )
        if done:
            self._refresh_gate()
        return done

    # -- the threshold and its operating point ------------------------------------------------

    def _check_threshold(self, threshold: float) -> None:
        floor = self.settings.threshold_floor
        if not math.isfinite(threshold) or threshold < floor:
            raise Invalid(
                "threshold", f"{threshold:g} is below the floor of {floor:g} (OPENLFR_REGISTRY_THRESHOLD_FLOOR)"
            )

    def _operating_point(
        self, *, mode: ThresholdMode, threshold: float, subjects: int, target_fpir: float,
        accept_fpir: float | None, field: str, refuse: bool = True,
    ) -> OperatingPoint:
        """The operating point on a snapshot of ``subjects`` (at least 1: an empty snapshot alerts
        on no one, and is calibrated as a watchlist of one).

        Raises:
            Invalid: (``refuse``) a global threshold the cohort expects above ``target_fpir`` and
                ``accept_fpir``; the message names ``field`` and the numbers.
        """
        size = max(1, subjects)
        calibration = self.cohort.calibration
        if mode == "per_subject":
            return operating_point(calibration, watchlist_size=size, target_fpir=target_fpir)
        point = global_threshold_point(calibration, threshold=threshold, watchlist_size=size)
        if refuse:
            try:
                check_threshold(point, target_fpir=target_fpir, accept_fpir=accept_fpir, flag="threshold")
            except ThresholdRefused as exc:
                above = "" if accept_fpir is None else f" and above the accept_fpir {accept_fpir:.3g} named"
                remedy = (
                    f"or accept that rate explicitly with accept_fpir >= {_round_up(point.expected_fpir):.3g}"
                    if point.expected_fpir < 0.99
                    else "since it would alert on nearly everyone, no accept_fpir covers it"
                )
                raise Invalid(
                    field,
                    f"threshold {threshold:g} (threshold_mode global): on a watchlist of {size} the cohort "
                    f"{self.cohort_id} expects it to alert on {point.expected_fpir:.3%} of strangers "
                    f"({point.false_alerts_per_passers_by:.1f} per {PASSERS_BY:,} passers-by; per-comparison FMR "
                    f"{point.per_comparison_fmr:.2e}, {point.method}), above target_fpir {target_fpir:.3g}{above}. "
                    f"Use threshold_mode per_subject (thresholds calibrated to the target), raise threshold, {remedy}",
                ) from exc
        return point

    def _point_values(self, point: OperatingPoint, now: float) -> tuple[Any, ...]:
        """The values of ``_POINT_COLUMNS`` for an operating point read now."""
        return (point.threshold if point.kind == "per-subject" else None, self.cohort_id, point.watchlist_size,
                point.per_comparison_fmr, point.expected_fpir, point.expected_fnmr, point.method, now)

    def _store_point(self, conn: sqlite3.Connection, deployment_id: str, point: OperatingPoint, now: float) -> None:
        conn.execute(
            f"UPDATE deployments SET {', '.join(f'{c} = ?' for c in _POINT_COLUMNS)} WHERE id = ?",  # noqa: S608
            (*self._point_values(point, now), deployment_id),
        )

    def _point_record(self, point: OperatingPoint) -> dict[str, JsonValue]:
        """An operating point as the audit log keeps it."""
        return {
            "cohort": self.cohort_id, "watchlist_size": point.watchlist_size,
            "normalised_threshold": point.threshold if point.kind == "per-subject" else None,
            "per_comparison_fmr": point.per_comparison_fmr, "expected_fpir": point.expected_fpir,
            "expected_fnmr": point.expected_fnmr, "method": point.method,
        }

    @staticmethod
    def _row_point_record(row: sqlite3.Row) -> dict[str, JsonValue] | None:
        if row["cohort"] is None:
            return None
        return {
            "cohort": row["cohort"], "watchlist_size": row["point_watchlist_size"],
            "normalised_threshold": row["norm_threshold"], "per_comparison_fmr": row["per_comparison_fmr"],
            "expected_fpir": row["expected_fpir"], "expected_fnmr": row["expected_fnmr"],
            "method": row["point_method"],
        }

    def _threshold_change(
        self, conn: sqlite3.Connection, row: sqlite3.Row, body: DeploymentUpdate, now: float
    ) -> dict[str, JsonValue] | None:
        """Apply a new threshold, target or accepted rate (re-computing the operating point
        where it depends on them); the ``deployment.threshold`` record's details, or None when
        nothing changed."""
        mode: ThresholdMode = row["threshold_mode"]
        if body.accept_fpir is not None and mode != "global":
            raise Invalid(
                "accept_fpir", "applies to a global threshold only; per-subject thresholds always meet target_fpir"
            )
        before = {
            "threshold": float(row["threshold"]),
            "target_fpir": float(row["target_fpir"]) if row["target_fpir"] is not None else None,
            "accept_fpir": float(row["accept_fpir"]) if row["accept_fpir"] is not None else None,
        }
        after = dict(before)
        for name in ("threshold", "target_fpir", "accept_fpir"):
            value = getattr(body, name)
            if value is not None:
                after[name] = float(value)
        changed = [name for name in after if after[name] != before[name]]
        if not changed:
            return None
        target = after["target_fpir"] if after["target_fpir"] is not None else DEFAULT_TARGET_FPIR
        accept = after["accept_fpir"]
        if accept is not None and accept < target:
            raise Invalid(
                "accept_fpir", f"{accept:.3g} is below target_fpir {target:.3g}; it would accept nothing the target "
                "does not",
            )
        details: dict[str, JsonValue] = {name: {"before": before[name], "after": after[name]} for name in changed}
        details.update(threshold_mode=mode, floor=self.settings.threshold_floor)
        # A per-subject floor does not move the operating point; a target, or a global threshold, does.
        if "target_fpir" in changed or "accept_fpir" in changed or (mode == "global" and "threshold" in changed):
            field = next(n for n in ("threshold", "target_fpir", "accept_fpir") if n in changed)
            point = self._operating_point(
                mode=mode, threshold=float(after["threshold"]), subjects=int(row["snapshot_subjects"]),
                target_fpir=target, accept_fpir=accept, field=field,
            )
            self._store_point(conn, row["id"], point, now)
            details["operating_point"] = {"before": self._row_point_record(row), "after": self._point_record(point)}
            after["target_fpir"] = target
        conn.execute(
            "UPDATE deployments SET threshold = ?, target_fpir = ?, accept_fpir = ? WHERE id = ?",
            (after["threshold"], after["target_fpir"], after["accept_fpir"], row["id"]),
        )
        return details

    # -- snapshot, overlap ------------------------------------------------------------------------

    def _check_length(self, start_ts: float, end_ts: float) -> None:
        """Refuse a window longer than ``OPENLFR_REGISTRY_MAX_DEPLOYMENT_DAYS``."""
        days = self.settings.max_deployment_days
        if end_ts - start_ts > days * DAY_S:
            raise Invalid(
                "end_at",
                f"the deployment would run {(end_ts - start_ts) / DAY_S:.1f} days; the most is {days:g} "
                f"(OPENLFR_REGISTRY_MAX_DEPLOYMENT_DAYS): end it by {iso(start_ts + days * DAY_S)} and "
                "authorise a new deployment for the time after",
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
                f"{iso(clash['start_ts'])} to {iso(clash['end_ts'])}"
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

    # -- row readers --------------------------------------------------------------------------

    @staticmethod
    def _status(row: sqlite3.Row, now: float) -> Literal["active", "ended"]:
        return "ended" if row["status"] == "ended" or row["end_ts"] <= now else "active"

    @staticmethod
    def _operating_point_public(row: sqlite3.Row) -> OperatingPointPublic | None:
        if row["cohort"] is None:
            return None
        fpir = float(row["expected_fpir"])
        return OperatingPointPublic(
            cohort=row["cohort"],
            watchlist_size=int(row["point_watchlist_size"]),
            target_fpir=float(row["target_fpir"]),
            accept_fpir=float(row["accept_fpir"]) if row["accept_fpir"] is not None else None,
            normalised_threshold=float(row["norm_threshold"]) if row["norm_threshold"] is not None else None,
            per_comparison_fmr=float(row["per_comparison_fmr"]),
            expected_fpir=fpir,
            expected_false_alerts_per_10000=fpir * PASSERS_BY,
            expected_fnmr=float(row["expected_fnmr"]) if row["expected_fnmr"] is not None else None,
            method=row["point_method"],
            computed_at=to_datetime(row["point_ts"]),
        )

    def _deployment_public(self, row: sqlite3.Row) -> DeploymentPublic:
        stats = self.db.one("SELECT faces, tracks FROM deployment_stats WHERE deployment_id = ?", (row["id"],))
        return DeploymentPublic(
            id=row["id"], purpose=row["purpose"], authorised_by=row["authorised_by"], created_by=row["created_by"],
            camera_ids=self._cameras(None, row["id"]),
            start_at=to_datetime(row["start_ts"]), end_at=to_datetime(row["end_ts"]),
            watchlist_ids=self._watchlists_of(row["id"]), threshold_mode=row["threshold_mode"],
            threshold=float(row["threshold"]), operating_point=self._operating_point_public(row),
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
            matching=row["id"] not in self._withheld and self._status(row, self._clock()) == "active",
            not_matching_reason=self._withheld.get(row["id"]),
            created_at=to_datetime(row["created_ts"]), updated_at=to_datetime(row["updated_ts"]),
            ended_at=to_datetime(row["ended_ts"]) if row["ended_ts"] is not None else None,
            ended_by=row["ended_by"], end_reason=row["end_reason"],
        )
