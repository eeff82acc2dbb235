"""The Qdrant vector store in embedded mode: upsert, search filters, delete, expiry, errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.watchlist.exceptions import CollectionMismatch
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import WatchlistEntry, distance_to_score, point_id

RNG = np.random.default_rng(11)


def _unit() -> np.ndarray:
    v = RNG.normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


# Orthogonal-ish directions: distinct people are ~1.41 apart, so distances below are exact enough.
PEOPLE = {name: _unit() for name in ("ann", "ben", "cat", "dan")}


def _entry(subject: str, ref: str, *, watchlist: str = "wl-a", offset: float = 0.0, **kw) -> WatchlistEntry:
    vector = PEOPLE[subject].copy()
    vector[0] += offset
    return WatchlistEntry(subject_id=subject, watchlist_id=watchlist, reference_image_id=ref, vector=vector, **kw)


@pytest.fixture
def store() -> Iterator[QdrantStore]:
    s = QdrantStore(location=":memory:")
    yield s
    s.close()


def test_search_returns_nearest_subjects_one_hit_each(store: QdrantStore) -> None:
    store.upsert(
        [
            _entry("ann", "a1"),
            _entry("ann", "a2", offset=0.3),
            _entry("ann", "a3", offset=0.6),
            _entry("ben", "b1"),
            _entry("cat", "c1"),
        ]
    )
    assert store.count() == 5
    probe = PEOPLE["ann"].copy()
    probe[0] += 0.25
    hits = store.search(probe, limit=2)
    assert len(hits) == 2
    assert hits[0].subject_id == "ann" and hits[0].reference_image_id == "a2"
    assert hits[0].distance == pytest.approx(0.05, abs=1e-5)
    assert hits[0].score == pytest.approx(distance_to_score(hits[0].distance))
    # The runner-up is another subject, not ann's second reference image.
    assert hits[1].subject_id in {"ben", "cat"} and hits[1].distance > 1.0


@pytest.mark.parametrize(
    ("watchlist_ids", "expected"),
    [
        (None, {"ann", "ben", "cat"}),
        (["wl-a"], {"ann", "ben"}),
        (("wl-b",), {"cat"}),
        (["wl-a", "wl-b"], {"ann", "ben", "cat"}),
        (["wl-x"], set()),
        ([], set()),
    ],
)
def test_search_is_filtered_to_the_given_watchlists(store: QdrantStore, watchlist_ids, expected) -> None:
    store.upsert([_entry("ann", "a1"), _entry("ben", "b1"), _entry("cat", "c1", watchlist="wl-b")])
    hits = store.search(PEOPLE["ann"], limit=10, watchlist_ids=watchlist_ids)
    assert {h.subject_id for h in hits} == expected


def test_deleted_subject_is_gone_from_search_at_once(store: QdrantStore) -> None:
    store.upsert([_entry("ann", "a1"), _entry("ann", "a2", offset=0.1), _entry("ben", "b1")])
    assert store.search(PEOPLE["ann"], limit=1)[0].subject_id == "ann"
    store.delete_subject("ann")
    hits = store.search(PEOPLE["ann"], limit=5)
    assert [h.subject_id for h in hits] == ["ben"]
    assert store.count() == 1


@pytest.mark.parametrize(
    ("expires_in_s", "status", "found"),
    [
        (None, "active", True),
        (3600.0, "active", True),
        (-1.0, "active", False),
        (-3600.0, "active", False),
        (None, "suspended", False),
    ],
)
def test_expired_and_suspended_entries_are_not_returned(store: QdrantStore, expires_in_s, status, found) -> None:
    expires_ts = None if expires_in_s is None else time.time() + expires_in_s
    store.upsert([_entry("ann", "a1", expires_ts=expires_ts, status=status)])
    assert bool(store.search(PEOPLE["ann"], limit=2)) is found
    assert store.count() == 1  # still stored (retention is another concern), only not searched


def test_expiry_is_judged_at_query_time() -> None:
    now = [1000.0]
    store = QdrantStore(clock=lambda: now[0])
    store.upsert([_entry("ann", "a1", expires_ts=1500.0)])
    assert store.search(PEOPLE["ann"], limit=1)
    now[0] = 1500.0
    assert store.search(PEOPLE["ann"], limit=1) == []
    store.close()


def test_upsert_is_idempotent_by_subject_and_reference_image(store: QdrantStore) -> None:
    store.upsert([_entry("ann", "a1")])
    store.upsert([_entry("ann", "a1", offset=0.2)])
    assert store.count() == 1
    assert store.search(PEOPLE["ann"], limit=1)[0].distance == pytest.approx(0.2, abs=1e-5)
    assert _entry("ann", "a1").point_id == point_id("ann", "a1") != point_id("ann", "a2")


def test_persistent_store_keeps_entries_across_reopen(tmp_path: Path) -> None:
    store = QdrantStore(path=tmp_path / "qdrant")
    store.upsert([_entry("ann", "a1"), _entry("ben", "b1")])
    store.close()
    store = QdrantStore(path=tmp_path / "qdrant")
    assert store.count() == 2 and store.ready() == (True, "ok")
    store.close()


def test_collection_of_another_shape_is_refused(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    client = QdrantClient(path=str(tmp_path))
    client.create_collection("openlfr_watchlist", vectors_config=qm.VectorParams(size=512, distance=qm.Distance.COSINE))
    client.close()
    with pytest.raises(CollectionMismatch, match="size 128 with Euclid distance, got size 512"):
        QdrantStore(path=tmp_path)


def test_unreachable_server_is_backend_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendUnavailable, match="Connection refused|ConnectError"):
        QdrantStore(url=f"http://127.0.0.1:{port}", timeout_s=2)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"vector": np.zeros(8)}, "expected 16-4096 values"),
        ({"vector": np.full(128, np.nan)}, "NaN"),
        ({"subject_id": ""}, "subject_id"),
        ({"status": "deleted"}, "status"),
    ],
)
def test_bad_entries_are_refused(kwargs, error) -> None:
    fields = dict(subject_id="ann", watchlist_id="wl", reference_image_id="r", vector=np.zeros(128))
    fields.update(kwargs)
    with pytest.raises(ValueError, match=error):
        WatchlistEntry(**fields)  # type: ignore[arg-type]


def test_bad_search_arguments_are_refused(store: QdrantStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.search(PEOPLE["ann"], limit=0)
    with pytest.raises(ValueError, match="not one string"):
        store.search(PEOPLE["ann"], limit=1, watchlist_ids="wl-a")
    with pytest.raises(ValueError, match="128"):
        store.search(np.zeros(3), limit=1)
    with pytest.raises(ValueError, match="one of location, path or url"):
        QdrantStore(location=":memory:", url="http://localhost:6333")
