"""The deployment gate the match stage asks for every frame, and the activity counts it reports.

The registry keeps a per-camera index of its active deployments' windows (``GateWindow``),
rebuilt after every deployment change (``_refresh_gate``), so ``active_for`` answers from
memory without touching the database. A suspended watchlist (``set_watchlist_suspended``) is left out of
each deployment's ``watchlist_ids``, so the match stage does not search it; a deployment whose
every watchlist is suspended is left out of the index. A deployment whose watchlists await
re-embedding into the running embedder stays in the index but is withheld: the gate answers None for it, and
counts each such answer (``withheld_lookups``). ``record_activity`` adds the faces and tracks
the match stage saw under a deployment; the counts are written by a background thread at
most every ``activity_flush_s`` seconds. Together these are the registry's side of
:class:`~openlfr.pipeline.deployments.DeploymentGate`; authorising and changing deployments
is :mod:`openlfr.registry.deployments`'s.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from openlfr.pipeline.deployments import ActiveDeployment
from openlfr.registry.core import GateWindow, RegistryCore

logger = logging.getLogger(__name__)


class DeploymentGateMixin(RegistryCore):
    """The deployment gate and the activity counts (part of ``Registry``, through ``DeploymentsMixin``)."""

    def active_for(self, camera_id: str, ts: float) -> ActiveDeployment | None:
        """The deployment covering ``camera_id`` at ``ts``: active, camera listed, start <= ts < end."""
        for window in self._gate.get(camera_id, ()):
            if window.start_ts <= ts < window.end_ts:
                if window.withheld is not None:
                    self._count_withheld(window.deployment.deployment_id, window.withheld)
                    return None
                return window.deployment
        return None

    def _count_withheld(self, deployment_id: str, reason: str) -> None:
        """Count a gate answer withheld from a deployment (``withheld_lookups``; logged at its first)."""
        with self._activity_lock:
            n = self.withheld_lookups.get(deployment_id, 0)
            self.withheld_lookups[deployment_id] = n + 1
        if n == 0:
            logger.warning('deployment withheld from matching deployment_id="%s" reason="%s"', deployment_id, reason)

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

    def _refresh_gate(self) -> None:
        """Rebuild the per-camera index of active deployments (after every deployment change).

        Under the registry's lock, so two changes' refreshes cannot land out of order.
        """
        with self._lock:
            self._gate = self._gate_index()

    def _gate_index(self) -> dict[str, tuple[GateWindow, ...]]:
        floor = self.settings.threshold_floor
        rows = self.db.all("SELECT * FROM deployments WHERE status = 'active'")
        pending = self._pending_reembedding()
        suspended = {r["id"] for r in self.db.all("SELECT id FROM watchlists WHERE suspended_ts IS NOT NULL")}
        withheld: dict[str, str] = {}
        index: dict[str, list[GateWindow]] = {}
        for row in rows:
            searched = [w for w in self._watchlists_of(row["id"]) if w not in suspended]
            if not searched:
                # Every watchlist it searches is suspended: nothing to search, so no deployment
                # covers its cameras (faces there are not searched, tracked or kept).
                logger.info('deployment searches nothing: every watchlist of it is suspended deployment_id="%s"',
                            row["id"])
                continue
            waiting = [w for w in self._watchlists_of(row["id"]) if w in pending]
            if waiting and row["end_ts"] > self._clock():
                withheld[row["id"]] = (
                    f"watchlists {waiting} await re-embedding into {self.model_version} "
                    f"({sum(pending[w] for w in waiting)} subjects not moved; POST /v1/reembed)"
                )
                logger.warning('deployment does not match until re-embedding completes deployment_id="%s" '
                               'watchlists="%s"', row["id"], ",".join(waiting))
            threshold = float(row["threshold"])
            if threshold < floor:  # the floor was raised after the deployment was authorised
                logger.warning(
                    'deployment threshold under the floor, raised deployment_id="%s" threshold="%g" floor="%g"',
                    row["id"], threshold, floor,
                )
                threshold = floor
            norm_threshold = None
            if row["threshold_mode"] == "per_subject":
                norm_threshold = float(row["norm_threshold"])
                if row["cohort"] != self.cohort_id:  # re-calibrated at start; a row that was not is logged
                    logger.error(
                        'deployment calibrated on another cohort deployment_id="%s" cohort="%s" loaded="%s"',
                        row["id"], row["cohort"], self.cohort_id,
                    )
            active = ActiveDeployment(
                deployment_id=row["id"],
                watchlist_ids=tuple(searched),
                threshold=threshold,
                snapshot_ts=float(row["snapshot_ts"]),
                norm_threshold=norm_threshold,
            )
            window = GateWindow(float(row["start_ts"]), float(row["end_ts"]), active, withheld.get(row["id"]))
            for camera_id in self._cameras(None, row["id"]):
                index.setdefault(camera_id, []).append(window)
        self._withheld = withheld
        return {camera: tuple(sorted(windows, key=lambda w: -w.start_ts)) for camera, windows in index.items()}

    # -- row readers (the gate's and the deployments') ----------------------------------------

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
