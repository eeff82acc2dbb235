"""Per-subject thresholds in the registry: the cohort it needs, the statistics it stores at
enrolment, the operating point it calibrates for a deployment's snapshot, the refusal of a
global threshold the cohort does not support, re-scoring and re-calibration on a new cohort,
and a database from before per-subject thresholds."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from openlfr.cohort.cohort import Cohort, make_cohort
from openlfr.cohort.exceptions import CohortError
from openlfr.cohort.policy import DEFAULT_TARGET_FPIR, global_threshold_point, operating_point
from openlfr.registry.db import _SCHEMA_V1, SCHEMA_VERSION, RegistryDb
from openlfr.registry.exceptions import Invalid
from openlfr.registry.models import DeploymentCreate, DeploymentUpdate, SubjectCreate, WatchlistCreate
from openlfr.registry.settings import RegistrySettings
from openlfr.watchlist.qdrant_store import QdrantStore

# -- helpers -------------------------------------------------------------------------------


def add_subjects(env, watchlist_id: str, names: list[str], image_bytes) -> None:
    env.registry.create_watchlist(WatchlistCreate(id=watchlist_id, name=watchlist_id), actor="alice")
    for name in names:
        env.registry.create_subject(watchlist_id, SubjectCreate(
            id=name, display_name=name, category="wanted", reason="warrant", legal_basis="PACE s.1",
            expires_at=env.clock.at(days=30)), actor="alice")
        env.registry.enrol_image(name, image_bytes[name], source="case file", actor="alice")


def deploy(env, deployment_id: str, watchlist_id: str, camera: str, **over):
    values = dict(id=deployment_id, purpose="station", authorised_by="Supt. Roe", camera_ids=[camera],
                  start_at=env.clock.at(), end_at=env.clock.at(hours=2), watchlist_ids=[watchlist_id])
    values.update(over)
    return env.registry.create_deployment(DeploymentCreate(**values), actor="dave")


def body(env, **over) -> dict:
    values = {"purpose": "p", "authorised_by": "Supt. Roe", "camera_ids": ["cam-1"], "start_at": env.clock.iso(),
              "end_at": env.clock.iso(hours=2), "watchlist_ids": ["wl"]}
    values.update(over)
    return values


# -- the cohort it needs -------------------------------------------------------------------


def test_the_cohort_setting_is_required_and_says_how_to_build_one() -> None:
    with pytest.raises(ValidationError) as missing:
        RegistrySettings(db_path=Path(":memory:"))
    (error,) = missing.value.errors()
    assert error["loc"] == ("cohort",)
    assert "required" in error["msg"] and "openlfr cohort build" in error["msg"] and "--sample" in error["msg"]
    with pytest.raises(ValidationError, match="cohort"):
        RegistrySettings(db_path=Path(":memory:"), cohort="  ")


def test_a_cohort_of_another_model_is_refused_naming_the_setting(make_env, shared_cohort_faces) -> None:
    other_model = make_cohort(shared_cohort_faces, model_version="dlib_resnet@ffffffffffff")
    with pytest.raises(CohortError, match="OPENLFR_REGISTRY_COHORT: the cohort was embedded with dlib_resnet@ffff"):
        make_env(cohort=other_model)


# -- statistics at enrolment ---------------------------------------------------------------


def test_every_reference_is_stored_with_its_cohort_statistics(env, image_bytes, enrolled, cohort: Cohort) -> None:
    add_subjects(env, "wl", ["obama", "rose"], image_bytes)
    env.registry.enrol_image("obama", image_bytes["obama2"], source="case file", actor="alice")
    norm = cohort.norm()
    assert env.registry.cohort_id == cohort.short_id == norm.cohort_id
    rows = env.db.all("SELECT subject_id, norm_mu, norm_sd, norm_cohort FROM reference_images ORDER BY subject_id")
    assert len(rows) == 3 and {r["norm_cohort"] for r in rows} == {cohort.short_id}
    hit = env.store.search(enrolled["rose"], limit=1)[0]
    assert hit.subject_id == "rose" and hit.norm_cohort == cohort.short_id
    assert hit.distance < 1e-3  # the enrolment rule: the chip's and its mirror's descriptors averaged
    expected = norm.stats(enrolled["rose"])
    assert hit.norm.mu == pytest.approx(expected.mu, abs=1e-5) and hit.norm.sd == pytest.approx(expected.sd, abs=1e-5)
    rose = next(r for r in rows if r["subject_id"] == "rose")
    assert (rose["norm_mu"], rose["norm_sd"]) == pytest.approx((hit.norm.mu, hit.norm.sd), abs=1e-6)
    # A rebuild from the chips (here: removing obama's second image) keeps the statistics.
    second = [i.id for i in env.registry.get_subject("obama").images][1]
    env.registry.delete_image("obama", second, actor="alice")
    hit = env.store.search(enrolled["obama"], limit=1)[0]
    assert hit.subject_id == "obama" and hit.norm_cohort == cohort.short_id and hit.norm is not None
    record = [r for r in env.audit.records() if r.details.get("event") == "image_added"][0]
    assert record.details["cohort"] == cohort.short_id


# -- the operating point of a deployment ---------------------------------------------------


def test_a_larger_snapshot_gets_a_stricter_normalised_threshold(env, image_bytes, cohort: Cohort) -> None:
    add_subjects(env, "one", ["obama"], image_bytes)
    add_subjects(env, "three", ["rose", "kit", "obama_probe"], image_bytes)
    # A target the test cohort's held-out pairs resolve for these sizes (1/6000 would be a tail fit).
    small = deploy(env, "dep-small", "one", "cam-1", target_fpir=0.01)
    large = deploy(env, "dep-large", "three", "cam-2", target_fpir=0.01)
    assert (small.snapshot.active_subjects, large.snapshot.active_subjects) == (1, 3)
    for dep, size in ((small, 1), (large, 3)):
        point = dep.operating_point
        want = operating_point(cohort.calibration, watchlist_size=size, target_fpir=0.01)
        assert dep.threshold_mode == "per_subject" and dep.threshold == 0.70  # the floor: the registry's
        assert point.cohort == cohort.short_id and point.watchlist_size == size and point.target_fpir == 0.01
        assert point.normalised_threshold == pytest.approx(want.threshold)
        assert point.expected_fpir == pytest.approx(want.expected_fpir) and point.expected_fpir <= 0.01
        assert point.expected_fnmr == pytest.approx(want.expected_fnmr)
        assert point.expected_false_alerts_per_10000 == pytest.approx(point.expected_fpir * 10_000)
        assert point.accept_fpir is None and point.method == want.method
    assert large.operating_point.normalised_threshold > small.operating_point.normalised_threshold
    # The gate gives the match stage the stored threshold, with the floor.
    active = env.registry.active_for("cam-2", env.clock.now)
    assert active.norm_threshold == large.operating_point.normalised_threshold and active.threshold == 0.70
    record = [r for r in env.audit.records() if r.action == "deployment.create"][-1]
    assert record.details["operating_point"]["normalised_threshold"] == large.operating_point.normalised_threshold
    assert record.details["operating_point"]["watchlist_size"] == 3
    assert record.details["after"]["target_fpir"] == 0.01 and record.details["after"]["threshold_mode"] == "per_subject"


def test_an_empty_snapshot_is_calibrated_as_a_watchlist_of_one(env, cohort: Cohort) -> None:
    env.registry.create_watchlist(WatchlistCreate(id="wl", name="wl"), actor="alice")
    dep = deploy(env, "dep-1", "wl", "cam-1")
    assert dep.snapshot.active_subjects == 0 and dep.operating_point.watchlist_size == 1
    assert dep.operating_point.target_fpir == DEFAULT_TARGET_FPIR


def test_a_global_threshold_is_checked_against_the_cohort(env, image_bytes, cohort: Cohort) -> None:
    add_subjects(env, "wl", ["obama", "rose"], image_bytes)
    loose = global_threshold_point(cohort.calibration, threshold=0.75, watchlist_size=2)
    assert loose.expected_fpir > DEFAULT_TARGET_FPIR  # what makes the case: the cohort's strangers reach 0.75
    r = env.call("dave", "POST", "/v1/deployments", json=body(env, threshold_mode="global", threshold=0.75))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "threshold"]
    assert error["msg"].startswith("threshold 0.75 (threshold_mode global): on a watchlist of 2 the cohort ")
    assert f"{loose.expected_fpir:.3%} of strangers" in error["msg"] and "above target_fpir 0.000167" in error["msg"]
    assert "accept_fpir >=" in error["msg"]
    r = env.call("dave", "POST", "/v1/deployments",
                 json=body(env, threshold_mode="global", threshold=0.75, accept_fpir=loose.expected_fpir / 2))
    assert r.status_code == 422 and f"above the accept_fpir {loose.expected_fpir / 2:.3g} named" in r.text
    assert env.actions().count("deployment.create") == 0

    r = env.call("dave", "POST", "/v1/deployments",
                 json=body(env, id="dep-g", threshold_mode="global", threshold=0.75, accept_fpir=0.9))
    assert r.status_code == 201, r.text
    dep = r.json()
    assert dep["threshold_mode"] == "global" and dep["threshold"] == 0.75
    point = dep["operating_point"]
    assert point["normalised_threshold"] is None and point["accept_fpir"] == 0.9
    assert point["expected_fpir"] == pytest.approx(loose.expected_fpir) and point["watchlist_size"] == 2
    active = env.registry.active_for("cam-1", env.clock.now)
    assert active.norm_threshold is None and active.threshold == 0.75  # one raw threshold, as before


@pytest.mark.parametrize(
    ("over", "loc", "message"),
    [
        ({"threshold_mode": "global"}, [], "threshold: required with threshold_mode 'global'"),
        ({"accept_fpir": 0.01}, [], "accept_fpir: applies to a global threshold only"),
        ({"threshold_mode": "global", "threshold": 0.99, "accept_fpir": 1e-5}, [], "is below target_fpir"),
        ({"target_fpir": 0}, ["body", "target_fpir"], "greater than 0"),
        ({"target_fpir": 1}, ["body", "target_fpir"], "less than 1"),
        ({"threshold_mode": "both"}, ["body", "threshold_mode"], "'per_subject' or 'global'"),
        ({"threshold": 0.6}, ["body", "threshold"], "0.6 is below the floor of 0.7"),
        ({"threshold_mode": "global", "threshold": 0.6}, ["body", "threshold"], "below the floor"),
    ],
)
def test_threshold_refusals(env, over: dict, loc: list, message: str) -> None:
    env.registry.create_watchlist(WatchlistCreate(id="wl", name="wl"), actor="alice")
    r = env.call("dave", "POST", "/v1/deployments", json=body(env, **over))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert message in error["msg"] and (not loc or error["loc"] == loc), error


def test_a_new_target_recomputes_the_point_and_is_audited(env, image_bytes, cohort: Cohort) -> None:
    add_subjects(env, "wl", ["obama", "rose", "kit"], image_bytes)
    r = env.call("dave", "POST", "/v1/deployments", json=body(env, id="dep-1", target_fpir=0.01, threshold=0.72))
    before = r.json()["operating_point"]
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"target_fpir": 0.002})
    assert r.status_code == 200, r.text
    after = r.json()
    want = operating_point(cohort.calibration, watchlist_size=3, target_fpir=0.002)
    assert after["operating_point"]["normalised_threshold"] == pytest.approx(want.threshold)
    assert after["operating_point"]["normalised_threshold"] > before["normalised_threshold"]
    assert after["operating_point"]["target_fpir"] == 0.002 and after["threshold"] == 0.72
    assert env.registry.active_for("cam-1", env.clock.now).norm_threshold == pytest.approx(want.threshold)
    record = list(env.audit.records())[-1]
    assert record.action == "deployment.threshold" and record.actor == "dave"
    assert record.details["target_fpir"] == {"before": 0.01, "after": 0.002}
    assert record.details["operating_point"]["before"]["normalised_threshold"] == before["normalised_threshold"]
    assert record.details["operating_point"]["after"]["normalised_threshold"] == pytest.approx(want.threshold)
    # The floor alone changes nothing the cohort reads; accept_fpir is for global thresholds.
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"threshold": 0.74})
    assert r.status_code == 200 and r.json()["operating_point"] == after["operating_point"]
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"accept_fpir": 0.5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "accept_fpir"]


def test_a_looser_global_threshold_needs_an_accepted_rate(env, image_bytes, cohort: Cohort) -> None:
    add_subjects(env, "wl", ["obama"], image_bytes)
    r = env.call("dave", "POST", "/v1/deployments",
                 json=body(env, id="dep-1", threshold_mode="global", threshold=0.95))
    assert r.status_code == 201, r.text  # strict enough for 1/6000 on a list of one
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"threshold": 0.75})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "threshold"]
    assert env.registry.active_for("cam-1", env.clock.now).threshold == 0.95
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"threshold": 0.75, "accept_fpir": 0.9})
    assert r.status_code == 200, r.text
    point = r.json()["operating_point"]
    want = global_threshold_point(cohort.calibration, threshold=0.75, watchlist_size=1)
    assert point["expected_fpir"] == pytest.approx(want.expected_fpir) and point["accept_fpir"] == 0.9
    assert env.registry.active_for("cam-1", env.clock.now).threshold == 0.75


# -- a new cohort --------------------------------------------------------------------------


def test_a_new_cohort_rescores_references_and_recalibrates_running_deployments(
    make_env, tmp_path: Path, clock, image_bytes, enrolled, cohort: Cohort, other_cohort: Cohort
) -> None:
    assert other_cohort.short_id != cohort.short_id
    db_path = tmp_path / "registry.sqlite3"
    store = QdrantStore(location=":memory:", clock=clock)
    first = make_env(db_path=db_path, clock=clock, store=store)
    add_subjects(first, "wl", ["obama", "rose"], image_bytes)
    first.registry.enrol_image("obama", image_bytes["obama2"], source="case file", actor="alice")
    dep = deploy(first, "dep-1", "wl", "cam-1", target_fpir=0.01)
    assert first.registry.rescored.subjects == 0  # nothing to re-score on a fresh database
    first.registry.close()
    first.db.close()

    second = make_env(db_path=db_path, clock=clock, store=store, cohort=other_cohort)
    report = second.registry.rescored
    assert (report.subjects, report.images, report.failed) == (2, 3, [])
    assert report.previous == {cohort.short_id: 3} and report.cohort == other_cohort.short_id
    norm = other_cohort.norm()
    hit = store.search(enrolled["rose"], limit=1)[0]
    assert hit.subject_id == "rose" and hit.norm_cohort == other_cohort.short_id
    assert hit.norm.mu == pytest.approx(norm.stats(enrolled["rose"]).mu, abs=1e-5)
    assert {r["norm_cohort"] for r in second.db.all("SELECT norm_cohort FROM reference_images")} == {
        other_cohort.short_id}
    assert store.count() == 4  # obama's two references and their template, rose's one
    # The snapshot still holds them: rebuilt with their enrolment times.
    assert store.count_subjects(watchlist_ids=["wl"], enrolled_before=dep.snapshot.snapshot_ts) == 2
    rescored = [r for r in second.audit.records() if r.details.get("event") == "references_rescored"]
    assert sorted(r.target for r in rescored) == ["subject/obama", "subject/rose"]
    assert rescored[0].details["cohort"] == {"before": [cohort.short_id], "after": other_cohort.short_id}

    moved = second.registry.get_deployment("dep-1").operating_point
    want = operating_point(other_cohort.calibration, watchlist_size=2, target_fpir=0.01)
    assert moved.cohort == other_cohort.short_id and moved.normalised_threshold == pytest.approx(want.threshold)
    assert second.registry.active_for("cam-1", clock.now).norm_threshold == pytest.approx(want.threshold)
    (recal,) = [r for r in second.audit.records() if r.details.get("event") == "cohort_changed"]
    assert recal.action == "deployment.threshold" and recal.target == "deployment/dep-1"
    assert recal.details["cohort"] == {"before": cohort.short_id, "after": other_cohort.short_id}
    assert second.audit.verify().ok
    second.registry.close()
    second.db.close()
    # Started again with the same cohort: nothing more to do, nothing audited.
    records = len(list(second.audit.records()))
    third = make_env(db_path=db_path, clock=clock, store=store, cohort=other_cohort)
    assert third.registry.rescored.subjects == 0
    assert len(list(third.audit.records())) == records


# -- a database from before per-subject thresholds -----------------------------------------

_V1_DEPLOYMENT_COLUMNS = (
    "id, purpose, authorised_by, created_by, start_ts, end_ts, threshold, status, snapshot_ts, snapshot_subjects, "
    "snapshot_images, snapshot_fingerprint, model_version, created_ts, updated_ts, ended_ts, ended_by, end_reason"
)
_V1_WATCHLIST_COLUMNS = "id, name, description, created_by, created_ts, updated_ts"
_V1_IMAGE_COLUMNS = (
    "subject_id, id, sha256, source, added_by, added_ts, chip_jpeg, chip_png, face_px, inter_eye_px, blur, yaw, "
    "roll_deg, detector_score, quality_score"
)


def _as_v1(source: Path, target: Path) -> None:
    """Write ``target`` as the version-1 layout would have held ``source``'s rows."""
    conn = sqlite3.connect(target)
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_ts REAL NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    for table, columns in (("watchlists", _V1_WATCHLIST_COLUMNS), ("subjects", "*"), ("reference_images", _V1_IMAGE_COLUMNS),
                           ("deployments", _V1_DEPLOYMENT_COLUMNS), ("deployment_cameras", "*"),
                           ("deployment_watchlists", "*"), ("deployment_stats", "*")):
        conn.execute(f"INSERT INTO {table} SELECT {columns} FROM src.{table}")  # noqa: S608 - constants
    conn.commit()
    conn.execute("DETACH DATABASE src")
    conn.close()


