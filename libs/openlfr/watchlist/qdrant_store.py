"""Qdrant backend of the vector store: embedded local mode (``:memory:`` or a folder) or a server.

Collection layout: one point per (subject, reference image), Euclidean distance, 128-d;
payload ``subject_id``, ``watchlist_id``, ``reference_image_id``, ``status`` and, when the entry
expires, ``expires_ts``. Payload indexes on those fields are created on a server; Qdrant's
local mode ignores payload indexes, so none are made there. Search groups hits by
``subject_id``, so a subject with many reference images still takes one place in the top-k.
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
from openlfr.watchlist.store import SearchHit, VectorStore, WatchlistEntry, check_vector, distance_to_score

logger = logging.getLogger(__name__)

#: HTTP statuses that mean "try again later" rather than "this request is wrong".
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

_KEYWORD_FIELDS = ("subject_id", "watchlist_id", "status")


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
    ) -> None:
        given = [name for name, value in (("location", location), ("path", path), ("url", url)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"QdrantStore: give one of location, path or url, not {' and '.join(given)}")
        if not timeout_s > 0:
            raise ValueError(f"QdrantStore.timeout_s: expected > 0, got {timeout_s}")
        if not collection:
            raise ValueError("QdrantStore.collection: must not be empty")
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
                params = self._client.get_collection(self.collection).config.params.vectors
                size = getattr(params, "size", None)
                distance = getattr(params, "distance", None)
                if size != EMBEDDING_DIM or distance != qm.Distance.EUCLID:
                    raise CollectionMismatch(
                        f"collection {self.collection!r} at {self._where}: expected vectors of size "
                        f"{EMBEDDING_DIM} with Euclid distance, got size {size} with {distance}"
                    )
                return
            self._client.create_collection(
                self.collection,
                vectors_config=qm.VectorParams(size=EMBEDDING_DIM, distance=qm.Distance.EUCLID),
            )
            if self._remote:
                for name in _KEYWORD_FIELDS:
                    self._client.create_payload_index(
                        self.collection, name, field_schema=qm.PayloadSchemaType.KEYWORD, wait=True
                    )
                self._client.create_payload_index(
                    self.collection, "expires_ts", field_schema=qm.PayloadSchemaType.FLOAT, wait=True
                )
        logger.info('created watchlist collection collection="%s" where="%s"', self.collection, self._where)

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
        points = []
        for entry in entries:
            payload: dict[str, object] = {
                "subject_id": entry.subject_id,
                "watchlist_id": entry.watchlist_id,
                "reference_image_id": entry.reference_image_id,
                "status": entry.status,
            }
            if entry.expires_ts is not None:
                payload["expires_ts"] = float(entry.expires_ts)
            points.append(qm.PointStruct(id=entry.point_id, vector=entry.vector.tolist(), payload=payload))
        with self._call("upsert"):
            self._client.upsert(self.collection, points=points, wait=True)

    def delete_subject(self, subject_id: str) -> None:
        if not subject_id:
            raise ValueError("delete_subject: subject_id must not be empty")
        selector = qm.FilterSelector(
            filter=qm.Filter(must=[qm.FieldCondition(key="subject_id", match=qm.MatchValue(value=subject_id))])
        )
        with self._call("delete"):
            self._client.delete(self.collection, points_selector=selector, wait=True)

    def search(
        self, vector: np.ndarray, *, limit: int, watchlist_ids: Sequence[str] | None = None
    ) -> list[SearchHit]:
        if limit < 1:
            raise ValueError(f"search: limit must be >= 1, got {limit}")
        if isinstance(watchlist_ids, str):
            raise ValueError("search: watchlist_ids must be a sequence of ids, not one string")
        probe = check_vector(vector, name="search vector")
        if watchlist_ids is not None and len(watchlist_ids) == 0:
            return []
        with self._call("search"):
            result = self._client.query_points_groups(
                self.collection,
                query=probe.tolist(),
                group_by="subject_id",
                limit=limit,
                group_size=1,
                query_filter=self._filter(watchlist_ids, now=self._clock()),
                with_payload=True,
            )
        hits = []
        for group in result.groups:
            point = group.hits[0]
            payload = point.payload or {}
            # For Euclid collections Qdrant's "score" is the distance itself (lower is nearer).
            distance = float(point.score)
            hits.append(
                SearchHit(
                    subject_id=str(payload["subject_id"]),
                    watchlist_id=str(payload["watchlist_id"]),
                    reference_image_id=str(payload["reference_image_id"]),
                    distance=distance,
                    score=distance_to_score(distance),
                )
            )
        hits.sort(key=lambda h: (h.distance, h.subject_id))
        return hits

    @staticmethod
    def _filter(watchlist_ids: Sequence[str] | None, *, now: float) -> qm.Filter:
        must: list[qm.Condition] = [
            qm.FieldCondition(key="status", match=qm.MatchValue(value="active")),
            qm.Filter(
                should=[
                    qm.IsEmptyCondition(is_empty=qm.PayloadField(key="expires_ts")),
                    qm.FieldCondition(key="expires_ts", range=qm.Range(gt=now)),
                ]
            ),
        ]
        if watchlist_ids is not None:
            must.append(qm.FieldCondition(key="watchlist_id", match=qm.MatchAny(any=list(watchlist_ids))))
        return qm.Filter(must=must)

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
