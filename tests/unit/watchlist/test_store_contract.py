"""The ``VectorStore`` contract, run against every backend: the edge store and Qdrant's local mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.cohort.norm import NormStats
from openlfr.watchlist.edge_store import EdgeStore
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import SearchHit, VectorStore, WatchlistEntry, distance_to_score

RNG = np.random.default_rng(23)
T0 = 1_800_000_000.0


def _unit(rng: np.random.Generator = RNG) -> np.ndarray:
    v = rng.normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


# Random directions: distinct people are ~1.41 apart, like strangers' descriptors (0.7-1.0) or more.
PEOPLE = {name: _unit() for name in ("ann", "ben", "cat", "dan", "eve")}


def _near(subject: str, offset: float) -> np.ndarray:
    vector = PEOPLE[subject].copy()
    vector[0] += offset
    return vector


def _entry(subject: str, ref: str = "r1", *, watchlist: str = "wl-a", offset: float = 0.0, **kw) -> WatchlistEntry:
    return WatchlistEntry(
        subject_id=subject, watchlist_id=watchlist, reference_image_id=ref, vector=_near(subject, offset), **kw
    )


class Clock:
    """The store's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


#: backend -> how to open a persistent store in a folder with the test's clock
BACKENDS: dict[str, Callable[[Path | None, Clock], VectorStore]] = {
    "edge": lambda path, clock: EdgeStore(path=path, clock=clock),
    "qdrant-local": lambda path, clock: (
        QdrantStore(location=":memory:", clock=clock) if path is None else QdrantStore(path=path, clock=clock)
    ),
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend: str, clock: Clock, tmp_path: Path) -> Iterator[VectorStore]:
    # The edge store always lives in a folder; Qdrant's local mode is tested in memory here.
    s = BACKENDS[backend](tmp_path / "store" if backend == "edge" else None, clock)
    yield s
    s.close()


def _ids(hits: list[SearchHit]) -> list[str]:
    return [h.subject_id for h in hits]


# -- search ----------------------------------------------------------------------------------


def test_search_is_nearest_first_one_hit_per_subject_with_exact_distances(store: VectorStore) -> None:
    entries = [
        _entry("ann", "a1"),
        _entry("ann", "a2", offset=0.3),
        _entry("ann", "a3", offset=0.6),
        _entry("ben", "b1"),
        _entry("ben", "b2", offset=-0.2),
        _entry("cat", "c1"),
        _entry("dan", "d1", watchlist="wl-b"),
    ]
    store.upsert(entries)
    assert store.count() == 7
    probe = _near("ann", 0.25)
    # Brute force in numpy: each subject's nearest reference, subjects by that distance.
    best: dict[str, tuple[float, str]] = {}
    for e in entries:
        d = float(np.linalg.norm(e.vector - probe))
        if e.subject_id not in best or d < best[e.subject_id][0]:
            best[e.subject_id] = (d, e.reference_image_id)
    expected = sorted(best, key=lambda s: best[s][0])

    hits = store.search(probe, limit=3)
    assert _ids(hits) == expected[:3]
    for hit in hits:
        distance, ref = best[hit.subject_id]
        assert hit.distance == pytest.approx(distance, abs=1e-5)  # Euclidean, not squared
        assert hit.reference_image_id == ref
        assert hit.score == pytest.approx(distance_to_score(hit.distance))
    assert hits[0].reference_image_id == "a2" and hits[0].distance == pytest.approx(0.05, abs=1e-5)
    assert _ids(store.search(probe, limit=10)) == expected


def test_a_subject_with_many_references_takes_one_place(store: VectorStore) -> None:
    # Forty references of ann all nearer the probe than anyone else: more than the edge
    # store's first rounds (limit * 4 filtered, 32 unfiltered points) hold, so it must ask again.
    store.upsert([_entry("ann", f"a{i}", offset=0.005 * i) for i in range(40)])
    store.upsert([_entry("ben"), _entry("cat"), _entry("dan")])
    hits = store.search(PEOPLE["ann"], limit=2)
    assert _ids(hits)[0] == "ann" and len(hits) == 2 and hits[1].subject_id in {"ben", "cat", "dan"}
    assert hits[0].reference_image_id == "a0"
    assert sorted(_ids(store.search(PEOPLE["ann"], limit=5))[1:]) == ["ben", "cat", "dan"]


