"""The review store's retention worker: a thread that purges crops and records on an interval
(``openlfr.review.store.ReviewStore.purge``) and writes each purge to the audit log."""

from __future__ import annotations

import logging
import math
import threading

from openlfr.audit.log import AuditLog
from openlfr.review.store import PurgeResult, ReviewStore

logger = logging.getLogger(__name__)


class RetentionWorker:
    """A daemon thread that runs ``store.purge()`` now and then every ``interval_s``.

    Each purge that deleted anything is written to the audit log (``alert.purge``) when one is
    given. A failed purge is logged with its traceback and retried at the next interval;
    :meth:`check` reports it to ``/readyz``.

    Args:
        store: the store to purge.
        interval_s: seconds between purges.
        audit: where purges are recorded, if anywhere.
        actor: the audit actor of the purges.
    """

    def __init__(
        self,
        store: ReviewStore,
        *,
        interval_s: float,
        audit: AuditLog | None = None,
        actor: str = "openlfr-review-retention",
    ) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"RetentionWorker.interval_s: expected a positive number, got {interval_s}")
        self.store = store
        self.interval_s = float(interval_s)
        self.audit = audit
        self.actor = actor
        self.runs = 0
        self.failures = 0
        self.last_result: PurgeResult | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openlfr-review-retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def run_once(self) -> PurgeResult | None:
        """One purge (and its audit record); None if it failed."""
        try:
            result = self.store.purge()
            if self.audit is not None and (result.crops or result.records):
                self.audit.append(
                    actor=self.actor,
                    action="alert.purge",
                    target=f"review-store:{self.store.path}",
                    details={
                        "crops": result.crops,
                        "records": result.records,
                        "crop_cutoff_ts": result.crop_cutoff_ts,
                        "record_cutoff_ts": result.record_cutoff_ts,
                        "crop_retention_s": self.store.crop_retention_s,
                        "record_retention_s": self.store.record_retention_s,
                    },
                )
        except Exception as exc:  # noqa: BLE001 - logged, counted, shown on /readyz, retried
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception('retention purge failed error="%s"', exc)
            return None
        self.runs += 1
        self.last_result = result
        self.last_error = None
        return result

    def check(self) -> tuple[bool, str]:
        """A readiness check: fails while the last purge failed or the thread is gone."""
        if not self._thread.is_alive() and not self._stop.is_set():
            return False, "the retention thread stopped"
        if self.last_error is not None:
            return False, f"the last retention purge failed: {self.last_error}"
        return True, "ok"

    def is_alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (a purge under way finishes first)."""
        self._stop.set()
        self._thread.join(timeout_s)
