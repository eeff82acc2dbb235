"""Moving a running registry to another embedder: subjects enrolled with dlib's ResNet, the
service restarted with HSE FaceRes (a store of its own, a cohort of its model); watchlists
report ``reembedding_needed`` and their deployment does not match until ``POST /v1/reembed``
has moved every subject from the kept chips; the CLI starts and follows it against a live app."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from openlfr import cli, paths
from openlfr.cohort.cohort import Cohort
from openlfr.config import ModelSettings
from openlfr.models.manifest import FACERES_MANIFEST
from openlfr.registry.models import DeploymentCreate, SubjectCreate, WatchlistCreate
from openlfr.service.http import run_http_in_thread
from openlfr.vision.images import load_image
from openlfr.watchlist.qdrant_store import QdrantStore

from .conftest import IMAGES, FakeClock

#: subject -> enrolment images (names of conftest.IMAGES).
SUBJECTS = {"obama": ["obama", "obama2"], "rose": ["rose"], "kit": ["kit"]}
DLIB = ModelSettings().embedder_version()
FACERES = ModelSettings(embedder="faceres_v1").embedder_version()


@pytest.fixture(scope="module")
def faceres_analyzer(model_dir: Path, local_backend):  # noqa: ANN201 - FaceAnalyzer
    from openlfr.vision.factory import build_analyzer

    if not (model_dir / FACERES_MANIFEST.onnx_file).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and faceres_v1.onnx is missing: set-up fetches the npm weights and builds it")
        pytest.skip("faceres_v1 not built (needs npm: scripts/human-models-fetch.sh, openlfr models build)")
    return build_analyzer(ModelSettings(embedder="faceres_v1"), backend=local_backend, keep_chips=True)


def _cohort_of(faces_dir: Path, analyzer, settings: ModelSettings, model_version: str) -> Cohort:  # noqa: ANN001
    """A cohort of real shared-set faces (160 UTKFace crops, the dlib johns) embedded by one model:
    built here, so the test needs nothing set-up may not have made."""
    from openlfr.cohort.cohort import CohortFace, make_cohort
    from openlfr.evaluation.embeddings import EmbeddingCache, analyse_files, analyzer_version

    utk = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[:160]
    johns = sorted((faces_dir / "dlib" / "examples" / "johns").rglob("*.jpg"))
    inputs = [(p, "") for p in utk] + [(p, p.parent.name) for p in johns]
    cache = EmbeddingCache(paths.build_dir() / "eval-cache", analyzer_version(settings))
    faces = []
    for (path, identity), result in zip(inputs, analyse_files([p for p, _ in inputs], analyzer=analyzer, cache=cache),
                                        strict=True):
        if result.faces is not None and len(result.faces):
            widths = result.faces.boxes[:, 2] - result.faces.boxes[:, 0]
            faces.append(CohortFace(vector=result.faces.embeddings[int(widths.argmax())], sha256=result.sha256,
                                    identity=identity))
    return make_cohort(faces, model_version=model_version, meta={"source": "re-embedding tests"})


@pytest.fixture(scope="module")
def cohorts(faces_dir: Path, analyzer, faceres_analyzer) -> dict[str, Cohort]:  # noqa: ANN001
    return {
        DLIB: _cohort_of(faces_dir, analyzer, ModelSettings(), DLIB),
        FACERES: _cohort_of(faces_dir, faceres_analyzer, ModelSettings(embedder="faceres_v1"), FACERES),
    }


@pytest.fixture
def moved(make_env, tmp_path: Path, image_bytes, faceres_analyzer, cohorts):  # noqa: ANN201 - (old, new) envs
    """A registry with three subjects enrolled by dlib and a deployment over them, then the
    service restarted on the same database with FaceRes (its store and cohort)."""
    clock = FakeClock(time.time())
    db_path = tmp_path / "registry.db"
    old = make_env(db_path=db_path, clock=clock, cohort=cohorts[DLIB], model_version=DLIB,
                   store=QdrantStore(location=":memory:", dim=128, model_version=DLIB, clock=clock))
    reg = old.registry
    reg.create_watchlist(WatchlistCreate(id="wl-1", name="wl-1"), actor="alice")
    for subject, images in SUBJECTS.items():
        reg.create_subject("wl-1", SubjectCreate(id=subject, display_name=subject, category="wanted",
                                                 reason="warrant", legal_basis="PACE s.1",
                                                 expires_at=clock.at(days=30)), actor="alice")
        for name in images:
            reg.enrol_image(subject, image_bytes[name], source="case file", actor="alice")
    clock.advance(1)
    reg.create_deployment(DeploymentCreate(
        id="dep-1", purpose="station", authorised_by="Supt. Roe", camera_ids=["cam-1"], start_at=clock.at(),
        end_at=clock.at(hours=2), watchlist_ids=["wl-1"]), actor="dave")
    assert reg.active_for("cam-1", clock.now + 1) is not None
    new = make_env(db_path=db_path, clock=clock, cohort=cohorts[FACERES],
                   model_version=FACERES, analyzer=faceres_analyzer,
                   store=QdrantStore(location=":memory:", dim=1024, model_version=FACERES, clock=clock))
    return old, new


def _probe(analyzer, faces_dir: Path, name: str):  # noqa: ANN202 - np.ndarray
    faces = analyzer.analyze(load_image(faces_dir / IMAGES[name]))
    assert len(faces) == 1
    return faces.embeddings[0]


def test_a_new_embedder_withholds_deployments_until_reembedding_moves_every_subject(
    moved, faceres_analyzer, analyzer, faces_dir: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from openlfr.registry.metrics import register_registry_metrics

    old, new = moved
    reg, now = new.registry, new.clock.now + 1
    scraped = CollectorRegistry()
    register_registry_metrics(reg, collectors=scraped)
    # Before: the references are dlib's; the new store is empty, and nothing silently runs on it.
    assert new.store.count() == 0
    wl = new.call("vera", "GET", "/v1/watchlists/wl-1").json()
    assert wl["status"] == "reembedding_needed" and wl["subjects_to_reembed"] == 3
    ready = new.http.get("/readyz")
    assert ready.status_code == 200 and "reembedding_needed" in ready.text and "wl-1 (3 subjects)" in ready.text
    assert reg.active_for("cam-1", now) is None
    assert reg.withheld_lookups == {"dep-1": 1}
    assert scraped.get_sample_value("openlfr_registry_withheld_lookups_total", {"deployment": "dep-1"}) == 1
    assert scraped.get_sample_value("openlfr_registry_deployments_withheld") == 1
    assert scraped.get_sample_value("openlfr_registry_subjects_to_reembed") == 3
    dep = new.call("vera", "GET", "/v1/deployments/dep-1").json()
    assert dep["matching"] is False and "wl-1" in dep["not_matching_reason"]
    assert new.call("vera", "GET", "/v1/reembed").json()["state"] == "idle"

    # Only a watchlist admin may start it.
    assert new.call("vera", "POST", "/v1/reembed").status_code == 403
    assert new.call(None, "POST", "/v1/reembed").status_code == 401
    started = new.call("alice", "POST", "/v1/reembed")
    assert started.status_code == 202, started.text
    assert started.json()["total"] == 4 and started.json()["started_by"] == "alice"
    assert reg.wait_reembed(timeout=600)

    status = new.call("vera", "GET", "/v1/reembed").json()
    assert status["state"] == "completed", status
    assert (status["done"], status["total"]) == (4, 4)
    assert sorted(status["subjects_moved"]) == ["kit", "obama", "rose"]
    assert status["failed"] == [] and status["lost_subjects"] == [] and status["watchlists_needing"] == {}
    rows = new.db.all("SELECT model_version, norm_cohort, COUNT(*) AS n FROM reference_images "
                      "GROUP BY model_version, norm_cohort")
    assert [(r["model_version"], r["norm_cohort"], r["n"]) for r in rows] == [(FACERES, reg.cohort_id, 4)]

    # Obama's two references and their template, rose's and kit's one each (the enrolment rules).
    assert new.store.count() == 5 and old.store.count() == 5
    # A FaceRes probe finds the right subject in the new store; each store holds its own model only.
    hits = new.store.search(_probe(faceres_analyzer, faces_dir, "obama_probe"), limit=3)
    assert hits[0].subject_id == "obama"
    assert new.store.count_subjects() == 3 and old.store.count_subjects() == 3
    assert old.store.search(_probe(analyzer, faces_dir, "obama_probe"), limit=1)[0].subject_id == "obama"
    with pytest.raises(ValueError):
        old.store.search(_probe(faceres_analyzer, faces_dir, "obama_probe"), limit=1)

    # The deployment matches again; the watchlist is ready; the audit log has who and how many.
    assert reg.active_for("cam-1", now).deployment_id == "dep-1"
    assert scraped.get_sample_value("openlfr_registry_deployments_withheld") == 0
    assert scraped.get_sample_value("openlfr_registry_subjects_to_reembed") == 0
    assert new.call("vera", "GET", "/v1/deployments/dep-1").json()["matching"] is True
    assert new.call("vera", "GET", "/v1/watchlists/wl-1").json()["status"] == "ready"
    records = [r for r in new.audit.records() if r.action == "watchlist.reembed"]
    assert [(r.actor, r.details["event"]) for r in records] == [("alice", "started"), ("alice", "completed")]
    assert records[0].details["references"] == 4 and records[1].details["subjects_moved"] == 3
    assert records[1].details["lost_subjects"] == []

    # After the move, a change to a moved subject rebuilds its vectors the new model's way.
    image = reg.get_subject("obama").images[0].id
    reg.delete_image("obama", image, actor="alice")
    assert new.store.search(_probe(faceres_analyzer, faces_dir, "obama_probe"), limit=1)[0].subject_id == "obama"


def test_a_second_start_while_one_runs_is_a_409(moved, monkeypatch) -> None:
    import threading

    _, new = moved
    reg = new.registry
    go = threading.Event()
    real = reg._reembed_subject

    def held(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the job waits before its first subject
        go.wait(timeout=600)
        return real(*args, **kwargs)

    monkeypatch.setattr(reg, "_reembed_subject", held)
    try:
        assert new.call("alice", "POST", "/v1/reembed").status_code == 202
        again = new.call("alice", "POST", "/v1/reembed")
        assert again.status_code == 409, again.text
        assert "already running (started by alice, 0 of 4 references done)" in again.text
    finally:
        go.set()
    assert reg.wait_reembed(timeout=600)
    assert new.call("vera", "GET", "/v1/reembed").json()["state"] == "completed"
    started = [r for r in new.audit.records() if r.details.get("event") == "started"]
    assert len(started) == 1  # the refused start changed nothing


def test_references_enrolled_under_faceres_keep_dlibs_chip_and_move_back(
    moved, make_env, image_bytes, analyzer, cohorts, faces_dir: Path
) -> None:
    """Under another embedder the registry still keeps dlib's 150x150 chip (the whole face), so a
    subject enrolled under FaceRes moves back to dlib's ResNet with nothing lost."""
    import cv2
    import numpy as np

    _, new = moved
    reg = new.registry
    reg.start_reembed(actor="alice")
    assert reg.wait_reembed(timeout=600)
    reg.create_subject("wl-1", SubjectCreate(id="obama-2", display_name="obama again", category="wanted",
                                             reason="warrant", legal_basis="PACE s.1",
                                             expires_at=new.clock.at(days=30)), actor="alice")
    reg.enrol_image("obama-2", image_bytes["obama_probe"], source="case file", actor="alice")
    for row in new.db.all("SELECT chip_png FROM reference_images"):
        chip = cv2.imdecode(np.frombuffer(bytes(row["chip_png"]), np.uint8), cv2.IMREAD_COLOR)
        assert chip.shape == (150, 150, 3)
    reg.close()
    new.db.close()

    back = make_env(db_path=new.db.path, clock=new.clock, cohort=cohorts[DLIB], model_version=DLIB,
                    store=QdrantStore(location=":memory:", dim=128, model_version=DLIB, clock=new.clock))
    assert back.call("vera", "GET", "/v1/watchlists/wl-1").json()["subjects_to_reembed"] == 4
    assert back.call("alice", "POST", "/v1/reembed").status_code == 202
    assert back.registry.wait_reembed(timeout=600)
    status = back.call("vera", "GET", "/v1/reembed").json()
    assert status["state"] == "completed" and status["failed"] == [] and status["lost_subjects"] == []
    assert sorted(status["subjects_moved"]) == ["kit", "obama", "obama-2", "rose"]
    hits = back.store.search(_probe(analyzer, faces_dir, "obama2"), limit=2)
    assert {h.subject_id for h in hits} == {"obama", "obama-2"}
    assert back.registry.active_for("cam-1", back.clock.now + 1).deployment_id == "dep-1"


def test_the_cli_starts_and_follows_the_reembedding(moved, monkeypatch, capsys) -> None:
    _, new = moved
    server = run_http_in_thread(new.app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}"
    try:
        monkeypatch.setenv(cli.TOKEN_ENV, new.tokens["vera"][0])
        assert cli.main(["watchlist", "reembed", "--api", url, "--wait"]) == 1
        err = capsys.readouterr().err
        assert "HTTP 403" in err and "watchlist_admin" in err
        monkeypatch.setenv(cli.TOKEN_ENV, new.tokens["alice"][0])
        rc = cli.main(["watchlist", "reembed", "--api", url, "--wait", "--poll-s", "0.2"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert f"into {FACERES}: completed (4/4 references; 3 subjects moved" in out.out
        assert "re-embedding started" in out.err
        assert new.registry.active_for("cam-1", new.clock.now + 1).deployment_id == "dep-1"
    finally:
        server.stop()