def test_cohort_statistics_travel_with_every_hit(store: VectorStore) -> None:
    """A reference's cohort statistics (its own threshold) come back with each search hit, in
    search and search_many; a reference enrolled without a cohort comes back without them."""
    store.upsert([_entry("ann", norm=NormStats(mu=0.61, sd=0.03), norm_cohort="cohort@abc"), _entry("ben")])
    for hits in (store.search(PEOPLE["ann"], limit=2), store.search_many(PEOPLE["ann"][None, :], limit=2)[0]):
        by_subject = {h.subject_id: h for h in hits}
        ann = by_subject["ann"].norm
        assert ann is not None and ann.mu == pytest.approx(0.61) and ann.sd == pytest.approx(0.03)
        assert by_subject["ann"].norm_cohort == "cohort@abc"
        assert by_subject["ben"].norm is None and by_subject["ben"].norm_cohort is None
        # Each hit brings its reference's vector (a track template is scored against it).
        np.testing.assert_allclose(by_subject["ann"].vector, _near("ann", 0.0), atol=1e-6)


def test_a_store_holds_one_model_s_vectors(backend: str, clock: Clock) -> None:
    """A store pinned to an embedder refuses vectors of another length or another model, and
    stamps its model version on what it stores: no search compares two models' vectors."""
    store = BACKENDS[backend](None, clock)
    store.model_version = "dlib_resnet_v1@abc"
    try:
        with pytest.raises(ValueError, match="a vector of 64 values in a store of 128"):
            store.upsert([WatchlistEntry(subject_id="ann", watchlist_id="wl-a", reference_image_id="r1",
                                         vector=np.ones(64, np.float32))])
        with pytest.raises(ValueError, match="made by faceres_v1@def"):
            store.upsert([_entry("ann", model_version="faceres_v1@def")])
        store.upsert([_entry("ann"), _entry("ben", model_version="dlib_resnet_v1@abc")])
        assert store.count() == 2
        with pytest.raises(ValueError, match="expected 128 values"):
            store.search(np.ones(1024, np.float32), limit=1)
    finally:
        store.close()


def test_a_store_of_another_size() -> None:
    wide = QdrantStore(location=":memory:", dim=1024, model_version="faceres_v1@def")
    vector = np.zeros(1024, np.float32)
    vector[3] = 1.0
    wide.upsert([WatchlistEntry(subject_id="ann", watchlist_id="wl", reference_image_id="r", vector=vector)])
    hit = wide.search(vector, limit=1)[0]
    assert hit.subject_id == "ann" and hit.distance == pytest.approx(0.0, abs=1e-6) and hit.vector.shape == (1024,)
    wide.close()
    edge = EdgeStore(dim=1024, model_version="faceres_v1@def")
    edge.upsert([WatchlistEntry(subject_id="ann", watchlist_id="wl", reference_image_id="r", vector=vector)])
    assert edge.search(vector, limit=1)[0].subject_id == "ann"
    edge.close()


def test_cohort_statistics_come_with_their_cohort() -> None:
    with pytest.raises(ValueError, match="norm and norm_cohort"):
        _entry("ann", norm=NormStats(mu=0.6, sd=0.03))


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
def test_search_is_filtered_to_the_given_watchlists(store: VectorStore, watchlist_ids, expected) -> None:
    store.upsert([_entry("ann"), _entry("ben"), _entry("cat", watchlist="wl-b")])
    hits = store.search(PEOPLE["ann"], limit=10, watchlist_ids=watchlist_ids)
    assert set(_ids(hits)) == expected
    assert all(h.watchlist_id == ("wl-b" if h.subject_id == "cat" else "wl-a") for h in hits)


def test_suspended_entries_are_not_searched_but_stay_stored(store: VectorStore) -> None:
    store.upsert([_entry("ann", status="suspended"), _entry("ben")])
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ben"]
    assert store.count() == 2


def test_expiry_is_judged_at_query_time_by_the_store_clock(store: VectorStore, clock: Clock) -> None:
    store.upsert([_entry("ann", expires_ts=T0 + 500), _entry("ben", expires_ts=T0 - 1), _entry("cat")])
    assert _ids(store.search(PEOPLE["ann"], limit=5))[0] == "ann"
    assert "ben" not in _ids(store.search(PEOPLE["ben"], limit=5))
    clock.now = T0 + 500  # expires_ts is the first second it no longer matches
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["cat"]
    assert store.count() == 3


