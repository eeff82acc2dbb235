"""What only the edge store has: its HNSW graph's recall, indexing, its folder, errors and threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.watchlist.edge_store import EdgeStore
from openlfr.watchlist.exceptions import CollectionMismatch, StoreUnavailable
from openlfr.watchlist.store import WatchlistEntry

#: Thresholds that put a few thousand vectors in an HNSW graph and make every search walk it
#: (by default such a small store is scanned exactly, and recall would be 100% by construction).
GRAPH_ALWAYS = {"indexing_threshold_kb": 100, "full_scan_threshold_kb": 1}


def _units(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _entries(vectors: np.ndarray, *, watchlist: str = "wl") -> list[WatchlistEntry]:
    return [
        WatchlistEntry(subject_id=f"s{i}", watchlist_id=watchlist, reference_image_id="r", vector=v)
        for i, v in enumerate(vectors)
    ]


def test_hnsw_top1_agrees_with_brute_force(tmp_path: Path) -> None:
    refs, queries = _units(5000, seed=1), _units(50, seed=2)
    store = EdgeStore(path=tmp_path / "edge", **GRAPH_ALWAYS)
    try:
        store.upsert(_entries(refs))
        assert store.index_coverage() == (5000, 5000)  # searched through the graph, not scanned
        agree = 0
        for query in queries:
            truth = int(np.argmin(np.linalg.norm(refs - query, axis=1)))
            agree += store.search(query, limit=1)[0].subject_id == f"s{truth}"
        # Random unit queries are the hard case (every reference ~1.3 away); probes of
        # enrolled people are far easier.
        assert agree >= 49, f"top-1 agrees with brute force for {agree}/50 queries"
    finally:
        store.close()


def test_writes_build_the_graph_unless_told_not_to(tmp_path: Path) -> None:
    refs = _units(600, seed=3)
    manual = EdgeStore(path=tmp_path / "manual", auto_optimize=False, **GRAPH_ALWAYS)
    manual.upsert(_entries(refs))
    assert manual.index_coverage() == (600, 0)
    assert manual.search(refs[7], limit=1)[0].subject_id == "s7"  # unindexed points are scanned
    assert manual.optimize() is True and manual.optimize() is False
    assert manual.index_coverage() == (600, 600)
    manual.close()

    auto = EdgeStore(path=tmp_path / "auto", **GRAPH_ALWAYS)
    auto.upsert(_entries(refs))
    assert auto.index_coverage() == (600, 600)
    auto.close()


def test_a_temporary_store_removes_its_folder_on_close() -> None:
    store = EdgeStore()
    store.upsert(_entries(_units(3, seed=4)))
    folder = store.path
    assert folder.is_dir() and store.count() == 3
    store.close()
    assert not folder.exists()
    store.close()  # twice is harmless


def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = EdgeStore(path=tmp_path / "edge")
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.search(np.ones(128) / np.sqrt(128), limit=1)
    assert store.ready()[0] is False


def test_a_folder_held_by_another_store_is_unavailable(tmp_path: Path) -> None:
    first = EdgeStore(path=tmp_path / "edge")
    try:
        with pytest.raises(BackendUnavailable, match="edge open at"):
            EdgeStore(path=tmp_path / "edge")
    finally:
        first.close()
    EdgeStore(path=tmp_path / "edge").close()  # free again once closed


def test_a_folder_that_is_not_a_shard_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a shard")
    with pytest.raises(ValueError, match="holds no edge shard"):
        EdgeStore(path=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_shard_of_another_shape_is_refused(tmp_path: Path) -> None:
    qe.EdgeShard.create(
        str(tmp_path), qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=512, distance=qe.Distance.Cosine))
    ).close()
    with pytest.raises(CollectionMismatch, match="size 128 with Euclid"):
        EdgeStore(path=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"hnsw_m": 2}, "hnsw_m"), ({"hnsw_ef": 0}, "hnsw_ef"), ({"indexing_threshold_kb": 0}, "indexing_threshold_kb")],
)
def test_bad_index_settings_are_refused(kwargs, error) -> None:
    with pytest.raises(ValueError, match=error):
        EdgeStore(**kwargs)


def test_searches_and_writes_from_two_threads(tmp_path: Path) -> None:
    # The match loop searches while the HTTP thread enrols, suspends and deletes.
    refs = _units(300, seed=5)
    store = EdgeStore(path=tmp_path / "edge")
    store.upsert(_entries(refs[:200]))
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(200, 300):
                entry = WatchlistEntry(subject_id=f"s{i}", watchlist_id="wl", reference_image_id="r", vector=refs[i])
                store.upsert([entry])
                store.set_subject_state("s0", status="suspended" if i % 2 else "active", expires_ts=None)
                store.delete_subject(f"s{i - 100}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        try:
            store.search_many(refs[:8], limit=2)
            store.search(refs[250], limit=2, watchlist_ids=["wl"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            break
    thread.join()
    try:
        assert errors == []
        assert store.count() == 200 == store.count_subjects(active_only=False)  # +s200..s299, -s100..s199
    finally:
        store.close()
