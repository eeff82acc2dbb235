"""The alert stage's checks against the real registry API: its deployment, subject and watchlist
records, each answer kept ``cache_s``, suspensions and expiry refusing matches made before them,
and a registry that does not answer pausing the stage (nothing alerted unchecked, nothing
dropped)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.models import Match
from openlfr.messages.signing import MatchSigner
from openlfr.pipeline.alert import AlertSettings, AlertStage
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.match_trust import DeploymentFacts, RegistryAuthority
from openlfr.pipeline.stage import Incoming
from openlfr.registry.models import SubjectUpdate
from openlfr.review.exceptions import DeploymentNotFound, RegistryUnavailable, SubjectNotFound, WatchlistNotFound

from .test_registry_thresholds import add_subjects, deploy

SIGNER = MatchSigner.ephemeral()


class ApiReader:
    """The registry's HTTP API (its app, in process) read with the alert service's ``service`` token,
    as ``openlfr.review.registry_client.HttpRegistryClient`` reads it over the network."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.calls: list[str] = []
        self.down = False

    def _get(self, path: str, not_found: Exception) -> dict[str, Any]:
        self.calls.append(path)
        if self.down:  # the one fault not caused for real here: the network
            raise RegistryUnavailable("the registry at http://match:8080 could not be reached: connection refused")
        response = self.env.call("svc", "GET", path)
        if response.status_code == 404:
            raise not_found
        if response.is_error:
            raise RegistryUnavailable(f"the registry answered HTTP {response.status_code}")
        return response.json()

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._get(f"/v1/deployments/{deployment_id}", DeploymentNotFound(deployment_id))

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        return self._get(f"/v1/subjects/{subject_id}", SubjectNotFound(subject_id))

    def get_watchlist(self, watchlist_id: str) -> dict[str, Any]:
        return self._get(f"/v1/watchlists/{watchlist_id}", WatchlistNotFound(watchlist_id))


@pytest.fixture
def deployed(env, image_bytes) -> tuple[Any, Any]:
    add_subjects(env, "wl", ["obama", "rose"], image_bytes)
    return env, deploy(env, "dep-1", "wl", "cam-1")


def _match(env: Any, dep: Any, track: str, *, subject: str = "obama", ts: float | None = None, **over: object) -> Match:
    norm = dep.operating_point.normalised_threshold
    fields: dict[str, Any] = dict(
        camera_id="cam-1", frame_id=f"{track}-f", capture_ts=env.clock.now + 1 if ts is None else ts,
        trace_id="trace-0001", track_id=track, subject_id=subject, watchlist_id="wl", score=dep.threshold + 0.05,
        margin=0.1, votes=3, track_frames=5, threshold=dep.threshold, first_seen_ts=env.clock.now,
        probe_chip_jpeg=b"\xff\xd8\xff\xe0probe", embedder_model="dlib_resnet_v1", deployment_id=dep.id,
        normalised_score=norm + 0.5, normalised_threshold=norm, cohort="cohort@x",
    )
    return SIGNER.build(**{**fields, **over})


def _stage(authority: RegistryAuthority) -> AlertStage:
    return AlertStage(AlertSettings(), signer=SIGNER, authority=authority, registry=CollectorRegistry())


def _batch(*matches: Match, first: int = 0) -> list[Incoming[Match]]:
    return [Incoming(m, 0, first + i) for i, m in enumerate(matches)]


def test_the_facts_are_the_registrys_records(deployed) -> None:
    env, dep = deployed
    facts = DeploymentFacts.from_record(ApiReader(env).get_deployment("dep-1"))
    assert facts.deployment_id == "dep-1" and facts.camera_ids == {"cam-1"} and facts.watchlist_ids == {"wl"}
    assert (facts.start_ts, facts.end_ts) == (dep.start_at.timestamp(), dep.end_at.timestamp())
    assert facts.threshold == dep.threshold
    assert facts.norm_threshold == dep.operating_point.normalised_threshold is not None


