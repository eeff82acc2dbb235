"""The Registry itself: the vector store kept in step, the deployment gate, activity, failures."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from openlfr.pipeline.deployments import DeploymentGate
from openlfr.registry.exceptions import Conflict, ImageRefused, Invalid, NotFound
from openlfr.registry.models import (
    DeploymentCreate,
    DeploymentUpdate,
    SubjectCreate,
    SubjectUpdate,
    WatchlistCreate,
)
from openlfr.registry.service import snapshot_fingerprint
from openlfr.watchlist.exceptions import StoreUnavailable
from openlfr.watchlist.qdrant_store import QdrantStore


def add_watchlist(reg, watchlist_id: str = "wl-1") -> None:
    reg.create_watchlist(WatchlistCreate(id=watchlist_id, name=watchlist_id), actor="alice")


def add_subject(env, subject_id: str, watchlist_id: str = "wl-1", **over) -> None:
    values = dict(
        id=subject_id, display_name=subject_id, category="wanted", reason="warrant", legal_basis="PACE s.1",
        expires_at=env.clock.at(days=30),
    )
    values.update(over)
    env.registry.create_subject(watchlist_id, SubjectCreate(**values), actor="alice")


def enrol(env, subject_id: str, image_bytes, name: str) -> str:
    return env.registry.enrol_image(subject_id, image_bytes[name], source="case file", actor="alice").id


def deploy(env, deployment_id: str = "dep-1", **over):
    values = dict(
        id=deployment_id, purpose="station", authorised_by="Supt. Roe", camera_ids=["cam-1"],
        start_at=env.clock.at(), end_at=env.clock.at(hours=2), watchlist_ids=["wl-1"], threshold=0.72,
    )
    values.update(over)
    return env.registry.create_deployment(DeploymentCreate(**values), actor="dave")


def found(env, vector, **kw) -> list[str]:
    return [h.subject_id for h in env.store.search(vector, limit=5, **kw)]


def test_the_registry_is_a_deployment_gate(env) -> None:
    gate: DeploymentGate = env.registry
    assert gate.active_for("cam-1", env.clock.now) is None


def test_deleted_suspended_and_expired_subjects_are_not_found(env, image_bytes, vectors) -> None:
    add_watchlist(env.registry)
    add_subject(env, "obama", expires_at=env.clock.at(days=10))
    add_subject(env, "rose")
    enrol(env, "obama", image_bytes, "obama")
    enrol(env, "rose", image_bytes, "rose")
    assert found(env, vectors["obama"])[0] == "obama"

    env.registry.update_subject("obama", SubjectUpdate(status="suspended"), actor="alice")
    assert "obama" not in found(env, vectors["obama"])
    env.registry.update_subject("obama", SubjectUpdate(status="active"), actor="alice")
    assert found(env, vectors["obama"])[0] == "obama"

    env.clock.advance(timedelta(days=10, seconds=1).total_seconds())  # past obama's expiry
    assert "obama" not in found(env, vectors["obama"])
    assert env.registry.get_subject("obama").expired
    env.registry.update_subject("obama", SubjectUpdate(expires_at=env.clock.at(days=5)), actor="alice")
    assert found(env, vectors["obama"])[0] == "obama"

    env.registry.delete_subject("rose", actor="alice")
    assert "rose" not in found(env, vectors["rose"])
    assert env.store.count() == 1
    with pytest.raises(NotFound):
        env.registry.get_subject("rose")


def test_the_snapshot_hides_references_enrolled_after_it(env, image_bytes, vectors) -> None:
    add_watchlist(env.registry)
    add_subject(env, "obama")
    first = enrol(env, "obama", image_bytes, "obama")
    env.clock.advance(60)
    dep = deploy(env)
    snapshot_ts = dep.snapshot.snapshot_ts
    assert snapshot_ts == env.clock.now
    assert dep.snapshot.fingerprint == snapshot_fingerprint([("obama", first)])
    env.clock.advance(60)
    add_subject(env, "rose")
    enrol(env, "rose", image_bytes, "rose")
    enrol(env, "obama", image_bytes, "obama2")  # a later image of an earlier subject
    assert "rose" not in found(env, vectors["rose"], enrolled_before=snapshot_ts)
    assert found(env, vectors["rose"])[0] == "rose"
    hit = env.store.search(vectors["obama2"], limit=1, enrolled_before=snapshot_ts)[0]
    assert hit.subject_id == "obama" and hit.reference_image_id == first
    assert env.store.count_subjects(watchlist_ids=["wl-1"], enrolled_before=snapshot_ts) == 1
    # removing the later image rebuilds the first with its own enrolment time: still in the snapshot
    later = [i.id for i in env.registry.get_subject("obama").images if i.id != first][0]
    env.registry.delete_image("obama", later, actor="alice")
    assert found(env, vectors["obama"], enrolled_before=snapshot_ts) == ["obama"]


def test_active_for_follows_windows_cameras_and_changes(env) -> None:
    add_watchlist(env.registry)
    add_watchlist(env.registry, "wl-2")
    now = env.clock.now
    deploy(env, start_at=env.clock.at(minutes=10), end_at=env.clock.at(hours=1),
           camera_ids=["cam-1", "cam-2"], watchlist_ids=["wl-2", "wl-1"])
    gate = env.registry
    assert gate.active_for("cam-1", now) is None  # before the start
    active = gate.active_for("cam-1", now + 600)
    assert active is not None and active.deployment_id == "dep-1"
    assert active.watchlist_ids == ("wl-1", "wl-2") and active.threshold == 0.72
    assert active.snapshot_ts == now
    assert gate.active_for("cam-2", now + 3599).deployment_id == "dep-1"
    assert gate.active_for("cam-2", now + 3600) is None  # the end is excluded
    assert gate.active_for("cam-3", now + 600) is None

    env.registry.update_deployment("dep-1", DeploymentUpdate(camera_ids=["cam-3"], threshold=0.9), actor="dave")
    assert gate.active_for("cam-1", now + 600) is None
    assert gate.active_for("cam-3", now + 600).threshold == 0.9
    env.registry.update_deployment("dep-1", DeploymentUpdate(end_at=env.clock.at(hours=3)), actor="dave")
    assert gate.active_for("cam-3", now + 7200) is not None
    env.registry.end_deployment("dep-1", actor="dave", reason="done")
    assert gate.active_for("cam-3", now + 600) is None


def test_deployments_survive_a_restart(make_env, tmp_path, clock) -> None:
    path = tmp_path / "registry.sqlite3"
    first = make_env(db_path=path, clock=clock)
    add_watchlist(first.registry)
    deploy(first, camera_ids=["cam-7"])
    first.registry.record_activity("dep-1", faces=4, tracks=1)
    first.registry.close()
    first.db.close()
    second = make_env(db_path=path, clock=clock, store=QdrantStore(location=":memory:", clock=clock))
    assert second.registry.active_for("cam-7", clock.now + 1).deployment_id == "dep-1"
    assert second.registry.get_deployment("dep-1").stats.faces == 4


def test_activity_is_written_in_the_background(make_env) -> None:
    env = make_env(activity_flush_s=0.05)
    add_watchlist(env.registry)
    deploy(env)
    env.registry.record_activity("dep-1", faces=1, tracks=1)  # the first flush is not due yet
    time.sleep(0.1)
    env.registry.record_activity("dep-1", faces=2, tracks=0)  # due: hands the flush to the writer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        row = env.db.one("SELECT faces, tracks FROM deployment_stats WHERE deployment_id = 'dep-1'")
        if row["faces"] == 3:
            break
        time.sleep(0.01)
    assert (row["faces"], row["tracks"]) == (3, 1)
    env.registry.record_activity("unknown-deployment", faces=1, tracks=0)
    env.registry.flush_activity()  # logged and dropped, nothing raised
    with pytest.raises(ValueError, match="counts must be >= 0"):
        env.registry.record_activity("dep-1", faces=-1, tracks=0)


def test_reference_chips_and_refusals(env, image_bytes) -> None:
    add_watchlist(env.registry)
    add_subject(env, "obama")
    image_id = enrol(env, "obama", image_bytes, "obama")
    chip = env.registry.reference_chip("obama", image_id)
    assert chip is not None and chip[:2] == b"\xff\xd8"
    assert env.registry.reference_chip("obama", "0" * 32) is None
    assert env.registry.reference_chip("nobody", image_id) is None
    with pytest.raises(ImageRefused) as refused:
        env.registry.enrol_image("obama", b"garbage", source="x", actor="alice")
    assert refused.value.reason == "unreadable"
    with pytest.raises(Invalid, match="source"):
        env.registry.enrol_image("obama", image_bytes["obama2"], source="  ", actor="alice")
    with pytest.raises(NotFound, match="subject 'nobody'"):
        env.registry.enrol_image("nobody", image_bytes["obama2"], source="x", actor="alice")


def test_image_limit_per_subject(make_env, image_bytes) -> None:
    env = make_env(max_images_per_subject=1)
    add_watchlist(env.registry)
    add_subject(env, "obama")
    enrol(env, "obama", image_bytes, "obama")
    with pytest.raises(Conflict) as conflict:
        enrol(env, "obama", image_bytes, "obama2")
    assert conflict.value.reason == "too_many_images"


def test_watchlist_delete_takes_its_vectors(env, image_bytes, vectors) -> None:
    add_watchlist(env.registry)
    add_watchlist(env.registry, "wl-2")
    add_subject(env, "obama")
    add_subject(env, "rose", "wl-2")
    enrol(env, "obama", image_bytes, "obama")
    enrol(env, "rose", image_bytes, "rose")
    env.registry.delete_watchlist("wl-1", actor="alice")
    assert found(env, vectors["obama"]) == ["rose"]  # only the other list's subject is left
    assert env.store.count() == 1
    record = list(env.audit.records())[-1]
    assert record.action == "watchlist.delete" and record.details["subject_ids"] == ["obama"]


class FlakyStore(QdrantStore):
    """A store whose next write fails as a store that went down does."""

    fail_next = False

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("qdrant upsert at test: connection refused")

    def upsert(self, entries) -> None:
        self._maybe_fail()
        super().upsert(entries)

    def set_subject_state(self, subject_id, *, status, expires_ts) -> int:
        self._maybe_fail()
        return super().set_subject_state(subject_id, status=status, expires_ts=expires_ts)


def test_a_store_failure_changes_nothing_and_audits_nothing(make_env, clock, image_bytes, vectors) -> None:
    store = FlakyStore(location=":memory:", clock=clock)
    env = make_env(clock=clock, store=store)
    add_watchlist(env.registry)
    add_subject(env, "obama")
    enrol(env, "obama", image_bytes, "obama")
    records = len(list(env.audit.records()))

    store.fail_next = True
    with pytest.raises(StoreUnavailable):
        env.registry.update_subject("obama", SubjectUpdate(status="suspended", reason="x"), actor="alice")
    subject = env.registry.get_subject("obama")
    assert subject.status == "active" and subject.reason == "warrant"
    assert found(env, vectors["obama"]) == ["obama"]

    store.fail_next = True
    with pytest.raises(StoreUnavailable):
        enrol(env, "obama", image_bytes, "obama2")
    assert len(env.registry.get_subject("obama").images) == 1 and store.count() == 1
    assert len(list(env.audit.records())) == records
    assert env.audit.verify().ok


def test_audit_failure_rolls_back_and_rebuilds_the_vectors(env, image_bytes, vectors, monkeypatch) -> None:
    add_watchlist(env.registry)
    add_subject(env, "obama")
    enrol(env, "obama", image_bytes, "obama")

    def broken(**_kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(env.audit, "append", broken)
    with pytest.raises(OSError, match="No space"):
        env.registry.delete_subject("obama", actor="alice")
    # not deleted, and searchable again (its vector rebuilt from the kept chip)
    assert env.registry.get_subject("obama").images
    assert found(env, vectors["obama"]) == ["obama"]
