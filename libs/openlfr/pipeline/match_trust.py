"""What the alert stage checks a match against before a person is put up for review.

A signed match (``openlfr.messages.signing``) was made by a match stage holding the key; the
registry still decides whether it may become an alert. ``check_match`` refuses a match, with the
reason, when

* ``unknown_deployment``: the registry has no such deployment;
* ``outside_deployment``: the deployment does not cover the match's camera at its capture time
  (camera not listed, before its start, at or after its end, or after it was ended by hand);
* ``watchlist_not_deployed``: the match's watchlist is not one the deployment searches;
* ``unknown_subject``: the registry has no such subject (never enrolled, or deleted since);
* ``subject_not_on_watchlist``: the subject is on another watchlist than the match says;
* ``subject_suspended``: the subject is suspended, or past its ``expires_at``;
* ``watchlist_suspended``: the match's watchlist is suspended as a whole (or deleted since);
* ``below_threshold``: the match's threshold is under the deployment's (its floor with per-subject
  thresholds), its score under its own threshold, or, for per-subject thresholds, its normalised
  threshold under the deployment's or its normalised score under that. A threshold raised since
  the match was made refuses it too: the safe side.

Suspension and expiry are read as they are when the alert stage decides (within ``cache_s``),
not as they were at the match's capture time: a person suspended (a warrant withdrawn, a wrong
enrolment found) is not put up for review from a match made a moment before, nor from a backlog
replayed after. Matches refused so are dead-lettered with the reason, never alerted.

``RegistryAuthority`` reads deployments and subjects from the registry's API (the match service)
and keeps each answer, found or not, for ``cache_s`` (bounded LRU), so the registry is asked about
each deployment and subject once per ``cache_s``, not per match. The registry not answering raises
``BackendUnavailable``: the runner pauses and retries the batch (no match is alerted unchecked,
none is dropped), and ``/readyz`` says why. ``StaticAuthority`` serves ``openlfr run``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from openlfr.messages.models import Match
from openlfr.pipeline.deployments import ActiveDeployment
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.review.exceptions import DeploymentNotFound, RegistryUnavailable, SubjectNotFound, WatchlistNotFound

logger = logging.getLogger(__name__)

F = TypeVar("F")

Refusal = Literal[
    "unknown_deployment",
    "outside_deployment",
    "watchlist_not_deployed",
    "unknown_subject",
    "subject_not_on_watchlist",
    "subject_suspended",
    "watchlist_suspended",
    "below_threshold",
]
#: Scores travel as JSON floats: a threshold equal to the deployment's may differ in the last bits.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    """What a match is checked against, of the deployment it names.

    Attributes:
        camera_ids: the cameras it covers.
        start_ts: its start; ``end_ts``: its end, or when it was ended by hand if earlier.
        watchlist_ids: the watchlists it searches.
        threshold: the raw threshold (the floor, with per-subject thresholds).
        norm_threshold: the normalised threshold every match must reach; None for a global threshold.
    """

    deployment_id: str
    camera_ids: frozenset[str]
    start_ts: float
    end_ts: float
    watchlist_ids: frozenset[str]
    threshold: float
    norm_threshold: float | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DeploymentFacts:
        """From the registry's ``GET /v1/deployments/{id}`` answer.

        Raises:
            ValueError: the answer lacks a field or has one of the wrong type.
        """
        try:
            end_ts = _ts(record["end_at"])
            if record.get("ended_at"):
                end_ts = min(end_ts, _ts(record["ended_at"]))
            point = record.get("operating_point") or {}
            norm = point.get("normalised_threshold") if record.get("threshold_mode") == "per_subject" else None
            return cls(
                deployment_id=str(record["id"]),
                camera_ids=frozenset(map(str, record["camera_ids"])),
                start_ts=_ts(record["start_at"]),
                end_ts=end_ts,
                watchlist_ids=frozenset(map(str, record["watchlist_ids"])),
                threshold=float(record["threshold"]),
                norm_threshold=float(norm) if norm is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"the registry's deployment record is not as expected: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What a match is checked against, of the subject it names.

    Attributes:
        status: ``active`` or ``suspended``.
        expired: past its ``expires_at``.
    """

    subject_id: str
    watchlist_id: str
    status: str = "active"
    expired: bool = False

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SubjectFacts:
        """From the registry's ``GET /v1/subjects/{id}`` answer.

        Raises:
            ValueError: the answer lacks a field (``status`` and ``expired`` included: a record
                without them cannot show that the subject may still be searched for).
        """
        try:
            status, expired = record["status"], record["expired"]
            if status not in ("active", "suspended") or not isinstance(expired, bool):
                raise ValueError(f"status {status!r}, expired {expired!r}")
            return cls(subject_id=str(record["id"]), watchlist_id=str(record["watchlist_id"]), status=status,
                       expired=expired)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the registry's subject record is not as expected: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class WatchlistFacts:
    """What a match is checked against, of the watchlist it names."""

    watchlist_id: str
    suspended: bool = False

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> WatchlistFacts:
        """From the registry's ``GET /v1/watchlists/{id}`` answer.

        Raises:
            ValueError: the answer lacks a field, or ``suspended`` is not a boolean.
        """
        try:
            suspended = record["suspended"]
            if not isinstance(suspended, bool):
                raise ValueError(f"suspended {suspended!r}")
            return cls(watchlist_id=str(record["id"]), suspended=suspended)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the registry's watchlist record is not as expected: {exc!r}") from exc


