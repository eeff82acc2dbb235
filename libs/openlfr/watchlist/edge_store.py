"""Qdrant Edge backend of the vector store: Qdrant's engine inside this process, HNSW-indexed.

Layout: one Edge shard per folder (Edge has no collections), one point per (subject, reference
image), Euclidean distance, 128-d, and the payload of ``qdrant_store``: ``subject_id``,
``watchlist_id``, ``reference_image_id``, ``status``, ``enrolled_ts`` and, when the entry
expires, ``expires_ts``. Payload indexes: keyword ``watchlist_id``, ``subject_id`` and
``status``, float ``expires_ts`` and ``enrolled_ts``. Only ``watchlist_id`` gets the engine's
per-value HNSW sub-graphs: they keep a search filtered to a few watchlists on the graph (without
them recall of filtered searches drops), and sub-graphs for the other fields would only slow
the index build.

Indexing: Edge has no background optimizer. New points land in an appendable segment that is
searched exactly (brute force), and ``optimize`` builds the HNSW graph of any segment past the
engine's indexing threshold (about 20,000 vectors of 128 floats by default). The store calls it
at open and after every write (``auto_optimize``): a no-op (~30 us) until a segment passes the
threshold, so at most about 20,000 entries are ever scanned by brute force (a few ms at most;
100,000 unindexed took 3 ms unfiltered, 13 ms filtered). The write that passes it blocks while
the graph is built, and the engine holds the GIL meanwhile: seconds, or ~35 s for 100,000
entries at once on 2 cores (docs/benchmarks.md).

Filtered search in two stages: the engine walks the graph only through points that pass the
filter, and with a filter passing ~35% of 100,000 random vectors that walk lost 2% of probes of
enrolled subjects (found ~1.2 away instead of ~0.35; ef 384 still lost 0.6%). So a search also
asks the graph for the probe's 32 nearest points regardless of the filter (an unfiltered walk
finds a probe's own subject) and has the engine check which of those pass the filter exactly,
in the same batch as the filtered walk; the two candidate lists are merged. On that set every
enrolled probe was found, at ~2 ms (benchmarks/bench_watchlist.py). The filter stays the
engine's: nothing is filtered in Python.

One hit per subject: Edge's Python API has no group-by (``query_groups`` is Rust only), so
``search`` asks for ``limit * 4`` filtered points and keeps each subject's nearest. A subject
has a handful of reference images, so that is nearly always enough; when it is not (fewer than
``limit`` subjects in a full page), it asks again for four times as many, until it has
``limit`` subjects or the engine has no more points. The first occurrence of a subject in a
nearest-first list is its nearest entry, and a subject missing from the top ``n`` points is
farther than all of them, so the result is the exact per-subject top-``limit`` of the
candidates the index returns.

Distances: for Euclid the engine's score is the distance itself, not its square (lower is
nearer), as ``qdrant_store`` reports it.

Threads: each engine call holds the GIL, so calls never overlap; a lock still serialises the
store's own multi-call operations (count then update, over-fetch rounds) and ``close``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import qdrant_edge as qe

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
    check_vectors,
)

logger = logging.getLogger(__name__)

#: Points asked per wanted subject in the first round of a search (then 4x more per round).
OVERFETCH = 4
#: Nearest points (any watchlist or state) whose passing the filter is checked exactly.
UNFILTERED_CANDIDATES = 32
#: HNSW defaults, chosen on 100,000 random 128-d unit vectors under a filter passing ~35%: the
#: filtered walk alone found 98% of enrolled probes at m 32 (92% at m 16), the two-stage search
#: 100% (500/500), in ~2 ms; the graph takes ~40 s to build on 2 cores.
DEFAULT_HNSW_M = 32
DEFAULT_HNSW_EF_CONSTRUCT = 100
DEFAULT_HNSW_EF = 128
#: Below this many KB of matching vectors (1 KB = 2 vectors of 128 float32) the engine scans
#: the filtered points exactly instead of walking the graph: small watchlists are exact.
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000
#: Points per page when ``count_subjects`` scrolls.
_SCROLL_PAGE = 10_000
_HIT_PAYLOAD = ["subject_id", "watchlist_id", "reference_image_id", "norm_mu", "norm_sd", "norm_cohort"]
#: Files an Edge shard keeps in its folder.
_SHARD_MARKERS = ("edge_config.json", "segments", "wal")


class EdgeStore(VectorStore):
    """Watchlist vectors in a Qdrant Edge shard embedded in this process.

    Args:
        path: the shard's folder, created when missing (one process at a time: the engine
            locks it). None = a temporary folder, removed on ``close``.
        clock: wall clock used for expiry at query time (Unix seconds).
        hnsw_m: edges per node of the HNSW graph (fixed when a segment is indexed).
        hnsw_ef_construct: candidates per insertion while building the graph.
        hnsw_ef: candidates per search (raised to the number of points asked for).
        full_scan_threshold_kb: filtered searches matching fewer KB of vectors than this are
            exact scans.
        indexing_threshold_kb: segment size from which ``optimize`` builds its graph; None =
            the engine's default (~10,000 KB, ~20,000 vectors).
        auto_optimize: call ``optimize`` at open and after every write (see the module
            docstring); off for a bulk load that calls ``optimize`` once at the end.

    Raises:
        ValueError: ``path`` is a non-empty folder without a shard, or bad HNSW numbers.
        CollectionMismatch: the shard holds vectors of another size or distance.
        StoreUnavailable: the shard cannot be opened (e.g. another process holds it).
    """

    def __init__(
        self,
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_ef_construct: int = DEFAULT_HNSW_EF_CONSTRUCT,
        hnsw_ef: int = DEFAULT_HNSW_EF,
        full_scan_threshold_kb: int = DEFAULT_FULL_SCAN_THRESHOLD_KB,
        indexing_threshold_kb: int | None = None,
        auto_optimize: bool = True,
        dim: int = EMBEDDING_DIM,
        model_version: str | None = None,
    ) -> None:
        limits = [("hnsw_m", hnsw_m, 4), ("hnsw_ef_construct", hnsw_ef_construct, 4), ("hnsw_ef", hnsw_ef, 1)]
        limits.append(("full_scan_threshold_kb", full_scan_threshold_kb, 0))
        if indexing_threshold_kb is not None:
            limits.append(("indexing_threshold_kb", indexing_threshold_kb, 1))
        for name, value, low in limits:
            if value < low:
                raise ValueError(f"EdgeStore.{name}: expected >= {low}, got {value}")
        if not 16 <= dim <= 4096:
            raise ValueError(f"EdgeStore.dim: expected 16-4096, got {dim}")
        self.dim = dim
        self.model_version = model_version
        self._clock = clock
        self._ef = hnsw_ef
        self._auto_optimize = auto_optimize
        self._lock = threading.RLock()
        self._temporary = path is None
        folder = Path(tempfile.mkdtemp(prefix="openlfr-edge-")) if path is None else Path(path)
        self._where = str(folder)
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Euclid),
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=full_scan_threshold_kb
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
            # Payloads are small (~150 bytes an entry) and read for every hit: keep them in RAM.
            payload_memory=qe.Memory.Cached,
        )
        self._shard: qe.EdgeShard | None = None
        #: Whether any segment has a graph: until one has, every search is an exact scan and
        #: the unfiltered stage is skipped.
        self._has_graph = False
        try:
            self._shard = self._open(folder, config)
            self._ensure_indexes()
            self._has_graph = self.index_coverage()[1] > 0
            if auto_optimize:
                self.optimize()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        """The shard's folder (a temporary one when none was given)."""
        return Path(self._where)

    # -- set-up ------------------------------------------------------------------------------

    def _open(self, folder: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"EdgeStore.path: {folder} is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        names = {child.name for child in folder.iterdir()}
        is_shard = any(marker in names for marker in _SHARD_MARKERS)
        if names and not is_shard:
            raise ValueError(f"EdgeStore.path: {folder} is not empty and holds no edge shard")
        with self._call("open"):
            if is_shard:
                shard = qe.EdgeShard.load(str(folder), config)
            else:
                shard = qe.EdgeShard.create(str(folder), config)
        logger.info('opened edge watchlist store path="%s" created="%s"', folder, not is_shard)
        return shard

    def _ensure_indexes(self) -> None:
        keyword = {
            "watchlist_id": qe.KeywordIndexParams(enable_hnsw=True),
            "subject_id": qe.KeywordIndexParams(enable_hnsw=False),
            "status": qe.KeywordIndexParams(enable_hnsw=False),
        }
        floats = {name: qe.FloatIndexParams(enable_hnsw=False) for name in ("expires_ts", "enrolled_ts")}
        with self._call("create payload indexes"):
            have = set(self._open_shard().info().payload_schema)
            for name, params in {**keyword, **floats}.items():
                if name not in have:
                    self._open_shard().update(qe.UpdateOperation.create_field_index(name, params))

    def _open_shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise StoreUnavailable(f"edge store at {self._where} is closed")
        return self._shard

    @contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        """Engine errors as ``StoreUnavailable`` (``CollectionMismatch`` for an incompatible shard).

        The binding raises a bare ``Exception`` for every engine error (I/O, a shard locked by
        another process, a closed shard); argument errors are caught before calling it, and
        any other exception type is a bug and passes through.
        """
        try:
            yield
        except Exception as exc:
            if type(exc) is not Exception:
                raise
            message = str(exc)
            if "incompatible" in message.lower():
                raise CollectionMismatch(
                    f"edge shard at {self._where}: expected vectors of size {self.dim} with Euclid "
                    f"distance: {message}"
                ) from exc
            raise StoreUnavailable(f"edge {operation} at {self._where}: {message}") from exc

    def optimize(self) -> bool:
        """Build the HNSW graph of segments past the indexing threshold, and vacuum deletions.

        Blocks (holding the GIL) until done; a no-op when nothing is due.

        Returns:
            Whether anything was done.
        """
        with self._lock, self._call("optimize"):
            started = time.perf_counter()
            changed = bool(self._open_shard().optimize())
            self._has_graph = int(self._open_shard().info().indexed_vectors_count) > 0
        if changed:
            seconds = time.perf_counter() - started
            logger.info('optimized edge watchlist store path="%s" seconds="%.1f"', self._where, seconds)
        return changed

    def index_coverage(self) -> tuple[int, int]:
        """(points stored, of which in an HNSW graph); the rest are searched by brute force.

        The engine's counts are approximate until ``optimize`` has run (a point being moved
        between segments is counted in both).
        """
        with self._lock, self._call("info"):
            info = self._open_shard().info()
        return int(info.points_count), int(info.indexed_vectors_count)

    def _after_write(self) -> None:
        if self._auto_optimize:
            self.optimize()

    # -- the role ----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[WatchlistEntry]) -> None:
        if not entries:
            return
        points = [qe.Point(id=pid, vector=vector, payload=payload) for pid, vector, payload in self.points_of(entries)]
        with self._lock:
            with self._call("upsert"):
                self._open_shard().update(qe.UpdateOperation.upsert_points(points))
            self._after_write()

    def delete_subject(self, subject_id: str) -> None:
        if not subject_id:
            raise ValueError("delete_subject: subject_id must not be empty")
        with self._lock:
            with self._call("delete"):
                self._open_shard().update(qe.UpdateOperation.delete_points_by_filter(_subject_filter(subject_id)))
            self._after_write()

    def set_subject_state(self, subject_id: str, *, status: EntryStatus, expires_ts: float | None) -> int:
        check_subject_state(subject_id, status=status, expires_ts=expires_ts)
        selector = _subject_filter(subject_id)
        payload: dict[str, object] = {"status": status}
        if expires_ts is not None:
            payload["expires_ts"] = float(expires_ts)
        with self._lock:
            with self._call("set subject state"):
                shard = self._open_shard()
                entries = int(shard.count(qe.CountRequest(exact=True, filter=selector)))
                if entries == 0:
                    return 0
                shard.update(qe.UpdateOperation.set_payload_by_filter(selector, payload))
                if expires_ts is None:
                    shard.update(qe.UpdateOperation.delete_payload_by_filter(selector, ["expires_ts"]))
            self._after_write()
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
        with self._lock, self._call("search"):
            return self._search_rounds(probe, limit=limit, query_filter=query_filter, fetch=limit * OVERFETCH)

    def search_many(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        watchlist_ids: Sequence[str] | None = None,
        enrolled_before: float | None = None,
    ) -> list[list[SearchHit]]:
        """``search`` for each row of ``vectors`` (n, 128), as two engine batches."""
        probes = check_vectors(vectors, name="search_many vectors", dim=self.dim)
        check_search_args(
            limit=limit, watchlist_ids=watchlist_ids, enrolled_before=enrolled_before, where="search_many"
        )
        if len(probes) == 0:
            return []
        if watchlist_ids is not None and len(watchlist_ids) == 0:
            return [[] for _ in probes]
        query_filter = _filter(watchlist_ids, now=self._clock(), enrolled_before=enrolled_before, active_only=True)
        fetch = limit * OVERFETCH
        with self._lock, self._call("search"):
            out = []
            for probe, (points, full) in zip(probes, self._candidates(probes, fetch=fetch, query_filter=query_filter)):
                hits = _nearest_per_subject(points, limit=limit)
                if len(hits) < limit and full:
                    # A page full of few subjects' references: this probe needs a deeper round.
                    hits = self._search_rounds(probe, limit=limit, query_filter=query_filter, fetch=fetch * OVERFETCH)
                out.append(hits)
            return out

    def _search_rounds(
        self, probe: np.ndarray, *, limit: int, query_filter: qe.Filter, fetch: int
    ) -> list[SearchHit]:
        """Over-fetch rounds of one probe (see the module docstring); the caller holds the lock."""
        while True:
            ((points, full),) = self._candidates(probe[None, :], fetch=fetch, query_filter=query_filter)
            hits = _nearest_per_subject(points, limit=limit)
            if len(hits) >= limit or not full:
                return hits
            fetch *= OVERFETCH

    def _candidates(
        self, probes: np.ndarray, *, fetch: int, query_filter: qe.Filter
    ) -> list[tuple[list[qe.ScoredPoint], bool]]:
        """Per probe, the two-stage candidates nearest first, and whether the filtered page was full.

        Stage one asks the graph for the probe's nearest points regardless of the filter; stage
        two asks, in one batch, for the ``fetch`` nearest points passing the filter (a walk of
        the graph restricted to them) and for which of the stage-one points pass it (an exact
        check of a few ids). See the module docstring for why both. A store without a graph is
        scanned exactly, in one stage.
        """
        shard = self._open_shard()
        if not self._has_graph:
            pages = shard.query_batch(
                qe.QueryBatchRequest([self._request(probe, fetch=fetch, query_filter=query_filter) for probe in probes])
            )
            return [(points, len(points) == fetch) for points in pages]
        nearest = max(UNFILTERED_CANDIDATES, fetch)
        unfiltered = shard.query_batch(
            qe.QueryBatchRequest(
                [
                    qe.QueryRequest(
                        limit=nearest,
                        query=qe.Query.Nearest(probe.tolist()),
                        params=qe.SearchParams(hnsw_ef=max(self._ef, nearest)),
                    )
                    for probe in probes
                ]
            )
        )
        requests = []
        for probe, points in zip(probes, unfiltered, strict=True):
            requests.append(self._request(probe, fetch=fetch, query_filter=query_filter))
            among = qe.Filter(must=[query_filter, qe.HasIdCondition({point.id for point in points})])
            requests.append(self._request(probe, fetch=fetch, query_filter=among))
        pages = shard.query_batch(qe.QueryBatchRequest(requests))
        out = []
        for walked, checked in zip(pages[0::2], pages[1::2], strict=True):
            merged = {point.id: point for point in [*walked, *checked]}
            out.append((sorted(merged.values(), key=lambda point: point.score), len(walked) == fetch))
        return out

    def _request(self, probe: np.ndarray, *, fetch: int, query_filter: qe.Filter) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=fetch,
            query=qe.Query.Nearest(probe.tolist()),
            filter=query_filter,
            with_payload=qe.PayloadSelector.Include(_HIT_PAYLOAD),
            with_vector=True,
            params=qe.SearchParams(hnsw_ef=max(self._ef, fetch)),
        )

    def _subject_ids(
        self, *, watchlist_ids: Sequence[str] | None, enrolled_before: float | None, active_only: bool
    ) -> Iterator[str]:
        query_filter = _filter(
            watchlist_ids, now=self._clock(), enrolled_before=enrolled_before, active_only=active_only
        )
        # Scroll only the subject ids: an exact facet on subject_id is ~10x slower (1.5 s at
        # 100,000 entries), the estimated one is not exact.
        offset = None
        with self._lock, self._call("count subjects"):
            shard = self._open_shard()
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_SCROLL_PAGE,
                        filter=query_filter,
                        with_payload=qe.PayloadSelector.Include(["subject_id"]),
                        with_vector=False,
                    )
                )
                yield from (str((record.payload or {})["subject_id"]) for record in records)
                if offset is None:
                    return

    def count(self) -> int:
        with self._lock, self._call("count"):
            return int(self._open_shard().count(qe.CountRequest(exact=True)))

    def ready(self) -> tuple[bool, str]:
        try:
            with self._lock, self._call("readiness check"):
                self._open_shard().info()
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

    def close(self) -> None:
        """Flush and release the shard (and its folder's lock); remove a temporary folder."""
        with self._lock:
            shard, self._shard = self._shard, None
            try:
                if shard is not None:
                    with self._call("close"):
                        shard.close()
            finally:
                if self._temporary:
                    shutil.rmtree(self._where, ignore_errors=True)