@pytest.mark.parametrize(
    ("enrolled_before", "expected"),
    [
        (None, {"ann", "ben", "cat"}),
        (T0 + 200, {"ann", "ben"}),  # inclusive
        (T0 + 199.5, {"ann"}),
        (T0, {"ann"}),
        (T0 - 1, set()),
        (0.0, set()),
    ],
)
def test_enrolled_before_freezes_a_snapshot(store: VectorStore, enrolled_before, expected) -> None:
    store.upsert(
        [
            _entry("ann", enrolled_ts=T0),
            _entry("ben", enrolled_ts=T0 + 200),
            _entry("cat", enrolled_ts=T0 + 300),
        ]
    )
    hits = store.search(PEOPLE["cat"], limit=5, enrolled_before=enrolled_before)
    assert set(_ids(hits)) == expected


def test_a_reference_enrolled_later_is_not_matched_by_an_earlier_snapshot(store: VectorStore) -> None:
    store.upsert([_entry("ann", "old", offset=0.4, enrolled_ts=T0), _entry("ann", "new", enrolled_ts=T0 + 60)])
    assert store.search(PEOPLE["ann"], limit=1)[0].reference_image_id == "new"
    hit = store.search(PEOPLE["ann"], limit=1, enrolled_before=T0 + 30)[0]
    assert hit.reference_image_id == "old" and hit.distance == pytest.approx(0.4, abs=1e-5)


# -- state changes and deletion ----------------------------------------------------------------


def test_set_subject_state_suspends_and_reactivates_every_entry(store: VectorStore) -> None:
    store.upsert([_entry("ann", "a1"), _entry("ann", "a2", offset=0.2), _entry("ben")])
    assert store.set_subject_state("ann", status="suspended", expires_ts=None) == 2
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ben"]
    assert store.count_subjects() == 1
    assert store.set_subject_state("ann", status="active", expires_ts=None) == 2
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ann", "ben"]
    assert store.set_subject_state("nobody", status="suspended", expires_ts=None) == 0
    assert store.count() == 3


def test_set_subject_state_sets_and_clears_expiry(store: VectorStore, clock: Clock) -> None:
    store.upsert([_entry("ann", expires_ts=T0 + 10), _entry("ben")])
    assert store.set_subject_state("ann", status="active", expires_ts=T0 - 1) == 1
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ben"]
    assert store.set_subject_state("ann", status="active", expires_ts=None) == 1
    clock.now = T0 + 10**6  # long after every expiry it ever had
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ann", "ben"]
    assert store.set_subject_state("ann", status="active", expires_ts=T0 + 2 * 10**6) == 1
    assert _ids(store.search(PEOPLE["ann"], limit=1)) == ["ann"]
    clock.now = T0 + 2 * 10**6
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ben"]


def test_set_subject_state_keeps_the_rest_of_the_entry(store: VectorStore) -> None:
    store.upsert([_entry("ann", "a1", watchlist="wl-b", enrolled_ts=T0)])
    store.set_subject_state("ann", status="suspended", expires_ts=T0 + 99)
    store.set_subject_state("ann", status="active", expires_ts=T0 + 99)
    hit = store.search(PEOPLE["ann"], limit=1, watchlist_ids=["wl-b"], enrolled_before=T0)[0]
    assert (hit.subject_id, hit.watchlist_id, hit.reference_image_id) == ("ann", "wl-b", "a1")


def test_deleted_subject_is_gone_from_search_at_once(store: VectorStore) -> None:
    store.upsert([_entry("ann", "a1"), _entry("ann", "a2", offset=0.1), _entry("ben")])
    assert _ids(store.search(PEOPLE["ann"], limit=1)) == ["ann"]
    store.delete_subject("ann")
    assert _ids(store.search(PEOPLE["ann"], limit=5)) == ["ben"]
    assert store.count() == 1 and store.count_subjects() == 1


def test_upsert_overwrites_by_subject_and_reference_image(store: VectorStore) -> None:
    store.upsert([_entry("ann", "a1")])
    store.upsert([_entry("ann", "a1", offset=0.2, watchlist="wl-b")])
    assert store.count() == 1
    hit = store.search(PEOPLE["ann"], limit=1)[0]
    assert hit.distance == pytest.approx(0.2, abs=1e-5) and hit.watchlist_id == "wl-b"


# -- batches and counts ------------------------------------------------------------------------


def test_search_many_equals_search_per_vector(store: VectorStore) -> None:
    store.upsert([_entry(name, watchlist="wl-b" if name == "eve" else "wl-a") for name in PEOPLE])
    store.upsert([_entry("ann", f"x{i}", offset=0.005 * i) for i in range(40)])
    probes = np.stack([_near(name, 0.1) for name in PEOPLE] + [_unit()])
    for kwargs in ({}, {"watchlist_ids": ["wl-a"]}, {"enrolled_before": 0.0}, {"watchlist_ids": []}):
        batch = store.search_many(probes, limit=3, **kwargs)
        assert batch == [store.search(p, limit=3, **kwargs) for p in probes]
    assert store.search_many(np.zeros((0, 128), np.float32), limit=3) == []


