"""What every part of an evaluation run shares: its choices, the usable-image value, and helpers.

``EvaluationConfig`` and ``Sample`` sit here, below :mod:`openlfr.evaluation.run` and its parts
(``run_pairs``, ``run_gallery``, ``run_groups``), because every part reads them; ``run``
re-exports both. The helpers turn figures into ``metrics.json`` values (``rate_key``,
``clean_json``, ``point_json``) and thin curves for plotting (``thin_curve``). Nothing here
imports a ``run*`` module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from openlfr.evaluation import groups as groups_mod
from openlfr.evaluation import metrics as met

#: Points kept of a curve for plotting.
MAX_CURVE_POINTS = 400


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationConfig:
    """The choices of one evaluation run.

    Attributes:
        gallery_size: identities enrolled in the 1:N gallery; None for half of those with
            more than ``enrol_images`` usable images.
        enrolled: explicit gallery identities (overrides ``gallery_size`` and the draw).
        enrol_images: reference images per enrolled identity.
        fmr_targets: 1:1 FMR targets of ``fnmr_at_fmr``.
        fpir_targets: 1:N FPIR targets of ``fnir_at_fpir``.
        target_fpir: the FPIR the calibrated threshold is for.
        watchlist_size: the deployment's watchlist size the threshold is for (None: the
            evaluation gallery's size).
        prevalence: assumed share of searched faces that are on the watchlist.
        group_fmr: the overall FMR whose threshold the per-group 1:1 figures are read at.
        group_threshold: a score to read the per-group 1:1 figures at instead (e.g. a
            deployment's threshold).
        seed: seed of every draw (gallery, sweep, impostor sample, bootstrap).
        track_length: images per synthetic track.
        min_votes: votes a track needs to match (the match stage's ``min_votes``).
        n_boot: bootstrap resamples per interval.
        apply_enrolment_policy: references must pass the registry's enrolment checks
            (``ReferencePolicy``); otherwise those checks are only counted.
        min_group_identities: groups with fewer identities are warned about.
    """

    gallery_size: int | None = None
    enrolled: tuple[str, ...] | None = None
    enrol_images: int = 1
    fmr_targets: tuple[float, ...] = (1e-3, 1e-4)
    fpir_targets: tuple[float, ...] = (0.01, 0.001, 1 / 6000)
    target_fpir: float = 1 / 6000
    watchlist_size: int | None = None
    prevalence: float = 1e-4
    group_fmr: float = 1e-3
    group_threshold: float | None = None
    seed: int = 0
    track_length: int = 5
    min_votes: int = 3
    n_boot: int = 1000
    apply_enrolment_policy: bool = False
    min_group_identities: int = groups_mod.MIN_IDENTITIES

    def __post_init__(self) -> None:
        for name in ("fmr_targets", "fpir_targets"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name}: at least one target is needed")
            for value in values:
                met.check_rate(value, name=name)
        met.check_rate(self.target_fpir, name="target_fpir")
        met.check_rate(self.group_fmr, name="group_fmr")
        if self.group_threshold is not None:
            met.check_threshold(self.group_threshold, name="group_threshold")
        if not 0.0 < self.prevalence < 1.0:
            raise ValueError(f"prevalence must be in (0, 1), got {self.prevalence!r}")
        for name in ("enrol_images", "track_length", "min_votes", "n_boot", "min_group_identities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("gallery_size", "watchlist_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if self.min_votes > self.track_length:
            raise ValueError(f"min_votes ({self.min_votes}) cannot exceed track_length ({self.track_length})")


@dataclass(frozen=True, slots=True)
class Sample:
    """One usable image: its largest face's embedding and what the enrolment checks say of it."""

    key: str
    identity: str
    sha256: str
    embedding: np.ndarray
    quality: float
    refusal: str | None


def rate_key(rate: float) -> str:
    """The JSON key of a target rate: its short decimal (``"0.01"``, ``"0.0001"``, ``"0.2"``), or
    ``"1/6000"`` for a reciprocal whose decimal does not end (1/6000 = 0.000166...)."""
    rate = float(rate)
    if len(repr(rate)) <= 8:
        return f"{rate:g}"
    inverse = 1.0 / rate
    if abs(inverse - round(inverse)) < 1e-6 * inverse:
        return f"1/{int(round(inverse))}"
    return f"{rate:.4g}"


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def clean_json(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean_json(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite(value)
    return value


def thin_curve(x: np.ndarray, y: np.ndarray, *, max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a curve, evenly spread in log(x), ends kept (for plotting)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size <= max_points:
        return x, y
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    positions = np.unique(np.concatenate([
        [0, x.size - 1],
        np.searchsorted(x, np.geomspace(max(x[x > 0].min(initial=1e-12), 1e-12), max(x.max(), 1e-12), max_points)),
    ]).clip(0, x.size - 1))
    return x[positions], y[positions]


def point_json(point: Any) -> dict[str, Any]:
    """A figure's dataclass (an operating point) as a JSON-ready mapping."""
    return clean_json(asdict(point))
