"""Qdrant backend of the vector store: a server, or qdrant-client's local mode (``:memory:`` or a folder).

Collection layout: one point per (subject, reference image), Euclidean distance, 128-d;
payload ``subject_id``, ``watchlist_id``, ``reference_image_id``, ``status``, ``enrolled_ts``
and, when the entry expires, ``expires_ts``. Payload indexes on those fields are created on a
server; Qdrant's local mode ignores payload indexes, so none are made there. Search groups hits
by ``subject_id``, so a subject with many reference images still takes one place in the top-k.

Local mode scans every point in numpy: a grouped, filtered search takes ~3 s at 100,000
entries (docs/benchmarks.md), fine for tests and small watchlists; ``edge_store`` is the
embedded store for real ones. Points written before
``enrolled_ts`` existed lack it and are left out of every ``enrolled_before`` search: an entry
that cannot show it belongs to a deployment's snapshot is not matched by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from openlfr.vision.faces import EMBEDDING_DIM
from openlfr.watchlist.exceptions import CollectionMismatch, StoreUnavailable
from openlfr.watchlist.store import (
    EntryStatus,
    SearchHit,
    VectorStore,
    WatchlistEntry,
    check_search_args,
    check_subject_state,
    check_vector,
)

logger = logging.getLogger(__name__)

#: HTTP statuses that mean "try again later" rather than "this request is wrong".
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

_KEYWORD_FIELDS = ("subject_id", "watchlist_id", "status")
_FLOAT_FIELDS = ("expires_ts", "enrolled_ts")
#: Points per page when ``count_subjects`` scrolls.
_SCROLL_PAGE = 10_000


class QdrantStore(VectorStore):
    """Watchlist vectors in a Qdrant collection.

    Args:
        location: ``":memory:"`` for an in-process store (the default when nothing is given).
        path: folder of a persistent embedded store (one process at a time: it is locked).
        url: a Qdrant server, e.g. ``http://qdrant:6333``.
        collection: collection name; created on first use, and checked (size 128, Euclid)
            when it exists.
        timeout_s: timeout of every server call.
        api_key: the server's API key, if it needs one.
        clock: wall clock used for expiry at query time (Unix seconds).

    Raises:
        ValueError: more than one of ``location``, ``path`` and ``url``, or a bad timeout.
        StoreUnavailable: the server cannot be reached at start.
        CollectionMismatch: the collection exists with another vector size or distance.
    """

    def __init__(
        self,
        *,
        location: str | None = None,
        path: Path | None = None,
        url: str | None = None,
        collection: str = "openlfr_watchlist",
        timeout_s: float = 5.0,
        api_key: str | None = None,
        clock: Callable[[], float] = time.time,
        dim: int = EMBEDDING_DIM,
        model_version: str | None = None,
    ) -> None:
        given = [name for name, value in (("location", location), ("path", path), ("url", url)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"QdrantStore: give one of location, path or url, not {' and '.join(given)}")
        if not timeout_s > 0:
            raise ValueError(f"QdrantStore.timeout_s: expected > 0, got {timeout_s}")
        if not collection:
            raise ValueError("QdrantStore.collection: must not be empty")
        if not 16 <= dim <= 4096:
            raise ValueError(f"QdrantStore.dim: expected 16-4096, got {dim}")
        self.dim = dim
        self.model_version = model_version
        self.collection = collection
        self.timeout_s = timeout_s
        self._clock = clock
        self._remote = url is not None
        if url is not None:
            self._where = url
            self._client = QdrantClient(
                url=url, api_key=api_key, timeout=timeout_s, check_compatibility=False  # type: ignore[arg-type]
            )
        elif path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._where = str(path)
            self._client = QdrantClient(path=str(path))
        else:
            self._where = location or ":memory:"
            self._client = QdrantClient(location=self._where)
        try:
            self._ensure_collection()
        except BaseException:
            self._client.close()
            raise

    # -- set-up ------------------------------------------------------------------------------

    def _ensure_collection(self) -> None:
        with self._call("open collection"):
            exists = self._client.collection_exists(self.collection)
            if exists:
                info = self._client.get_collection(self.collection)
                params = info.config.params.vectors
                size = getattr(params, "size", None)
                distance = getattr(params, "distance", None)
                if size != self.dim or distance != qm.Distance.EUCLID:
                    raise CollectionMismatch(
                        f"collection {self.collection!r} at {self._where}: expected vectors of size "
                        f"{self.dim} with Euclid distance, got size {size} with {distance}"
                    )
                # A collection made before a field was indexed (enrolled_ts) gets its index now.
                self._ensure_indexes(have=set(info.payload_schema or {}))
                return
            self._client.create_collection(
                self.collection,
                vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.EUCLID),
            )
            self._ensure_indexes(have=set())
        logger.info('created watchlist collection collection="%s" where="%s"', self.collection, self._where)

    def _ensure_indexes(self, *, have: set[str]) -> None:
        if not self._remote:
            return
        schemas = {name: qm.PayloadSchemaType.KEYWORD for name in _KEYWORD_FIELDS}
        schemas.update({name: qm.PayloadSchemaType.FLOAT for name in _FLOAT_FIELDS})
        for name, schema in schemas.items():
            if name not in have:
                self._client.create_payload_index(self.collection, name, field_schema=schema, wait=True)

    @contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        """Turn "cannot reach the store" errors into ``StoreUnavailable``; others pass through."""
        try:
            yield
        except ResponseHandlingException as exc:
            raise StoreUnavailable(f"qdrant {operation} at {self._where}: {exc.source!r}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code in _RETRYABLE_STATUS:
                raise StoreUnavailable(
                    f"qdrant {operation} at {self._where}: HTTP {exc.status_code} {exc.reason_phrase}"
                ) from exc
            raise
        except (ConnectionError, TimeoutError) as exc:
            raise StoreUnavailable(f"qdrant {operation} at {self._where}: {exc!r}") from exc

    # -- the role ----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[WatchlistEntry]) -> None:
        if not entries:
            return
        points = [qm.PointStruct(id=pid, vector=vector, payload=payload) for pid, vector, payload in self.points_of(entries)]
        with self._call("upsert"):
            self._client.upsert(self.collection, points=points, wait=True)

    def delete_subject(self, subject_id: str) -> None:
        if not subject_id:
            raise ValueError("delete_subject: subject_id must not be empty")
        with self._call("delete"):
            self._client.delete(self.collection, points_selector=_subject_selector(subject_id), wait=True)

    def set_subject_state(self, subject_id: str, *, status: EntryStatus, expires_ts: float | None) -> int:
        check_subject_state(subject_id, status=status, expires_ts=expires_ts)
        selector = _subject_selector(subject_id)
        payload: dict[str, object] = {"status": status}
        if expires_ts is not None:
            payload["expires_ts"] = float(expires_ts)
        with self._call("set subject state"):
            entries = int(self._client.count(self.collection, count_filter=selector.filter, exact=True).count)
            if entries == 0:
                return 0
            self._client.set_payload(self.collection, payload=payload, points=selector, wait=True)
            if expires_ts is None:
                self._client.delete_payload(self.collection, keys=["expires_ts"], points=selector, wait=True)
        return entries

    def search(
        self,
        vector: np.ndarray,
        *,
        limit: int,
        watchlist_ids: Sequence[str] | None = None,
        enrolled_before: float | None = None,
    ) -> list[SearchHit]:
        check_search_args(limit=limit, watchlist_ids=watchlist_ids, enrolled_before=enrolled_before)
        probe = check_vector(vector, name="search vector", dim=self.dim)
        if watchlist_ids is not None and len(watchlist_ids) == 0:
            return []
        query_filter = _filter(watchlist_ids, now=self._clock(), enrolled_before=enrolled_before, active_only=True)
        with self._call("search"):
            result = self._client.query_points_groups(
                self.collection,
                query=probe.tolist(),
                group_by="subject_id",
                limit=limit,
                group_size=1,
                query_filter=query_filter,
                with_payload=True,
                with_vectors=True,
            )
        hits = []
        for group in result.groups:
            point = group.hits[0]
            payload = point.payload or {}
            # For Euclid collections Qdrant's "score" is the distance itself (lower is nearer).
            distance = float(point.score)
            hits.append(SearchHit.from_payload(payload, distance=distance, vector=point.vector))
        hits.sort(key=lambda h: (h.distance, h.subject_id))
        return hits

    # search_many: the base class's loop. query_batch_points has no group-by, and local mode
    # answers a batch one query at a time anyway.

    def _subject_ids(
        self, *, watchlist_ids: Sequence[str] | None, enrolled_before: float | None, active_only: bool
    ) -> Iterator[str]:
        query_filter = _filter(
            watchlist_ids, now=self._clock(), enrolled_before=enrolled_before, active_only=active_only
        )
        # Qdrant has no distinct count: scroll the subject ids (slow, but exact).
        offset = None
        with self._call("count subjects"):
            while True:
                records, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=query_filter,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["subject_id"],
                    with_vectors=False,
                )
                yield from (str((r.payload or {})["subject_id"]) for r in records)
                if offset is None:
                    return

    def count(self) -> int:
        with self._call("count"):
            return int(self._client.count(self.collection, exact=True).count)

    def ready(self) -> tuple[bool, str]:
        try:
            with self._call("readiness check"):
                if not self._client.collection_exists(self.collection):
                    return False, f"collection {self.collection!r} is missing at {self._where}"
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

    def close(self) -> None:
        self._client.close()


def _subject_selector(subject_id: str) -> qm.FilterSelector:
    return qm.FilterSelector(
        filter=qm.Filter(must=[qm.FieldCondition(key="subject_id", match=qm.MatchValue(value=subject_id))])
    )


def _filter(
    watchlist_ids: Sequence[str] | None, *, now: float, enrolled_before: float | None, active_only: bool
) -> qm.Filter | None:
    """The entries a search may return: see ``VectorStore.search`` (``active_only=False``
    drops the status and expiry conditions, for counting)."""
    must: list[qm.Condition] = []
    if active_only:
        must.append(qm.FieldCondition(key="status", match=qm.MatchValue(value="active")))
        must.append(
            qm.Filter(
                should=[
                    qm.IsEmptyCondition(is_empty=qm.PayloadField(key="expires_ts")),
                    qm.FieldCondition(key="expires_ts", range=qm.Range(gt=now)),
                ]
            )
        )
    if watchlist_ids is not None:
        must.append(qm.FieldCondition(key="watchlist_id", match=qm.MatchAny(any=list(watchlist_ids))))
    if enrolled_before is not None:
        must.append(qm.FieldCondition(key="enrolled_ts", range=qm.Range(lte=float(enrolled_before))))
    return qm.Filter(must=must) if must else None