def test_a_version_1_database_is_migrated_and_its_deployments_work_as_before(
    make_env, tmp_path: Path, clock, image_bytes, enrolled, cohort: Cohort
) -> None:
    made = tmp_path / "made.sqlite3"
    env = make_env(db_path=made, clock=clock)
    add_subjects(env, "wl", ["obama"], image_bytes)
    deploy(env, "dep-old", "wl", "cam-1", threshold=0.72)
    env.registry.close()
    env.db.close()
    old = tmp_path / "v1.sqlite3"
    _as_v1(made, old)
    with sqlite3.connect(old) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
        assert "norm_cohort" not in [r[1] for r in conn.execute("PRAGMA table_info(reference_images)")]

    store = QdrantStore(location=":memory:", clock=clock)  # an empty store: rebuilt from the chips
    legacy = make_env(db_path=old, clock=clock, store=store)
    versions = [r["version"] for r in legacy.db.all("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    dep = legacy.registry.get_deployment("dep-old")
    assert dep.threshold_mode == "global" and dep.threshold == 0.72 and dep.operating_point is None
    active = legacy.registry.active_for("cam-1", clock.now)
    assert active.threshold == 0.72 and active.norm_threshold is None  # decided as before: one raw threshold
    # Its references had no statistics: scored against the cohort at start, from their chips.
    assert legacy.registry.rescored.previous == {"none": 1}
    hit = store.search(enrolled["obama"], limit=1)[0]
    assert hit.subject_id == "obama" and hit.norm_cohort == cohort.short_id
    assert math.isclose(hit.distance, 0.0, abs_tol=1e-3)  # the enrolled vector, rebuilt exactly
    # A threshold change is a decision under today's policy: checked against the cohort.
    with pytest.raises(Invalid, match="above target_fpir") as refused:
        legacy.registry.update_deployment("dep-old", DeploymentUpdate(threshold=0.71), actor="dave")
    assert refused.value.field == "threshold"
    changed = legacy.registry.update_deployment("dep-old", DeploymentUpdate(threshold=0.99), actor="dave")
    assert changed.operating_point is not None and changed.operating_point.target_fpir == DEFAULT_TARGET_FPIR


def test_v1_rows_pass_the_v2_checks(tmp_path: Path) -> None:
    """The columns v2 adds hold for every v1 row: a v1 deployment is global, and a per-subject
    row cannot be written without its normalised threshold."""
    db = RegistryDb(tmp_path / "r.sqlite3")
    with db.transaction() as conn:
        conn.execute("INSERT INTO watchlists (id, name, description, created_by, created_ts, updated_ts) "
                     "VALUES ('wl', 'n', '', 'a', 0, 0)")
    with pytest.raises(sqlite3.IntegrityError, match="norm_threshold"), db.transaction() as conn:
        conn.execute(
            f"INSERT INTO deployments ({_V1_DEPLOYMENT_COLUMNS}, threshold_mode) VALUES "
            "('d', 'p', 'a', 'c', 0, 1, 0.8, 'active', 0, 0, 0, 'f', 'm', 0, 0, NULL, NULL, NULL, 'per_subject')"
        )
    with db.transaction() as conn:
        conn.execute(
            f"INSERT INTO deployments ({_V1_DEPLOYMENT_COLUMNS}) VALUES "
            "('d', 'p', 'a', 'c', 0, 1, 0.8, 'active', 0, 0, 0, 'f', 'm', 0, 0, NULL, NULL, NULL)"
        )
    assert db.one("SELECT threshold_mode FROM deployments WHERE id = 'd'")["threshold_mode"] == "global"
    db.close()

