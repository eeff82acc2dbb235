"""The vector store's role: reference vectors of watchlist subjects, searched by distance.

One small interface (``VectorStore``) with one backend module per store (``qdrant_store``).
Distances are Euclidean between dlib descriptors; ``distance_to_score`` turns one into the
0..1 similarity that messages carry.
"""

from __future__ import annotations

import abc
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from openlfr.vision.faces import EMBEDDING_DIM

logger = logging.getLogger(__name__)

#: Namespace of point ids: uuid5(POINT_NAMESPACE, "<subject_id>|<reference_image_id>").
POINT_NAMESPACE = uuid.UUID("6f1d3c52-3b8e-5a0f-9c1e-4d2b7a90e6f1")

EntryStatus = Literal["active", "suspended"]


def distance_to_score(distance: float) -> float:
    """Similarity in 0..1 of a Euclidean descriptor distance: ``1 - distance / 2``, clipped.

    dlib descriptors of one person lie about 0.3-0.5 apart and of two people 0.7-1.0, so the
    score runs roughly 0.5 (strangers) to 0.85 (same person); the mapping is linear so a
    distance threshold and its score are interchangeable (0.59 <-> 0.705).
    """
    return float(min(1.0, max(0.0, 1.0 - distance / 2.0)))


def score_to_distance(score: float) -> float:
    """Inverse of ``distance_to_score`` on 0..1."""
    return 2.0 * (1.0 - score)


def point_id(subject_id: str, reference_image_id: str) -> str:
    """Deterministic point id of one reference image of one subject (re-enrolling overwrites)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{subject_id}|{reference_image_id}"))


def check_vector(vector: np.ndarray, *, name: str = "vector") -> np.ndarray:
    """``vector`` as a (128,) float32 array of finite values.

    Raises:
        ValueError: wrong size or non-finite values.
    """
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape != (EMBEDDING_DIM,):
        raise ValueError(f"{name}: expected {EMBEDDING_DIM} values, got shape {np.shape(vector)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: holds NaN or infinity")
    return array


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchlistEntry:
    """One reference vector of one subject on one watchlist.

    Attributes:
        subject_id: the enrolled person's id.
        watchlist_id: the watchlist the subject is on (one per subject: the point id does not
            include it, so upserting a subject's image on another watchlist moves it).
        reference_image_id: id of the enrolment image (the loader uses a content hash).
        vector: (128,) float32 descriptor.
        status: only ``active`` entries are searched.
        expires_ts: Unix time after which the entry is no longer searched; None = no expiry.
    """

    subject_id: str
    watchlist_id: str
    reference_image_id: str
    vector: np.ndarray = field(compare=False, repr=False)
    status: EntryStatus = "active"
    expires_ts: float | None = None

    def __post_init__(self) -> None:
        for name in ("subject_id", "watchlist_id", "reference_image_id"):
            if not getattr(self, name):
                raise ValueError(f"WatchlistEntry.{name}: must not be empty")
        if self.status not in ("active", "suspended"):
            raise ValueError(f"WatchlistEntry.status: expected 'active' or 'suspended', got {self.status!r}")
        if self.expires_ts is not None and not math.isfinite(self.expires_ts):
            raise ValueError(f"WatchlistEntry.expires_ts: expected a finite Unix time, got {self.expires_ts}")
        object.__setattr__(self, "vector", check_vector(self.vector, name="WatchlistEntry.vector"))

    @property
    def point_id(self) -> str:
        """Deterministic id from subject and reference image (uuid5)."""
        return point_id(self.subject_id, self.reference_image_id)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A subject's nearest reference to a probe.

    Attributes:
        distance: Euclidean distance between the probe and the reference.
        score: ``distance_to_score(distance)``.
    """

    subject_id: str
    watchlist_id: str
    reference_image_id: str
    distance: float
    score: float


class VectorStore(abc.ABC):
    """Stores watchlist reference vectors and finds the subjects nearest to a probe.

    Implementations raise ``openlfr.watchlist.exceptions.StoreUnavailable`` (a
    ``BackendUnavailable``) when the store cannot be reached, so pipeline runners retry.
    """

    @abc.abstractmethod
    def upsert(self, entries: Sequence[WatchlistEntry]) -> None:
        """Insert or overwrite entries (by ``point_id``); visible to search on return."""

    @abc.abstractmethod
    def delete_subject(self, subject_id: str) -> None:
        """Remove every entry of a subject; gone from search on return."""

    @abc.abstractmethod
    def search(
        self, vector: np.ndarray, *, limit: int, watchlist_ids: Sequence[str] | None = None
    ) -> list[SearchHit]:
        """The nearest ``limit`` subjects to ``vector``, nearest first, one hit per subject.

        Only active, unexpired entries (at call time) of the given watchlists are searched;
        ``watchlist_ids=None`` searches every watchlist and an empty sequence none.
        """

    @abc.abstractmethod
    def count(self) -> int:
        """Number of stored entries (every status)."""

    @abc.abstractmethod
    def ready(self) -> tuple[bool, str]:
        """Whether the store answers, with a reason when not."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (and a local store's lock)."""
