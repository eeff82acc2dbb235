"""A whole watchlist suspended on the registry: audited, its subjects left out of the deployment
gate's watchlists, so the match stage does not search them; resumed, they are searched again
(each as its own status says). Real faces and the real match stage over the registry's store."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.models import EmbeddedFace, Embeddings, FaceQualityRecord
from openlfr.messages.signing import MatchSigner
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import Incoming

from .test_registry_thresholds import add_subjects, deploy


def _quality() -> FaceQualityRecord:
    return FaceQualityRecord(face_px=150.0, inter_eye_px=60.0, blur=900.0, yaw=0.0, roll_deg=0.0,
                             detector_score=0.99, score=0.95)


def _frame(env, n: int, vector: np.ndarray, camera: str) -> Embeddings:
    chip = cv2.imencode(".png", np.full((150, 150, 3), 128, np.uint8))[1].tobytes()
    face = EmbeddedFace(index=0, box=(100.0, 100.0, 250.0, 250.0), score=0.99, landmarks=((0.0, 0.0),) * 5,
                        quality=_quality(), chip_png=chip, embedding=EmbeddedFace.pack(vector))
    return Embeddings(camera_id=camera, frame_id=f"{camera}-f{n}", capture_ts=env.clock.now + 1 + 0.2 * n,
                      trace_id=f"trace-{n:05d}", width=1280, height=720, faces=(face,), detector_model="blazeface",
                      embedder_model=env.registry.model_version)


def _searched_subjects(env, camera: str, vector: np.ndarray) -> list[str]:
    """The subjects the match stage's store search returns for ``vector`` under the deployment
    the registry's gate gives for ``camera`` (nothing when the gate gives none)."""
    active = env.registry.active_for(camera, env.clock.now + 1)
    if active is None:
        return []
    hits = env.store.search(vector, limit=5, watchlist_ids=active.watchlist_ids, enrolled_before=active.snapshot_ts)
    return [h.subject_id for h in hits]


def test_suspend_and_resume_a_watchlist_over_http_audited_and_refused_to_others(env, image_bytes) -> None:
    add_subjects(env, "wl", ["obama"], image_bytes)
    r = env.call("vera", "POST", "/v1/watchlists/wl/suspend")
    assert r.status_code == 403 and "watchlist_admin" in r.json()["detail"]
    assert env.call("alice", "POST", "/v1/watchlists/nope/suspend").status_code == 404
    r = env.call("alice", "POST", "/v1/watchlists/wl/suspend")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["suspended"] is True and body["suspended_by"] == "alice" and body["suspended_at"]
    assert env.call("vera", "GET", "/v1/watchlists/wl").json()["suspended"] is True
    assert env.call("alice", "POST", "/v1/watchlists/wl/suspend").json()["suspended"] is True  # no change
    r = env.call("alice", "POST", "/v1/watchlists/wl/resume")
    assert r.status_code == 200 and r.json()["suspended"] is False and r.json()["suspended_by"] is None
    records = [rec for rec in env.audit.records() if rec.action.startswith("watchlist.s")
               or rec.action == "watchlist.resume"]
    assert [(rec.action, rec.actor, rec.target) for rec in records] == [
        ("watchlist.suspend", "alice", "watchlist/wl"), ("watchlist.resume", "alice", "watchlist/wl")]
    assert records[0].details["after"] == {"suspended": True}
    denied = [rec for rec in env.audit.records() if rec.action == "access.denied"]
    assert denied and denied[0].target == "POST /v1/watchlists/wl/suspend"


def test_a_suspended_watchlists_subjects_are_not_searched_and_come_back_on_resume(env, image_bytes, vectors) -> None:
    add_subjects(env, "wl-a", ["obama"], image_bytes)
    add_subjects(env, "wl-b", ["rose"], image_bytes)
    deploy(env, "dep-both", "wl-a", "cam-1", watchlist_ids=["wl-a", "wl-b"])
    deploy(env, "dep-a", "wl-a", "cam-2")
    assert env.registry.active_for("cam-1", env.clock.now + 1).watchlist_ids == ("wl-a", "wl-b")
    assert _searched_subjects(env, "cam-1", vectors["obama_probe"])[0] == "obama"

    env.registry.set_watchlist_suspended("wl-a", suspended=True, actor="alice")
    # The deployment over both searches wl-b only; the one over wl-a alone covers its camera no more.
    assert env.registry.active_for("cam-1", env.clock.now + 1).watchlist_ids == ("wl-b",)
    assert "obama" not in _searched_subjects(env, "cam-1", vectors["obama_probe"])
    assert _searched_subjects(env, "cam-1", vectors["rose"])[0] == "rose"
    assert env.registry.active_for("cam-2", env.clock.now + 1) is None
    assert env.registry.get_subject("obama").status == "active"  # the subject itself is untouched

    env.registry.set_watchlist_suspended("wl-a", suspended=False, actor="alice")
    assert env.registry.active_for("cam-1", env.clock.now + 1).watchlist_ids == ("wl-a", "wl-b")
    assert _searched_subjects(env, "cam-1", vectors["obama_probe"])[0] == "obama"
    assert env.registry.active_for("cam-2", env.clock.now + 1).deployment_id == "dep-a"


@pytest.mark.parametrize("suspended", [False, True])
def test_the_match_stage_over_the_registry_matches_only_while_the_watchlist_is_not_suspended(
    env, image_bytes, vectors, suspended: bool
) -> None:
    add_subjects(env, "wl", ["obama"], image_bytes)
    deploy(env, "dep-1", "wl", "cam-1", threshold_mode="global", threshold=0.705, accept_fpir=0.5)  # no cohort at the stage
    if suspended:
        env.registry.set_watchlist_suspended("wl", suspended=True, actor="alice")
    stage = MatchStage(MatchSettings(decision="votes", min_votes=2), store=env.store, gate=env.registry,
                       registry=CollectorRegistry(), signer=MatchSigner.ephemeral(), max_clock_skew_s=None)
    outputs, dropped = [], {}
    for n in range(4):
        result = stage.handle([Incoming(_frame(env, n, vectors["obama_probe"], "cam-1"), 0, n)], now=env.clock.now + 5)
        outputs += result.outputs
        for reason, k in result.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + k
    if suspended:
        assert outputs == [] and dropped == {"no_deployment": 4}
    else:
        assert not dropped, dropped
        assert [o.message.subject_id for o in outputs] == ["obama"]


def test_a_version_3_registry_file_gains_the_watchlist_status(tmp_path) -> None:
    import sqlite3

    from openlfr.registry import db as db_module
    from openlfr.registry.db import RegistryDb

    path = tmp_path / "v3.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_ts REAL NOT NULL)")
    for version in (1, 2, 3):
        for statement in db_module._MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute("INSERT INTO watchlists VALUES ('wl', 'n', 'd', 'alice', 1, 1)")
    conn.commit()
    conn.close()
    db = RegistryDb(path)
    try:
        assert db.schema_version == 4
        row = db.one("SELECT suspended_ts, suspended_by FROM watchlists WHERE id = 'wl'")
        assert (row["suspended_ts"], row["suspended_by"]) == (None, None)
    finally:
        db.close()
