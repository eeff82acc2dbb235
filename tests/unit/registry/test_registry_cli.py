"""``openlfr watchlist enroll``, ``openlfr deployment ...`` and ``openlfr openapi`` against a
registry served by uvicorn (real clock: the commands compute expiry and windows from now)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr import cli
from openlfr.service.http import run_http_in_thread


@pytest.fixture
def served(make_env) -> Iterator[tuple[object, str]]:
    env = make_env(clock=time.time)
    server = run_http_in_thread(env.app, "127.0.0.1", 0)
    yield env, f"http://127.0.0.1:{server.port}"
    server.stop()


def _as(monkeypatch: pytest.MonkeyPatch, env, who: str | None) -> None:
    if who is None:
        monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.TOKEN_ENV, env.tokens[who][0])


def test_enrol_a_folder_then_deploy_show_list_and_end(served, monkeypatch, tmp_path: Path, image_bytes, capsys) -> None:
    env, url = served
    (tmp_path / "people" / "obama").mkdir(parents=True)
    (tmp_path / "people" / "obama" / "a.jpg").write_bytes(image_bytes["obama"])
    (tmp_path / "people" / "obama" / "dogs.jpg").write_bytes(image_bytes["no_face"])
    _as(monkeypatch, env, "alice")
    rc = cli.main(["watchlist", "enroll", str(tmp_path / "people"), "--api", url, "--watchlist-id", "wl-cli",
                   "--reason", "warrant 1", "--legal-basis", "PACE s.24", "--source", "custody photo",
                   "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "watchlist wl-cli created" in out.err
    assert "1 subjects created, 1 images enrolled" in out.out and "no_face" in out.out
    assert env.registry.get_subject("obama").reason == "warrant 1"

    _as(monkeypatch, env, "dave")
    rc = cli.main(["deployment", "create", "--api", url, "--id", "dep-cli", "--purpose", "match day",
                   "--authorised-by", "Supt. Example", "--cameras", "gate-1", "gate-2", "--watchlists", "wl-cli",
                   "--start", "now", "--end", "now+2h", "--threshold", "0.75"])
    created = json.loads(capsys.readouterr().out)
    assert rc == 0 and created["id"] == "dep-cli" and created["camera_ids"] == ["gate-1", "gate-2"]
    assert created["threshold"] == 0.75 and created["snapshot"]["active_subjects"] == 1
    assert env.registry.active_for("gate-1", time.time() + 60).deployment_id == "dep-cli"

    assert cli.main(["deployment", "show", "dep-cli", "--api", url]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "active"
    assert cli.main(["deployment", "list", "--api", url]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)["items"]] == ["dep-cli"]
    assert cli.main(["deployment", "end", "dep-cli", "--api", url, "--reason", "match over"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ended"
    assert env.registry.active_for("gate-1", time.time() + 60) is None


def test_refusals_are_reported_not_raised(served, monkeypatch, capsys) -> None:
    env, url = served
    _as(monkeypatch, env, None)
    assert cli.main(["deployment", "list", "--api", url]) == 2
    assert cli.TOKEN_ENV in capsys.readouterr().err
    _as(monkeypatch, env, "rex")  # a reviewer may not authorise deployments
    rc = cli.main(["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x",
                   "--cameras", "c", "--watchlists", "none"])
    assert rc == 1 and "403" in capsys.readouterr().err
    _as(monkeypatch, env, "dave")
    rc = cli.main(["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x",
                   "--cameras", "c", "--watchlists", "none", "--threshold", "0.5"])
    assert rc == 1 and "422" in capsys.readouterr().err
    assert cli.main(["deployment", "list", "--api", "http://127.0.0.1:9"]) == 1


def test_openapi_prints_every_service_document(capsys) -> None:
    assert cli.main(["openapi"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert sorted(docs) == ["alert", "detect", "embed", "ingest", "match"]
    for name in ("ingest", "detect", "embed"):
        assert set(docs[name]["paths"]) == {"/healthz", "/readyz"}
    assert "/v1/deployments/{deployment_id}" in docs["match"]["paths"]
    assert "/v1/subjects/{subject_id}/images" in docs["match"]["paths"]
    assert "/v1/alerts/{alert_id}/reviews" in docs["alert"]["paths"]
    assert "/v1/deployments/{deployment_id}/report" in docs["alert"]["paths"]
    assert all(doc["openapi"].startswith("3.") for doc in docs.values())


def test_a_deployment_takes_its_threshold_from_a_calibration_file(served, monkeypatch, tmp_path: Path,
                                                                   image_bytes, capsys) -> None:
    env, url = served
    (tmp_path / "people" / "obama").mkdir(parents=True)
    (tmp_path / "people" / "obama" / "a.jpg").write_bytes(image_bytes["obama"])
    (tmp_path / "people" / "rose").mkdir(parents=True)
    (tmp_path / "people" / "rose" / "a.jpg").write_bytes(image_bytes["rose"])
    _as(monkeypatch, env, "alice")
    assert cli.main(["watchlist", "enroll", str(tmp_path / "people"), "--api", url, "--watchlist-id", "wl",
                     "--reason", "r", "--legal-basis", "l", "--source", "s", "--no-progress"]) == 0
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": 0.7732, "gallery_size": 1, "target_fpir": 1 / 6000,
                                       "model_version": "another@000000000000"}))
    capsys.readouterr()
    _as(monkeypatch, env, "dave")
    rc = cli.main(["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x",
                   "--cameras", "c", "--watchlists", "wl", "--calibration", str(calibration)])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["threshold"] == 0.7732
    assert "calibrated for model another@000000000000" in out.err
    assert "calibrated for a watchlist of 1; this deployment searches 2 subjects" in out.err
    calibration.write_text("{}")
    rc = cli.main(["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x",
                   "--cameras", "c2", "--watchlists", "wl", "--calibration", str(calibration)])
    assert rc == 1 and "not a calibration file" in capsys.readouterr().err