def _subject_filter(subject_id: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key="subject_id", match=qe.MatchValue(subject_id))])


def _filter(
    watchlist_ids: Sequence[str] | None, *, now: float, enrolled_before: float | None, active_only: bool
) -> qe.Filter:
    """The entries a search may return: see ``VectorStore.search`` (``active_only=False``
    drops the status and expiry conditions, for counting)."""
    must: list[object] = []
    if active_only:
        must.append(qe.FieldCondition(key="status", match=qe.MatchValue("active")))
        must.append(
            qe.Filter(
                should=[
                    qe.IsEmptyCondition(key="expires_ts"),
                    qe.FieldCondition(key="expires_ts", range=qe.RangeFloat(gt=float(now))),
                ]
            )
        )
    if watchlist_ids is not None:
        must.append(qe.FieldCondition(key="watchlist_id", match=qe.MatchAny(list(watchlist_ids))))
    if enrolled_before is not None:
        must.append(qe.FieldCondition(key="enrolled_ts", range=qe.RangeFloat(lte=float(enrolled_before))))
    return qe.Filter(must=must)  # type: ignore[arg-type]  # an empty ``must`` matches every point


def _nearest_per_subject(points: Sequence[qe.ScoredPoint], *, limit: int) -> list[SearchHit]:
    """The first (nearest) point of each subject in a nearest-first list, at most ``limit``."""
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for point in points:
        payload = point.payload or {}
        subject_id = str(payload["subject_id"])
        if subject_id in seen:
            continue
        seen.add(subject_id)
        distance = float(point.score)
        hits.append(SearchHit.from_payload(payload, distance=distance, vector=point.vector))
        if len(hits) == limit:
            break
    hits.sort(key=lambda h: (h.distance, h.subject_id))
    return hits
