"""Ingest's view of the active deployments: publish frames only of cameras that one covers.

The match stage is the authority (it asks the registry per frame). Ingest gating saves the
rest of the pipeline from decoding, detecting and embedding faces of cameras that no
deployment authorises, so outside a deployment the faces of passers-by are not even put on a
topic. ``DeploymentWatcher`` polls the registry API (``GET /v1/deployments?status=active``)
every ``poll_s`` seconds in a thread. It fails closed: when the registry has not answered for
``stale_after_s``, no camera is covered until it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from openlfr.registry.client import RegistryClient
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Window:
    """One active deployment as ingest needs it."""

    deployment_id: str
    camera_ids: frozenset[str]
    start_ts: float
    end_ts: float

    def covers(self, camera_id: str, ts: float) -> bool:
        return camera_id in self.camera_ids and self.start_ts <= ts < self.end_ts


class DeploymentWatcher:
    """Keeps the active deployments' windows fresh from the registry API.

    Args:
        fetch: returns the active windows (raises ``RegistryUnreachable`` or ``RegistryApiError``).
        poll_s: seconds between polls.
        stale_after_s: without a successful poll for this long, nothing is covered.
        clock: monotonic clock (for staleness; windows are in wall time).
    """

    def __init__(
        self,
        fetch: Callable[[], list[Window]],
        *,
        poll_s: float = 5.0,
        stale_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_s <= 0 or stale_after_s < poll_s:
            raise ValueError(f"DeploymentWatcher: need 0 < poll_s <= stale_after_s, got {poll_s}, {stale_after_s}")
        self._fetch = fetch
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: list[Window] = []
        self._fresh_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_registry(cls, client: RegistryClient, **kwargs: object) -> DeploymentWatcher:
        """A watcher over the registry API's active deployments."""

        def fetch() -> list[Window]:
            windows, offset = [], 0
            while True:
                page = client.list_deployments(status="active", limit=100, offset=offset)
                windows += [
                    Window(d.id, frozenset(d.camera_ids), d.start_at.timestamp(), d.end_at.timestamp())
                    for d in page.items
                ]
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    return windows

        return cls(fetch, **kwargs)  # type: ignore[arg-type]

    def refresh(self) -> bool:
        """Poll once; whether it succeeded (a failure keeps the last windows until stale)."""
        try:
            windows = self._fetch()
        except (RegistryUnreachable, RegistryApiError) as exc:
            logger.warning('deployments poll failed error="%s"', exc)
            return False
        with self._lock:
            changed = {w.deployment_id for w in windows} != {w.deployment_id for w in self._windows}
            self._windows = windows
            self._fresh_at = self._clock()
        if changed:
            logger.info('active deployments now="%s"', ",".join(sorted(w.deployment_id for w in windows)) or "-")
        return True

    def covers(self, camera_id: str, ts: float) -> bool:
        """Whether an active deployment covers ``camera_id`` at wall time ``ts`` (False when stale)."""
        with self._lock:
            if self._fresh_at is None or self._clock() - self._fresh_at > self.stale_after_s:
                return False
            return any(w.covers(camera_id, ts) for w in self._windows)

    def start(self) -> None:
        """Poll once now, then every ``poll_s`` in a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="deployment-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 5)
