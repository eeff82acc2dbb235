"""The vector store's role: reference vectors of watchlist subjects, searched by distance.

One small interface (``VectorStore``) with one backend module per store: ``edge_store``
(Qdrant Edge embedded in the process, the default) and ``qdrant_store`` (a Qdrant server, or
qdrant-client's slow local mode); ``factory.open_store`` picks one from settings. Distances are
Euclidean between dlib descriptors; ``distance_to_score`` turns one into the 0..1 similarity
that messages carry.
"""

from __future__ import annotations

import abc
import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from openlfr.cohort.norm import NormStats
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


def check_vector(vector: np.ndarray, *, name: str = "vector", dim: int | None = EMBEDDING_DIM) -> np.ndarray:
    """``vector`` as a (dim,) float32 array of finite values (any length 16-4096 when ``dim`` is None).

    Raises:
        ValueError: wrong size or non-finite values.
    """
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dim is None:
        if not 16 <= array.shape[0] <= 4096:
            raise ValueError(f"{name}: expected 16-4096 values, got shape {np.shape(vector)}")
    elif array.shape != (dim,):
        raise ValueError(f"{name}: expected {dim} values, got shape {np.shape(vector)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: holds NaN or infinity")
    return array


def check_vectors(vectors: np.ndarray, *, name: str = "vectors", dim: int = EMBEDDING_DIM) -> np.ndarray:
    """``vectors`` as an (n, dim) float32 array of finite values (n may be 0).

    Raises:
        ValueError: not two-dimensional, wrong width or non-finite values.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: holds NaN or infinity")
    return array


def check_filter_args(
    *, watchlist_ids: Sequence[str] | None, enrolled_before: float | None, where: str
) -> None:
    """The checks of the filter arguments of ``search`` and ``count_subjects``.

    Raises:
        ValueError: ``watchlist_ids`` given as one string, or a non-finite ``enrolled_before``.
    """
    if isinstance(watchlist_ids, str):
        raise ValueError(f"{where}: watchlist_ids must be a sequence of ids, not one string")
    if enrolled_before is not None and not math.isfinite(enrolled_before):
        raise ValueError(f"{where}: enrolled_before must be a finite Unix time, got {enrolled_before}")


def check_search_args(
    *, limit: int, watchlist_ids: Sequence[str] | None, enrolled_before: float | None, where: str = "search"
) -> None:
    """The checks every backend's ``search`` makes on its keyword arguments.

    Raises:
        ValueError: ``limit`` not an int >= 1, or a bad filter argument (``check_filter_args``).
    """
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(f"{where}: limit must be an int >= 1, got {limit!r}")
    check_filter_args(watchlist_ids=watchlist_ids, enrolled_before=enrolled_before, where=where)


def check_subject_state(subject_id: str, *, status: EntryStatus, expires_ts: float | None) -> None:
    """The checks every backend's ``set_subject_state`` makes.

    Raises:
        ValueError: empty subject id, unknown status or non-finite expiry.
    """
    if not subject_id:
        raise ValueError("set_subject_state: subject_id must not be empty")
    if status not in ("active", "suspended"):
        raise ValueError(f"set_subject_state: status must be 'active' or 'suspended', got {status!r}")
    if expires_ts is not None and not math.isfinite(expires_ts):
        raise ValueError(f"set_subject_state: expires_ts must be a finite Unix time, got {expires_ts}")


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
        expires_ts: Unix time from which the entry is no longer searched; None = no expiry.
        enrolled_ts: Unix time the reference was enrolled. A deployment searches only entries
            enrolled up to its authorisation (``search(enrolled_before=...)``); 0 = enrolled
            before any deployment.
        norm: the reference's statistics against the background cohort (``openlfr.cohort``),
            which give the subject a threshold of its own; None when enrolled without a cohort.
        norm_cohort: the cohort those statistics came from (``cohort@<fingerprint>``).
        model_version: the embedder that made ``vector``; a store refuses entries of another.
    """

    subject_id: str
    watchlist_id: str
    reference_image_id: str
    vector: np.ndarray = field(compare=False, repr=False)
    status: EntryStatus = "active"
    expires_ts: float | None = None
    enrolled_ts: float = 0.0
    norm: NormStats | None = None
    norm_cohort: str | None = None
    model_version: str | None = None

    def __post_init__(self) -> None:
        if (self.norm is None) != (self.norm_cohort is None):
            raise ValueError("WatchlistEntry.norm and norm_cohort: give both or neither")
        for name in ("subject_id", "watchlist_id", "reference_image_id"):
            if not getattr(self, name):
                raise ValueError(f"WatchlistEntry.{name}: must not be empty")
        if self.status not in ("active", "suspended"):
            raise ValueError(f"WatchlistEntry.status: expected 'active' or 'suspended', got {self.status!r}")
        if self.expires_ts is not None and not math.isfinite(self.expires_ts):
            raise ValueError(f"WatchlistEntry.expires_ts: expected a finite Unix time, got {self.expires_ts}")
        if not (math.isfinite(self.enrolled_ts) and self.enrolled_ts >= 0):
            raise ValueError(f"WatchlistEntry.enrolled_ts: expected a finite Unix time >= 0, got {self.enrolled_ts}")
        object.__setattr__(self, "vector", check_vector(self.vector, name="WatchlistEntry.vector", dim=None))

    @property
    def point_id(self) -> str:
        """Deterministic id from subject and reference image (uuid5)."""
        return point_id(self.subject_id, self.reference_image_id)

    def payload(self) -> dict[str, object]:
        """The entry's payload as both stores keep it (``expires_ts`` only when it expires)."""
        payload: dict[str, object] = {
            "subject_id": self.subject_id,
            "watchlist_id": self.watchlist_id,
            "reference_image_id": self.reference_image_id,
            "status": self.status,
            "enrolled_ts": float(self.enrolled_ts),
        }
        if self.expires_ts is not None:
            payload["expires_ts"] = float(self.expires_ts)
        if self.model_version is not None:
            payload["model_version"] = self.model_version
        if self.norm is not None:
            payload["norm_mu"] = float(self.norm.mu)
            payload["norm_sd"] = float(self.norm.sd)
            payload["norm_cohort"] = self.norm_cohort
        return payload


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A subject's nearest reference to a probe.

    Attributes:
        distance: Euclidean distance between the probe and the reference.
        score: ``distance_to_score(distance)``.
        norm: the reference's cohort statistics, when it was enrolled with a cohort.
        norm_cohort: which cohort they came from.
        vector: the reference's vector (a track's template is scored against it).
    """

    subject_id: str
    watchlist_id: str
    reference_image_id: str
    distance: float
    score: float
    norm: NormStats | None = None
    norm_cohort: str | None = None
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_payload(cls, payload: dict[str, object], *, distance: float, vector: object = None) -> SearchHit:
        """A hit from a stored point's payload (``WatchlistEntry.payload``), its distance and,
        when the store returned it, the reference's vector."""
        norm = None
        if payload.get("norm_mu") is not None and payload.get("norm_sd") is not None:
            norm = NormStats(mu=float(payload["norm_mu"]), sd=float(payload["norm_sd"]))  # type: ignore[arg-type]
        return cls(
            subject_id=str(payload["subject_id"]),
            watchlist_id=str(payload["watchlist_id"]),
            reference_image_id=str(payload["reference_image_id"]),
            distance=distance,
            score=distance_to_score(distance),
            norm=norm,
            norm_cohort=str(payload["norm_cohort"]) if norm is not None and payload.get("norm_cohort") else None,
            vector=None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1),
        )


