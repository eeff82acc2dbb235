"""The per-deployment report: numbers, unknowns, plain words, Markdown, the look-alike watch; the
registry client over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from pydantic import SecretStr

from openlfr.review.exceptions import DeploymentNotFound, RegistryUnavailable
from openlfr.review.registry_client import HttpRegistryClient
from openlfr.review.report import (
    LOOK_ALIKES_SOURCE,
    UNKNOWN,
    build_report,
    look_alike_section,
    render_markdown,
    summary_line,
)
from openlfr.review.store import Tallies
from openlfr.service.http import run_http_in_thread

GENERATED = 1_800_100_000.0

DEPLOYMENT: dict[str, Any] = {
    "id": "westfield-2026-11-26",
    "purpose": "Locate people wanted for serious violent offences | shopping centre",
    "authorised_by": "Supt. A. Example",
    "camera_ids": ["cam-1", "cam-2", "cam-3"],
    "start_ts": 1_800_000_000.0,
    "end_ts": 1_800_028_800.0,
    "watchlist_ids": ["wl-violence", "wl-warrants"],
    "threshold": 0.705,
    "snapshot": {"ts": 1_799_990_000.0, "subjects": 1234, "fingerprint": "9f2c"},
    "status": "ended",
    "stats": {"faces": 84_000, "tracks": 12_345},
    "model_version": "dlib_resnet_v1@sha256:0123abcd",
}


def test_report_numbers_from_registry_and_tallies() -> None:
    tallies = Tallies("westfield-2026-11-26", alerts=50, confirmed=8, rejected=34, awaiting_second=3)
    report = build_report(DEPLOYMENT, tallies, generated_ts=GENERATED)
    assert report["deployment_id"] == "westfield-2026-11-26"
    assert report["generated_at"] == "2027-01-16T11:46:40Z"
    assert report["deployment_details"] == "from the registry"
    assert report["cameras"] == ["cam-1", "cam-2", "cam-3"]
    assert report["window"] == {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T16:00:00Z"}
    assert (report["threshold"], report["watchlist_size"], report["snapshot_fingerprint"]) == (0.705, 1234, "9f2c")
    assert (report["model_version"], report["faces_processed"], report["tracks"]) == (
        "dlib_resnet_v1@sha256:0123abcd", 84_000, 12_345
    )
    assert (report["alerts"], report["adjudicated"], report["confirmed"], report["rejected"]) == (50, 42, 8, 34)
    assert (report["pending"], report["awaiting_second"]) == (8, 3)
    assert report["precision"] == pytest.approx(8 / 42)
    assert report["false_alert_share"] == pytest.approx(34 / 42)
    assert report["alerts_per_1000_faces"] == pytest.approx(0.595)
    assert report["summary"] == (
        "Of 42 alerts adjudicated, 34 were wrong (81%) and 8 were confirmed by two reviewers; "
        "8 alerts await review."
    )


def test_a_per_subject_deployment_reports_its_target_and_expected_rates() -> None:
    deployment = {
        **DEPLOYMENT,
        "threshold": 0.7,
        "threshold_mode": "per_subject",
        "operating_point": {"cohort": "cohort@82ba7730fb68", "watchlist_size": 1234, "target_fpir": 1 / 6000,
                            "normalised_threshold": 9.44, "expected_false_alerts_per_10000": 1.67,
                            "expected_fnmr": 0.62, "method": "tail-fit:normal"},
    }
    report = build_report(deployment, Tallies("westfield-2026-11-26", alerts=3, confirmed=1, rejected=2),
                          generated_ts=GENERATED)
    assert (report["threshold_mode"], report["normalised_threshold"], report["cohort"]) == (
        "per_subject", 9.44, "cohort@82ba7730fb68")
    assert report["expected_false_alerts_per_10000"] == 1.67 and report["expected_miss_rate"] == 0.62
    assert report["target_fpir"] == pytest.approx(1 / 6000)
    page = render_markdown(report)
    assert "| Expected false alerts per 10,000 passers-by | 1.67 |" in page
    assert "| Threshold mode | per_subject |" in page
    # A deployment from before per-subject thresholds says it does not know.
    old = build_report(DEPLOYMENT, Tallies("westfield-2026-11-26"), generated_ts=GENERATED)
    assert old["threshold_mode"] == UNKNOWN and old["expected_false_alerts_per_10000"] == UNKNOWN


def test_missing_keys_read_unknown() -> None:
    report = build_report({"id": "d1", "end_ts": None, "snapshot": "garbage", "stats": {"faces": "many"}},
                          Tallies("d1", alerts=2), generated_ts=GENERATED)
    for key in ("purpose", "authorised_by", "status", "cameras", "threshold", "watchlist_ids", "watchlist_size",
                "snapshot_at", "model_version", "faces_processed", "tracks", "alerts_per_1000_faces"):
        assert report[key] == UNKNOWN, key
    assert report["window"] == {"start": UNKNOWN, "end": "open (no end set)"}
    assert (report["precision"], report["false_alert_share"]) == (None, None)
    assert report["summary"] == "No alert has been adjudicated yet; 2 alerts await review."


def test_without_the_registry_the_details_are_unknown() -> None:
    report = build_report(None, Tallies("d2", alerts=1, rejected=1), generated_ts=GENERATED)
    assert report["deployment_id"] == "d2"
    assert report["deployment_details"] == "unknown (the registry was not asked)"
    assert report["purpose"] == UNKNOWN and report["precision"] == 0.0 and report["false_alert_share"] == 1.0


@pytest.mark.parametrize(
    "deployment, expected",
    [
        ({"starts_at": "2026-11-26T09:00:00Z", "ends_at": "2026-11-26T17:00:00Z"},
         {"start": "2026-11-26T09:00:00Z", "end": "2026-11-26T17:00:00Z"}),
        ({"start": 0}, {"start": "1970-01-01T00:00:00Z", "end": UNKNOWN}),
        ({"start_ts": True}, {"start": UNKNOWN, "end": UNKNOWN}),
    ],
)
def test_window_key_variants(deployment: dict, expected: dict) -> None:
    assert build_report(deployment, Tallies("d"), generated_ts=GENERATED)["window"] == expected


@pytest.mark.parametrize(
    "subjects, expected",
    [(12, 12), (12.0, 12), (["s1", "s2"], 2), ({"wl-a": 3, "wl-b": 4}, 7), (None, UNKNOWN), (True, UNKNOWN)],
)
def test_watchlist_size_forms(subjects: object, expected: object) -> None:
    report = build_report({"snapshot": {"subjects": subjects}}, Tallies("d"), generated_ts=GENERATED)
    assert report["watchlist_size"] == expected


@pytest.mark.parametrize(
    "tallies, line",
    [
        (Tallies("d"), "No alert was raised."),
        (Tallies("d", alerts=1), "No alert has been adjudicated yet; 1 alert awaits review."),
        (Tallies("d", alerts=1, rejected=1), "Of 1 alert adjudicated, 1 was wrong (100%) and 0 were confirmed by two "
                                             "reviewers."),
        (Tallies("d", alerts=3, confirmed=1, awaiting_second=1),
         "Of 1 alert adjudicated, 0 were wrong (0%) and 1 was confirmed by two reviewers; 2 alerts await review."),
    ],
)
def test_summary_in_plain_words(tallies: Tallies, line: str) -> None:
    assert summary_line(tallies) == line


def test_markdown() -> None:
    tallies = Tallies("westfield-2026-11-26", alerts=50, confirmed=8, rejected=34, awaiting_second=3)
    text = render_markdown(build_report(DEPLOYMENT, tallies, generated_ts=GENERATED))
    assert text.startswith("# Live facial recognition deployment westfield-2026-11-26\n")
    assert "**Of 42 alerts adjudicated, 34 were wrong (81%)" in text
    assert "| Purpose | Locate people wanted for serious violent offences \\| shopping centre |" in text
    assert "| Cameras | cam-1, cam-2, cam-3 |" in text
    assert "| Window | 2027-01-15T08:00:00Z to 2027-01-15T16:00:00Z |" in text
    assert "| Watchlist size (subjects at the snapshot) | 1234 |" in text
    assert "| Model version | dlib_resnet_v1@sha256:0123abcd |" in text
    assert "| Faces processed | 84000 |" in text and "| Tracks | 12345 |" in text
    assert "| Rejected (wrong) | 34 |" in text and "| Confirmed (by two reviewers) | 8 |" in text
    assert "| Precision (confirmed / adjudicated) | 19.0% |" in text
    assert "| False alerts (rejected / adjudicated) | 81.0% |" in text
    empty = render_markdown(build_report(None, Tallies("d"), generated_ts=GENERATED))
    assert "| Precision (confirmed / adjudicated) | none adjudicated yet |" in empty
    assert "| Purpose | unknown |" in empty


# -- the look-alike watch --------------------------------------------------------------------------

#: ``GET /v1/deployments/westfield-2026-11-26/look-alikes`` as the match service answers it.
LOOK_ALIKES: dict[str, Any] = {
    "deployment_id": "westfield-2026-11-26",
    "z_margin": 1.0,
    "score_margin": 0.03,
    "min_tracks": 5,
    "subjects": [
        {"subject_id": "subj-b", "near_miss_tracks": 9, "attracts_strangers": True},
        {"subject_id": "subj-a", "near_miss_tracks": 9, "attracts_strangers": True},
        {"subject_id": "subj-c", "near_miss_tracks": 12, "attracts_strangers": True},
        {"subject_id": "subj-d", "near_miss_tracks": 2, "attracts_strangers": False},
    ],
}


def test_report_with_the_look_alike_watch() -> None:
    report = build_report(DEPLOYMENT, Tallies("westfield-2026-11-26"), generated_ts=GENERATED, look_alikes=LOOK_ALIKES)
    assert report["look_alikes"] == {
        "watch": LOOK_ALIKES_SOURCE,
        "score_margin": 0.03,
        "z_margin": 1.0,
        "min_tracks": 5,
        "subjects_with_near_misses": 4,
        "attracting_strangers": [{"subject_id": "subj-c", "near_miss_tracks": 12},
                                 {"subject_id": "subj-a", "near_miss_tracks": 9},
                                 {"subject_id": "subj-b", "near_miss_tracks": 9}],
    }
    assert "since its match process started" in report["look_alikes"]["watch"]
    page = render_markdown(report)
    assert "\n## Look-alike watch\n" in page
    assert f"| Look-alike watch | {LOOK_ALIKES_SOURCE} |" in page
    assert "| Subjects with near-miss tracks | 4 |" in page
    assert "| Near-miss tracks at which a subject attracts strangers | 5 |" in page
    assert ("| Subjects that attract strangers (near-miss tracks) | subj-c (12 tracks), subj-a (9 tracks), "
            "subj-b (9 tracks) |") in page
    assert "| Near-miss margin | 0.03 below the subject's score threshold (and, under per-subject thresholds, " \
           "1.0 below its normalised one) |" in page
    assert "its reference images should be reviewed" in page
    assert "subj-d" not in page  # a subject under the count is only counted


def test_a_quiet_deployment_has_no_subject_attracting_strangers() -> None:
    quiet = {**LOOK_ALIKES, "subjects": []}
    report = build_report(DEPLOYMENT, Tallies("westfield-2026-11-26"), generated_ts=GENERATED, look_alikes=quiet)
    section = report["look_alikes"]
    assert (section["subjects_with_near_misses"], section["attracting_strangers"]) == (0, [])
    page = render_markdown(report)
    assert "| Subjects with near-miss tracks | 0 |" in page
    assert "| Subjects that attract strangers (near-miss tracks) | none |" in page


@pytest.mark.parametrize("deployment", [DEPLOYMENT, None])
def test_without_an_answer_the_look_alike_watch_is_unknown(deployment: dict[str, Any] | None) -> None:
    report = build_report(deployment, Tallies("westfield-2026-11-26"), generated_ts=GENERATED)
    section = report["look_alikes"]
    assert section["watch"] == "unknown (the registry was not asked)"
    for key in ("score_margin", "z_margin", "min_tracks", "subjects_with_near_misses", "attracting_strangers"):
        assert section[key] == UNKNOWN, key
    page = render_markdown(report)
    assert "| Look-alike watch | unknown (the registry was not asked) |" in page
    assert "Subjects with near-miss tracks" not in page


def test_the_reason_the_look_alike_watch_is_unknown_is_shown() -> None:
    report = build_report(DEPLOYMENT, Tallies("westfield-2026-11-26"), generated_ts=GENERATED,
                          look_alikes_unknown="the registry answered HTTP 500 | database is locked")
    assert report["look_alikes"]["watch"] == "unknown (the registry answered HTTP 500 | database is locked)"
    assert "| Look-alike watch | unknown (the registry answered HTTP 500 \\| database is locked) |" in (
        render_markdown(report))


@pytest.mark.parametrize(
    "answer, reason",
    [
        ({**LOOK_ALIKES, "deployment_id": "elsewhere"},
         "unknown (the match service answered for deployment 'elsewhere')"),
        ({**LOOK_ALIKES, "subjects": "many"}, "unknown (the match service's answer is not as expected)"),
        ({**LOOK_ALIKES, "subjects": [{"subject_id": "s", "near_miss_tracks": True, "attracts_strangers": False}]},
         "unknown (the match service's answer is not as expected)"),
        ({**LOOK_ALIKES, "subjects": [{"subject_id": "s", "near_miss_tracks": 3}]},
         "unknown (the match service's answer is not as expected)"),
    ],
)
def test_an_unexpected_look_alike_answer_is_not_guessed_from(answer: dict, reason: str) -> None:
    section = look_alike_section(answer, "westfield-2026-11-26")
    assert section["watch"] == reason
    assert section["subjects_with_near_misses"] == UNKNOWN and section["attracting_strangers"] == UNKNOWN


def test_missing_margins_read_unknown() -> None:
    section = look_alike_section({"subjects": []}, "d")
    assert section["watch"] == LOOK_ALIKES_SOURCE and section["subjects_with_near_misses"] == 0
    assert (section["score_margin"], section["z_margin"], section["min_tracks"]) == (UNKNOWN, UNKNOWN, UNKNOWN)


# -- the registry client, against a real HTTP server ------------------------------------------------

REGISTRY_TOKEN = "alert-service-token-0123456789"


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    app = FastAPI()

    @app.get("/v1/deployments/{deployment_id}")
    def get_deployment(deployment_id: str, authorization: str = Header(default="")) -> Any:
        if authorization != f"Bearer {REGISTRY_TOKEN}":
            raise HTTPException(401, detail="unknown token")
        if deployment_id == "broken":
            raise HTTPException(500, detail="database is locked")
        if deployment_id == "list":
            return [1, 2]
        if deployment_id != DEPLOYMENT["id"]:
            raise HTTPException(404, detail="no such deployment")
        return DEPLOYMENT

    @app.get("/v1/deployments/{deployment_id}/look-alikes")
    def get_look_alikes(deployment_id: str, authorization: str = Header(default="")) -> Any:
        if authorization != f"Bearer {REGISTRY_TOKEN}":
            raise HTTPException(401, detail="unknown token")
        if deployment_id == "broken":
            raise HTTPException(503, detail="the match stage is not ready")
        if deployment_id != DEPLOYMENT["id"]:
            raise HTTPException(404, detail="no such deployment")
        return LOOK_ALIKES

    server = run_http_in_thread(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_registry_client_reads_a_deployment(registry_url: str) -> None:
    client = HttpRegistryClient(registry_url + "/", token=SecretStr(REGISTRY_TOKEN), timeout_s=5)
    assert client.get_deployment(DEPLOYMENT["id"]) == DEPLOYMENT


def test_registry_client_errors(registry_url: str) -> None:
    client = HttpRegistryClient(registry_url, token=SecretStr(REGISTRY_TOKEN))
    with pytest.raises(DeploymentNotFound, match="the registry has no deployment 'nope'"):
        client.get_deployment("nope")
    with pytest.raises(RegistryUnavailable, match="HTTP 500 .*database is locked"):
        client.get_deployment("broken")
    with pytest.raises(RegistryUnavailable, match="not a JSON object"):
        client.get_deployment("list")
    with pytest.raises(RegistryUnavailable, match="HTTP 401 .*unknown token"):
        HttpRegistryClient(registry_url, token=SecretStr("wrong-token-0123456789")).get_deployment("x")


def test_registry_client_reads_the_look_alikes(registry_url: str) -> None:
    client = HttpRegistryClient(registry_url, token=SecretStr(REGISTRY_TOKEN))
    assert client.get_look_alikes(DEPLOYMENT["id"]) == LOOK_ALIKES
    assert client.get_look_alikes("not-served-here") is None  # a 404: not served, not an error
    with pytest.raises(RegistryUnavailable, match="HTTP 503 .*the match stage is not ready"):
        client.get_look_alikes("broken")
    with pytest.raises(RegistryUnavailable, match="HTTP 401 .*unknown token"):
        HttpRegistryClient(registry_url, token=SecretStr("wrong-token-0123456789")).get_look_alikes(DEPLOYMENT["id"])


def test_registry_client_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HttpRegistryClient(f"http://127.0.0.1:{port}", token=None, timeout_s=2)
    with pytest.raises(RegistryUnavailable, match="could not be reached"):
        client.get_deployment("d")
    with pytest.raises(RegistryUnavailable, match="could not be reached"):
        client.get_look_alikes("d")


@pytest.mark.parametrize("url, timeout", [("ftp://registry", 1.0), ("registry:8080", 1.0), ("http://r", 0)])
def test_registry_client_refuses_bad_settings(url: str, timeout: float) -> None:
    with pytest.raises(ValueError):
        HttpRegistryClient(url, token=None, timeout_s=timeout)