def _ts(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise ValueError(f"expected a time, got {value!r}")


class MatchAuthority(Protocol):
    """Where deployments and subjects are looked up (the registry)."""

    def deployment(self, deployment_id: str) -> DeploymentFacts | None:
        """The deployment, or None when there is none of that id.

        Raises:
            BackendUnavailable: it could not be asked; retry later.
        """
        ...

    def subject(self, subject_id: str) -> SubjectFacts | None:
        """The subject, or None when there is none of that id.

        Raises:
            BackendUnavailable: it could not be asked; retry later.
        """
        ...

    def watchlist(self, watchlist_id: str) -> WatchlistFacts | None:
        """The watchlist, or None when there is none of that id.

        Raises:
            BackendUnavailable: it could not be asked; retry later.
        """
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether it answered last time it was asked, with why not."""
        ...


def check_match(
    match: Match, *, deployment: DeploymentFacts | None, subject: SubjectFacts | None,
    watchlist: WatchlistFacts | None,
) -> tuple[Refusal, str] | None:
    """Why a (signed) match may not become an alert, or None when it may."""
    if deployment is None:
        return "unknown_deployment", f"deployment {match.deployment_id!r} is not in the registry"
    if match.camera_id not in deployment.camera_ids:
        return "outside_deployment", (
            f"deployment {deployment.deployment_id!r} does not cover camera {match.camera_id!r}"
        )
    if not deployment.start_ts <= match.capture_ts < deployment.end_ts:
        return "outside_deployment", (
            f"capture_ts {match.capture_ts:.3f} is outside deployment {deployment.deployment_id!r}'s window "
            f"[{deployment.start_ts:.3f}, {deployment.end_ts:.3f})"
        )
    if match.watchlist_id not in deployment.watchlist_ids:
        return "watchlist_not_deployed", (
            f"watchlist {match.watchlist_id!r} is not searched by deployment {deployment.deployment_id!r}"
        )
    if subject is None:
        return "unknown_subject", f"subject {match.subject_id!r} is not in the registry"
    if subject.watchlist_id != match.watchlist_id:
        return "subject_not_on_watchlist", (
            f"subject {match.subject_id!r} is on watchlist {subject.watchlist_id!r}, not {match.watchlist_id!r}"
        )
    if subject.status != "active":
        return "subject_suspended", f"subject {match.subject_id!r} is {subject.status}"
    if subject.expired:
        return "subject_suspended", f"subject {match.subject_id!r} is past its expiry"
    if watchlist is None:
        return "watchlist_suspended", f"watchlist {match.watchlist_id!r} is not in the registry"
    if watchlist.suspended:
        return "watchlist_suspended", f"watchlist {match.watchlist_id!r} is suspended"
    if match.threshold + _EPS < deployment.threshold:
        return "below_threshold", (
            f"threshold {match.threshold:g} is below the {deployment.threshold:g} of deployment "
            f"{deployment.deployment_id!r}"
        )
    if match.score + _EPS < match.threshold:
        return "below_threshold", f"score {match.score:g} is below its threshold {match.threshold:g}"
    if deployment.norm_threshold is not None:
        if match.normalised_threshold is None or match.normalised_score is None:
            return "below_threshold", (
                f"deployment {deployment.deployment_id!r} has per-subject thresholds and the match carries no "
                "normalised score"
            )
        if match.normalised_threshold + _EPS < deployment.norm_threshold:
            return "below_threshold", (
                f"normalised threshold {match.normalised_threshold:g} is below the {deployment.norm_threshold:g} "
                f"of deployment {deployment.deployment_id!r}"
            )
        if match.normalised_score + _EPS < match.normalised_threshold:
            return "below_threshold", (
                f"normalised score {match.normalised_score:g} is below its threshold {match.normalised_threshold:g}"
            )
    return None


class StaticAuthority:
    """Deployments and subjects given at construction (``openlfr run``: one process, no registry)."""

    def __init__(
        self, *, deployments: Iterable[DeploymentFacts], subjects: Iterable[SubjectFacts],
        watchlists: Iterable[WatchlistFacts] | None = None,
    ) -> None:
        """``watchlists``: left out, every watchlist a subject is on, none suspended."""
        self._deployments = {d.deployment_id: d for d in deployments}
        self._subjects = {s.subject_id: s for s in subjects}
        if watchlists is None:
            watchlists = [WatchlistFacts(w) for w in sorted({s.watchlist_id for s in self._subjects.values()})]
        self._watchlists = {w.watchlist_id: w for w in watchlists}

    @classmethod
    def for_run(
        cls, deployment: ActiveDeployment, *, camera_ids: Iterable[str], subjects: Mapping[str, str]
    ) -> StaticAuthority:
        """One deployment covering ``camera_ids`` at every time, and the subjects enrolled for it
        (subject id -> watchlist id)."""
        facts = DeploymentFacts(
            deployment_id=deployment.deployment_id, camera_ids=frozenset(camera_ids), start_ts=-math.inf,
            end_ts=math.inf, watchlist_ids=frozenset(deployment.watchlist_ids), threshold=deployment.threshold,
            norm_threshold=deployment.norm_threshold,
        )
        return cls(deployments=[facts], subjects=[SubjectFacts(s, w) for s, w in subjects.items()])

    def deployment(self, deployment_id: str) -> DeploymentFacts | None:
        return self._deployments.get(deployment_id)

    def subject(self, subject_id: str) -> SubjectFacts | None:
        return self._subjects.get(subject_id)

    def watchlist(self, watchlist_id: str) -> WatchlistFacts | None:
        return self._watchlists.get(watchlist_id)

    def ready(self) -> tuple[bool, str]:
        return True, "ok"


class RegistryReader(Protocol):
    """The registry API calls the authority makes (``openlfr.review.registry_client``)."""

    def get_deployment(self, deployment_id: str) -> dict[str, Any]: ...

    def get_subject(self, subject_id: str) -> dict[str, Any]: ...

    def get_watchlist(self, watchlist_id: str) -> dict[str, Any]: ...


class _TtlCache:
    """Answers (None for "not found") kept ``ttl_s``, at most ``max_entries``, least recent out first."""

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, object]:
        hit = self._entries.get(key)
        if hit is None or self._clock() - hit[0] >= self.ttl_s:
            return False, None
        self._entries.move_to_end(key)
        return True, hit[1]

    def put(self, key: str, value: object) -> None:
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class RegistryAuthority:
    """Deployments, subjects and watchlists from the registry's API, each answer kept ``cache_s``.

    Args:
        reader: the registry client (a ``service`` token).
        cache_s: how long an answer (found or not) is reused; 0 asks every time.
        max_entries: answers kept at most (per kind).
        clock: monotonic clock (the cache's age).
    """

    def __init__(
        self,
        reader: RegistryReader,
        *,
        cache_s: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(cache_s) and cache_s >= 0) or max_entries < 1:
            raise ValueError(f"RegistryAuthority: need cache_s >= 0 and max_entries >= 1, got {cache_s}, {max_entries}")
        self._reader = reader
        self._deployments = _TtlCache(ttl_s=cache_s, max_entries=max_entries, clock=clock)
        self._subjects = _TtlCache(ttl_s=cache_s, max_entries=max_entries, clock=clock)
        self._watchlists = _TtlCache(ttl_s=cache_s, max_entries=max_entries, clock=clock)
        self._lock = threading.Lock()  # /readyz reads the last failure from the HTTP thread
        self._failure: str | None = None
        self.lookups = 0

    def deployment(self, deployment_id: str) -> DeploymentFacts | None:
        return self._lookup(self._deployments, self._reader.get_deployment, deployment_id,
                            DeploymentFacts.from_record, DeploymentNotFound)

    def subject(self, subject_id: str) -> SubjectFacts | None:
        return self._lookup(self._subjects, self._reader.get_subject, subject_id, SubjectFacts.from_record,
                            SubjectNotFound)

    def watchlist(self, watchlist_id: str) -> WatchlistFacts | None:
        return self._lookup(self._watchlists, self._reader.get_watchlist, watchlist_id, WatchlistFacts.from_record,
                            WatchlistNotFound)

    def _lookup(
        self, cache: _TtlCache, call: Callable[[str], dict[str, Any]], key: str,
        parse: Callable[[dict[str, Any]], F], not_found: type[Exception],
    ) -> F | None:
        """The cached answer about ``key``, else the registry's (None: it has none such)."""
        found, value = cache.get(key)
        if found:
            return value  # type: ignore[return-value]
        try:
            facts: F | None = parse(self._ask(call, key))
        except not_found:
            facts = None
        except ValueError as exc:
            raise self._unavailable(str(exc)) from exc
        cache.put(key, facts)
        return facts

    def _ask(self, call: Callable[[str], dict[str, Any]], key: str) -> dict[str, Any]:
        self.lookups += 1
        try:
            record = call(key)
        except RegistryUnavailable as exc:
            raise self._unavailable(str(exc)) from exc
        with self._lock:
            self._failure = None
        return record

    def _unavailable(self, reason: str) -> BackendUnavailable:
        with self._lock:
            self._failure = reason
        logger.warning('registry lookup failed; matches wait error="%s"', reason)
        return BackendUnavailable(f"registry: {reason}")

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            failure = self._failure
        return (True, "ok") if failure is None else (False, f"registry: {failure}")
