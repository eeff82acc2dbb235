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
    err = capsys.readouterr().err
    assert rc == 1 and "HTTP 422" in err and "--threshold: 0.5 is below the floor of 0.7" in err
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


def test_a_deployment_takes_a_global_threshold_from_a_calibration_file(served, monkeypatch, tmp_path: Path,
                                                                      image_bytes, capsys) -> None:
    """The threshold of ``openlfr evaluate``'s file is one global threshold: checked against the
    registry's cohort like --global-threshold, refused above the target unless accepted."""
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
    create = ["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x", "--watchlists", "wl",
              "--calibration", str(calibration)]
    rc = cli.main([*create, "--cameras", "c"])
    err = capsys.readouterr().err
    # Another model's calibration is refused: its scores mean something else.
    assert rc == 1 and "HTTP 422" in err and "--calibration: the threshold was calibrated for model " \
        f"another@000000000000; this registry matches with {env.registry.model_version}" in err, err
    assert env.registry.list_deployments().total == 0
    calibration.write_text(json.dumps({"threshold": 0.7732, "gallery_size": 1, "target_fpir": 1 / 6000,
                                       "model_version": env.registry.model_version}))
    rc = cli.main([*create, "--cameras", "c"])
    err = capsys.readouterr().err
    # The test cohort's strangers reach 0.7732 far more often than 1 in 6,000 on a list of two.
    assert rc == 1 and "HTTP 422" in err and "--calibration: threshold 0.7732" in err, err
    assert "on a watchlist of 2" in err and "--accept-fpir >=" in err and "above --target-fpir 0.000167" in err
    expected = float(err.split("--accept-fpir >= ")[1].split()[0])
    assert env.registry.list_deployments().total == 0

    rc = cli.main([*create, "--cameras", "c", "--accept-fpir", f"{expected:g}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    created = json.loads(out.out)
    assert created["threshold"] == 0.7732 and created["threshold_mode"] == "global"
    point = created["operating_point"]
    assert point["normalised_threshold"] is None and point["accept_fpir"] == pytest.approx(expected)
    assert 1 / 6000 < point["expected_fpir"] <= expected and point["watchlist_size"] == 2
    assert f"one threshold 0.7732 for everyone on 2 subject(s), {env.registry.cohort_id}" in out.err
    assert "calibrated for a watchlist of 1; this deployment searches 2 subjects" in out.err
    calibration.write_text("{}")
    rc = cli.main([*create, "--cameras", "c2"])
    assert rc == 2 and "--calibration" in (err := capsys.readouterr().err) and "not a calibration file" in err


def test_deployment_create_prints_what_the_registry_expects(served, monkeypatch, tmp_path: Path, image_bytes,
                                                             capsys) -> None:
    """Per-subject thresholds by default: the registry's operating point for the snapshot's
    size and the target, printed for the operator; a stricter target gives a stricter threshold."""
    env, url = served
    for name in ("obama", "rose", "kit"):
        (tmp_path / "people" / name).mkdir(parents=True)
        (tmp_path / "people" / name / "a.jpg").write_bytes(image_bytes[name])
    _as(monkeypatch, env, "alice")
    assert cli.main(["watchlist", "enroll", str(tmp_path / "people"), "--api", url, "--watchlist-id", "wl",
                     "--reason", "r", "--legal-basis", "l", "--source", "s", "--no-progress"]) == 0
    capsys.readouterr()
    _as(monkeypatch, env, "dave")
    base = ["deployment", "create", "--api", url, "--purpose", "p", "--authorised-by", "x", "--watchlists", "wl"]
    assert cli.main([*base, "--cameras", "c1", "--target-fpir", "1/100", "--threshold", "0.72"]) == 0
    out = capsys.readouterr()
    loose = json.loads(out.out)
    point = loose["operating_point"]
    assert loose["threshold_mode"] == "per_subject" and loose["threshold"] == 0.72
    assert point["target_fpir"] == 0.01 and point["watchlist_size"] == 3 and point["cohort"] == env.registry.cohort_id
    assert point["expected_fpir"] <= 0.01 and point["expected_fnmr"] is not None
    line = out.err.strip().splitlines()[-1]
    assert line.startswith(f"deployment {loose['id']}: per-subject thresholds (normalised "), line
    assert f"floor 0.72) on 3 subject(s), {env.registry.cohort_id}: expected " in line
    assert f"{point['expected_fpir'] * 10_000:.2f} false alert(s) per 10,000 passers-by" in line
    assert f"expected miss rate {point['expected_fnmr']:.1%}" in line
    assert cli.main([*base, "--cameras", "c2", "--target-fpir", "1/1000"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["threshold"] == 0.7  # the registry's floor
    assert strict["operating_point"]["normalised_threshold"] > point["normalised_threshold"]
    assert cli.main(["deployment", "show", loose["id"], "--api", url]) == 0
    assert "per-subject thresholds (normalised" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--target-fpir", "often"], "--target-fpir: 'often' is not a rate"),
        (["--target-fpir", "2"], "--target-fpir: '2' must be between 0 and 1"),
        (["--accept-fpir", "0.01"], "--accept-fpir applies to --global-threshold or --calibration"),
        (["--global-threshold", "0.8", "--threshold", "0.75"], "--threshold is the floor of per-subject"),
        (["--global-threshold", "0.8", "--accept-fpir", "1e-5"], "accept_fpir: 1e-05 is below target_fpir"),
        (["--global-threshold", "1.5"], "--global-threshold: Input should be less than or equal to 1"),
        (["--threshold", "-1"], "--threshold: Input should be greater than or equal to 0"),
        (["--start", "tomorrow"], "--start 'tomorrow': not an ISO 8601 time"),
    ],
)
def test_bad_deployment_flags_are_refused_naming_the_flag(monkeypatch, capsys, args: list[str], named: str) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV, "unused-token")
    rc = cli.main(["deployment", "create", "--api", "http://127.0.0.1:9", "--purpose", "p", "--authorised-by", "x",
                   "--cameras", "c", "--watchlists", "wl", *args])
    err = capsys.readouterr().err
    assert rc == 2 and named in err, err