def test_checked_against_the_registry_and_asked_once_per_cache_period(deployed) -> None:
    env, dep = deployed
    reader = ApiReader(env)
    ticks = [0.0]
    authority = RegistryAuthority(reader, cache_s=30.0, clock=lambda: ticks[0])
    stage = _stage(authority)
    now = env.clock.now + 2
    genuine = [_match(env, dep, f"t{i}", subject=s) for i, s in enumerate(["obama", "rose", "obama"])]
    forged = [_match(env, dep, "t8", subject="nobody"), _match(env, dep, "t9", threshold=0.1, score=0.2)]
    result = stage.handle(_batch(*genuine, *forged), now=now)
    assert [o.message.subject_id for o in result.outputs] == ["obama", "rose"]  # the third: cooldown
    assert [r.split(":")[0] for _, r in result.rejected] == ["unknown_subject", "below_threshold"]
    # One question per deployment, subject and watchlist, the unknown subject included.
    assert sorted(reader.calls) == ["/v1/deployments/dep-1", "/v1/subjects/nobody", "/v1/subjects/obama",
                                    "/v1/subjects/rose", "/v1/watchlists/wl"]
    stage.handle(_batch(_match(env, dep, "t10", subject="nobody"), first=10), now=now)
    assert len(reader.calls) == 5
    ticks[0] = 31.0
    stage.handle(_batch(_match(env, dep, "t11", subject="nobody"), first=11), now=now)
    assert sorted(reader.calls[5:]) == ["/v1/deployments/dep-1", "/v1/subjects/nobody", "/v1/watchlists/wl"]


@pytest.mark.parametrize("what", ["subject", "watchlist"])
def test_a_match_made_before_a_suspension_is_refused_after_it_and_alerts_again_on_resume(deployed, what) -> None:
    """Suspension is read when the stage decides: a match made (and signed) a moment before the
    subject or its watchlist was suspended is not put up for review."""
    env, dep = deployed
    stage = _stage(RegistryAuthority(ApiReader(env), cache_s=0.0))
    made_before = _match(env, dep, "t1")

    def suspend(on: bool) -> None:
        if what == "subject":
            env.registry.update_subject("obama", SubjectUpdate(status="suspended" if on else "active"), actor="alice")
        else:
            env.registry.set_watchlist_suspended("wl", suspended=on, actor="alice")

    suspend(True)
    result = stage.handle(_batch(made_before), now=env.clock.now + 2)
    assert result.outputs == []
    [(_, reason)] = result.rejected
    assert reason.startswith(f"{what}_suspended: ") and "suspended" in reason.split(": ", 1)[1]
    assert stage._refused.labels(f"{what}_suspended")._value.get() == 1
    suspend(False)
    result = stage.handle(_batch(_match(env, dep, "t2"), first=1), now=env.clock.now + 3)
    assert [o.message.subject_id for o in result.outputs] == ["obama"] and result.rejected == []


def test_a_subject_past_its_expiry_is_refused(deployed) -> None:
    env, dep = deployed
    stage = _stage(RegistryAuthority(ApiReader(env), cache_s=0.0))
    made_before = _match(env, dep, "t1", subject="rose")
    expires = env.registry.get_subject("rose").expires_at.timestamp()
    env.clock.advance(expires - env.clock.now + 1)
    assert env.registry.get_subject("rose").expired
    result = stage.handle(_batch(made_before), now=env.clock.now)
    assert [r.split(":")[0] for _, r in result.rejected] == ["subject_suspended"]
    assert "past its expiry" in result.rejected[0][1]


def test_a_deployment_ended_by_hand_backs_no_match_captured_after_its_end(deployed) -> None:
    env, dep = deployed
    stage = _stage(RegistryAuthority(ApiReader(env), cache_s=0.0))
    before = _match(env, dep, "t1", ts=env.clock.now + 5)
    env.clock.advance(10)
    env.registry.end_deployment("dep-1", actor="dave", reason="operation over")
    after = _match(env, dep, "t2", subject="rose", ts=env.clock.now + 1)
    result = stage.handle(_batch(before, after), now=env.clock.now + 2)
    assert [o.message.track_id for o in result.outputs] == ["t1"]
    assert [r.split(":")[0] for _, r in result.rejected] == ["outside_deployment"]


def test_a_registry_that_does_not_answer_pauses_the_stage_and_loses_nothing(deployed) -> None:
    env, dep = deployed
    reader = ApiReader(env)
    stage = _stage(RegistryAuthority(reader, cache_s=30.0))
    batch = _batch(_match(env, dep, "t1"), _match(env, dep, "t2", subject="rose"))
    reader.down = True
    with pytest.raises(BackendUnavailable, match="registry: the registry at http://match:8080 could not be reached"):
        stage.handle(batch, now=env.clock.now + 2)
    ok, reason = stage.ready()
    assert not ok and reason.startswith("registry: ")
    assert len(stage.state) == 0  # nothing recorded: the runner hands over the same batch again
    reader.down = False
    result = stage.handle(batch, now=env.clock.now + 3)
    assert len(result.outputs) == 2 and result.rejected == []
    assert stage.ready() == (True, "ok")