class VectorStore(abc.ABC):
    """Stores watchlist reference vectors and finds the subjects nearest to a probe.

    What ``search`` sees: entries that are ``active``, unexpired at call time (``expires_ts``
    after the store's clock), on the given watchlists and, for a deployment's frozen snapshot,
    enrolled no later than ``enrolled_before``. Writes are visible to search on return.

    Implementations raise ``openlfr.watchlist.exceptions.StoreUnavailable`` (a
    ``BackendUnavailable``) when the store cannot be reached or used, so pipeline runners retry,
    and ``ValueError`` for bad arguments.

    A store holds the vectors of one embedder (``model_version``, vectors of ``dim`` values):
    it refuses entries of another, so no search ever compares vectors of two models.
    """

    #: Length of the vectors this store holds.
    dim: int = EMBEDDING_DIM
    #: The embedder whose vectors this store holds (None: not pinned, for tests and tools).
    model_version: str | None = None

    def points_of(self, entries: Sequence[WatchlistEntry]) -> list[tuple[str, list[float], dict[str, object]]]:
        """``(point_id, vector, payload)`` of each entry, after refusing entries of another model.

        Raises:
            ValueError: a vector of another length, or an entry of another model version.
        """
        out = []
        for entry in entries:
            if entry.vector.shape != (self.dim,):
                raise ValueError(f"{entry.subject_id}/{entry.reference_image_id}: a vector of {entry.vector.shape[0]} "
                                 f"values in a store of {self.dim} ({self.model_version or 'any model'})")
            if self.model_version is not None and entry.model_version not in (None, self.model_version):
                raise ValueError(f"{entry.subject_id}/{entry.reference_image_id}: made by {entry.model_version}, "
                                 f"this store holds {self.model_version}'s vectors")
            payload = entry.payload()
            if self.model_version is not None:
                payload["model_version"] = self.model_version
            out.append((entry.point_id, entry.vector.tolist(), payload))
        return out

    @abc.abstractmethod
    def upsert(self, entries: Sequence[WatchlistEntry]) -> None:
        """Insert or overwrite entries (by ``point_id``); visible to search on return."""

    @abc.abstractmethod
    def delete_subject(self, subject_id: str) -> None:
        """Remove every entry of a subject; gone from search on return."""

    @abc.abstractmethod
    def set_subject_state(self, subject_id: str, *, status: EntryStatus, expires_ts: float | None) -> int:
        """Set ``status`` and ``expires_ts`` (None = no expiry) on every entry of a subject.

        Visible to search on return.

        Returns:
            The number of the subject's entries written (all of them, also those already in
            that state); 0 when the store holds no entry of the subject.
        """

    @abc.abstractmethod
    def search(
        self,
        vector: np.ndarray,
        *,
        limit: int,
        watchlist_ids: Sequence[str] | None = None,
        enrolled_before: float | None = None,
    ) -> list[SearchHit]:
        """The nearest ``limit`` subjects to ``vector``, nearest first, one hit per subject.

        Only active, unexpired entries (at call time) of the given watchlists are searched;
        ``watchlist_ids=None`` searches every watchlist and an empty sequence none. With
        ``enrolled_before``, only entries with ``enrolled_ts <= enrolled_before``.

        Raises:
            ValueError: a vector of the wrong size or with NaN, ``limit`` < 1, or
                ``watchlist_ids`` given as one string.
        """

    def search_many(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        watchlist_ids: Sequence[str] | None = None,
        enrolled_before: float | None = None,
    ) -> list[list[SearchHit]]:
        """``search`` for each row of ``vectors`` (n, 128), in order.

        This default loops over ``search``; a backend overrides it where its engine answers a
        batch in one call.
        """
        probes = check_vectors(vectors, name="search_many vectors", dim=self.dim)
        check_search_args(
            limit=limit, watchlist_ids=watchlist_ids, enrolled_before=enrolled_before, where="search_many"
        )
        return [
            self.search(probe, limit=limit, watchlist_ids=watchlist_ids, enrolled_before=enrolled_before)
            for probe in probes
        ]

    def count_subjects(
        self,
        *,
        watchlist_ids: Sequence[str] | None = None,
        enrolled_before: float | None = None,
        active_only: bool = True,
    ) -> int:
        """Distinct subjects with an entry that ``search`` with these filters could return.

        ``active_only=False`` counts suspended and expired entries too. A deployment's
        watchlist size. Checks the arguments, then counts the distinct ids that
        :meth:`_subject_ids` yields.

        Raises:
            ValueError: ``watchlist_ids`` given as one string, or a bad ``enrolled_before``.
            NotImplementedError: a backend that cannot list its entries' subjects.
        """
        check_filter_args(watchlist_ids=watchlist_ids, enrolled_before=enrolled_before, where="count_subjects")
        if watchlist_ids is not None and len(watchlist_ids) == 0:
            return 0
        return len(set(self._subject_ids(watchlist_ids=watchlist_ids, enrolled_before=enrolled_before,
                                          active_only=active_only)))

    def _subject_ids(
        self, *, watchlist_ids: Sequence[str] | None, enrolled_before: float | None, active_only: bool
    ) -> Iterable[str]:
        """The subject id of every entry the filters select (repeats allowed); arguments checked."""
        raise NotImplementedError(f"{type(self).__name__} does not count subjects")

    @abc.abstractmethod
    def count(self) -> int:
        """Number of stored entries (every status)."""

    @abc.abstractmethod
    def ready(self) -> tuple[bool, str]:
        """Whether the store answers, with a reason when not."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (and a local store's lock)."""