def test_count_subjects_counts_distinct_subjects_per_filter(store: VectorStore, clock: Clock) -> None:
    store.upsert(
        [
            _entry("ann", "a1", enrolled_ts=T0),
            _entry("ann", "a2", enrolled_ts=T0 + 100),
            _entry("ben", enrolled_ts=T0 + 100),
            _entry("cat", watchlist="wl-b", enrolled_ts=T0),
            _entry("dan", watchlist="wl-b", status="suspended"),
            _entry("eve", watchlist="wl-b", expires_ts=T0 + 50),
        ]
    )
    assert store.count_subjects() == 4
    assert store.count_subjects(active_only=False) == 5
    assert store.count_subjects(watchlist_ids=["wl-a"]) == 2
    assert store.count_subjects(watchlist_ids=["wl-b"]) == 2
    assert store.count_subjects(watchlist_ids=["wl-b"], active_only=False) == 3
    assert store.count_subjects(watchlist_ids=[]) == 0
    assert store.count_subjects(enrolled_before=T0) == 3  # ann (a1), cat, eve (enrolled_ts 0)
    assert store.count_subjects(enrolled_before=T0 - 1) == 1
    clock.now = T0 + 50
    assert store.count_subjects() == 3
    assert store.count_subjects(active_only=False) == 5


# -- persistence and bad input -----------------------------------------------------------------


def test_a_persistent_store_keeps_entries_and_state_across_reopen(backend: str, clock: Clock, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    first = BACKENDS[backend](folder, clock)
    first.upsert([_entry("ann", "a1", enrolled_ts=T0), _entry("ann", "a2", offset=0.3), _entry("ben", "b1")])
    first.set_subject_state("ben", status="suspended", expires_ts=None)
    first.delete_subject("nobody")
    first.close()

    again = BACKENDS[backend](folder, clock)
    try:
        assert again.count() == 3 and again.ready() == (True, "ok")
        assert _ids(again.search(PEOPLE["ben"], limit=5)) == ["ann"]
        assert again.count_subjects(active_only=False) == 2
        hit = again.search(PEOPLE["ann"], limit=1, enrolled_before=T0)[0]
        assert hit.reference_image_id == "a1" and hit.distance == pytest.approx(0.0, abs=1e-5)
    finally:
        again.close()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.search(np.zeros(64), limit=1), "expected 128 values"),
        (lambda s: s.search(np.full(128, np.nan), limit=1), "NaN"),
        (lambda s: s.search(PEOPLE["ann"], limit=0), "limit"),
        (lambda s: s.search(PEOPLE["ann"], limit=-3), "limit"),
        (lambda s: s.search(PEOPLE["ann"], limit=1, watchlist_ids="wl-a"), "not one string"),
        (lambda s: s.search(PEOPLE["ann"], limit=1, enrolled_before=float("nan")), "enrolled_before"),
        (lambda s: s.search_many(np.zeros((2, 64)), limit=1), r"shape \(n, 128\)"),
        (lambda s: s.search_many(PEOPLE["ann"], limit=1), r"shape \(n, 128\)"),
        (lambda s: s.search_many(np.full((2, 128), np.inf), limit=1), "NaN or infinity"),
        (lambda s: s.search_many(np.zeros((2, 128)), limit=0), "limit"),
        (lambda s: s.set_subject_state("ann", status="deleted", expires_ts=None), "status"),  # type: ignore[arg-type]
        (lambda s: s.set_subject_state("ann", status="active", expires_ts=float("inf")), "expires_ts"),
        (lambda s: s.set_subject_state("", status="active", expires_ts=None), "subject_id"),
        (lambda s: s.delete_subject(""), "subject_id"),
        (lambda s: s.count_subjects(watchlist_ids="wl-a"), "not one string"),
    ],
)
def test_bad_arguments_are_value_errors(store: VectorStore, call, error) -> None:
    store.upsert([_entry("ann")])
    with pytest.raises(ValueError, match=error):
        call(store)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"enrolled_ts": -1.0}, "enrolled_ts"),
        ({"enrolled_ts": float("nan")}, "enrolled_ts"),
        ({"expires_ts": float("inf")}, "expires_ts"),
    ],
)
def test_bad_entry_times_are_refused(kwargs, error) -> None:
    with pytest.raises(ValueError, match=error):
        _entry("ann", **kwargs)
