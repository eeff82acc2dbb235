"""Where and when matching may run: the deployment gate the match stage asks for every frame.

A deployment authorises matching for a purpose, on named cameras, between a start and an end
time, against a frozen snapshot of named watchlists, at a threshold. Outside every active
deployment a frame's faces are not searched, not tracked and not kept (the match stage drops
them as ``no_deployment``). Time is the frame's ``capture_ts`` (event time), so a replay
decides as the live run did.

``DeploymentGate`` is the role; the registry (``openlfr.registry``) is the real one, and
``StaticGate`` serves a single command-line run (``openlfr run``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openlfr.watchlist.store import score_to_distance


@dataclass(frozen=True, slots=True)
class ActiveDeployment:
    """What the match stage needs of the deployment covering a frame.

    Attributes:
        deployment_id: its id (travels in every Match and Alert).
        watchlist_ids: the watchlists searched.
        threshold: the score (0..1) a face must reach; ``max_distance`` is its distance.
        snapshot_ts: references enrolled after this are not searched (the frozen snapshot).
        norm_threshold: the normalised score (``openlfr.cohort``) a face must also reach against
            its subject's cohort statistics: every subject's own threshold, calibrated to the
            deployment's target FPIR at its watchlist size. None: ``threshold`` alone decides.
            With it, ``threshold`` is the floor no subject's threshold goes below.
    """

    deployment_id: str
    watchlist_ids: tuple[str, ...]
    threshold: float
    snapshot_ts: float
    norm_threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.deployment_id:
            raise ValueError("ActiveDeployment.deployment_id: must not be empty")
        if not self.watchlist_ids:
            raise ValueError("ActiveDeployment.watchlist_ids: name at least one watchlist")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"ActiveDeployment.threshold: expected a score in (0, 1], got {self.threshold}")
        if not math.isfinite(self.snapshot_ts):
            raise ValueError(f"ActiveDeployment.snapshot_ts: expected a finite time, got {self.snapshot_ts}")
        if self.norm_threshold is not None and not math.isfinite(self.norm_threshold):
            raise ValueError(f"ActiveDeployment.norm_threshold: expected a finite score, got {self.norm_threshold}")

    @property
    def max_distance(self) -> float:
        """The threshold as a Euclidean descriptor distance."""
        return score_to_distance(self.threshold)


class DeploymentGate(Protocol):
    """Answers which deployment, if any, covers a camera at an event time."""

    def active_for(self, camera_id: str, ts: float) -> ActiveDeployment | None:
        """The deployment covering ``camera_id`` at ``ts`` (Unix seconds), or None."""
        ...

    def reference_chip(self, subject_id: str, reference_image_id: str) -> bytes | None:
        """The JPEG chip of a watchlist reference image (shown beside the probe), if kept."""
        ...

    def record_activity(self, deployment_id: str, *, faces: int, tracks: int) -> None:
        """Count faces searched and tracks started under a deployment (for its report)."""
        ...


@dataclass
class StaticGate:
    """One deployment covering every camera at every time (a single command-line run), or
    only ``camera_ids`` between ``start_ts`` and ``end_ts`` when given."""

    deployment: ActiveDeployment
    camera_ids: Sequence[str] | None = None
    start_ts: float = -math.inf
    end_ts: float = math.inf
    references: dict[tuple[str, str], bytes] = field(default_factory=dict)
    faces: int = 0
    tracks: int = 0

    def active_for(self, camera_id: str, ts: float) -> ActiveDeployment | None:
        if self.camera_ids is not None and camera_id not in self.camera_ids:
            return None
        if not self.start_ts <= ts < self.end_ts:
            return None
        return self.deployment

    def reference_chip(self, subject_id: str, reference_image_id: str) -> bytes | None:
        return self.references.get((subject_id, reference_image_id))

    def record_activity(self, deployment_id: str, *, faces: int, tracks: int) -> None:
        self.faces += faces
        self.tracks += tracks
