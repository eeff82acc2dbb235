"""A chokepoint through the embedded pipeline: every pass its own track, one alert per enrolled person.

People of the shared face set pass one at a time through the same spot, 0.25 s apart
(:mod:`openlfr.testing.chokepoint`), through ingest -> detect -> embed -> match -> alert in one
process (``openlfr.pipeline.embedded``, as ``openlfr run`` wires it) with a watchlist enrolled
from the set's photos. The first two people are the closest two of the photos the scene is made
of (0.52 apart): a stranger, then an enrolled person stepping into the stranger's box.

The match stage's tracker is swapped for one that also records which track each face joined
(same settings, same code), so the test can check tracks against the ground truth.

The scene runs twice: embedding every face, and with the embed skip
(``openlfr.pipeline.embed_skip``: only faces that can change a track's decision), which must
embed fewer faces and give the same alerts, each enrolled pass still its own track.

Integration tier for its run time only (84 frames through the CPU detector: ~45 s on two
loaded cores); it needs no server.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.models import Alert
from openlfr.messages.signing import MatchSigner
from openlfr.models.build import model_version
from openlfr.models.specs import BLAZEFACE_FULL, EMBEDDER
from openlfr.pipeline.alert import AlertSettings, AlertStage
from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
from openlfr.pipeline.embedded import EmbeddedPipeline
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.match_trust import StaticAuthority
from openlfr.pipeline.tracker import FaceTracker, FrameUpdate, Observation, box_iou
from openlfr.testing.chokepoint import Chokepoint, build_chokepoint
from openlfr.testing.loadgen import ObservedAlert, check_alerts
from openlfr.vision.images import load_image
from openlfr.watchlist.loader import enroll_folder
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import distance_to_score

pytestmark = pytest.mark.integration

CAMERA = "gate-1"
#: deepface person_11 (enrolled) steps in 0.25 s after Leonardo DiCaprio (a stranger here).
LOOKALIKES = ("deepface/img35.jpg", "deepface/img31.jpg")
ENROLLED = ("deepface_person_11", "Barack_Obama", "Angelina_Jolie")
#: A match threshold of distance 0.5: a small watchlist's (a 1,000-person one calibrates to ~0.4).
THRESHOLD = distance_to_score(0.5)
OLD_RULE = {"max_distance": 0.55, "reacquire_distance": 0.4, "check_mean": False}


@dataclass(frozen=True, slots=True)
class Joined:
    capture_ts: float
    box: tuple[float, float, float, float]
    embedding: np.ndarray
    track_id: str


class RecordingTracker(FaceTracker):
    """The production tracker, also keeping which track each face it was given joined."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)  # type: ignore[arg-type]
        self.joined: list[Joined] = []

    def update(self, **frame: object) -> FrameUpdate:  # type: ignore[override]
        update = super().update(**frame)  # type: ignore[arg-type]
        for obs, track in zip(frame["observations"], update.assigned, strict=True):  # type: ignore[call-overload]
            self.joined.append(Joined(float(frame["capture_ts"]), obs.box, obs.embedding, track.track_id))  # type: ignore[arg-type]
        return update


def _settings_of(tracker: FaceTracker) -> dict[str, object]:
    names = ("max_gap_s", "max_track_s", "min_iou", "max_distance", "reacquire_distance", "camera_idle_s", "check_mean")
    return {name: getattr(tracker, name) for name in names}


@dataclass
class Run:
    scenario: Chokepoint
    start_ts: float
    alerts: list[Alert]
    joined: list[Joined]
    matches: int
    dead_letters: int
    faces: int
    skipped: dict[str, float]


@pytest.fixture(scope="module")
def run(analyzer, model_dir: Path, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(analyzer, model_dir, faces_dir, tmp_path_factory, skip=False)


@pytest.fixture(scope="module")
def run_skipping(analyzer, model_dir: Path, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(analyzer, model_dir, faces_dir, tmp_path_factory, skip=True)


def _run(analyzer, model_dir: Path, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory, *,  # noqa: ANN001
         skip: bool) -> Run:
    def locate(rgb: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(rgb)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))] if len(faces) else None

    scenario = build_chokepoint(faces_dir, locate=locate, load=load_image, seed=7, passes=8, enrolled=ENROLLED,
                                queue=LOOKALIKES, fps=8.0, pass_s=1.0, gap_s=0.25)
    watchlist = tmp_path_factory.mktemp("chokepoint") / "watchlist"
    for subject, photos in scenario.enrolled.items():
        (watchlist / subject).mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(photo, watchlist / subject / photo.name)
    store = QdrantStore(location=":memory:")
    report = enroll_folder(watchlist, analyzer=analyzer, store=store, watchlist_id="wl")
    assert sorted(report.enrolled) == sorted(ENROLLED), report
    gate = StaticGate(ActiveDeployment(deployment_id="gate", watchlist_ids=("wl",), threshold=THRESHOLD,
                                       snapshot_ts=time.time()))
    signer = MatchSigner.ephemeral()
    # The scene is read faster than real time: its capture times run ahead of the clock.
    match = MatchStage(MatchSettings(), store=store, gate=gate, registry=CollectorRegistry(), signer=signer,
                       max_clock_skew_s=None)
    tracker = RecordingTracker(**_settings_of(match.tracker))
    match.tracker = tracker
    metrics = CollectorRegistry()
    skipper = EmbedSkip(EmbedSkipSettings.for_match(match.settings), registry=metrics) if skip else None
    pipeline = EmbeddedPipeline(
        detect=DetectStage(analyzer, detector_model=model_version(model_dir, BLAZEFACE_FULL.name),
                           max_frame_age_s=None),
        embed=EmbedStage(analyzer.embedder, embedder_model=model_version(model_dir, EMBEDDER.name),
                         max_frame_age_s=None, skip=skipper),
        match=match,
        alert=AlertStage(AlertSettings(), signer=signer, registry=CollectorRegistry(), max_clock_skew_s=None,
                         authority=StaticAuthority.for_run(gate.deployment, camera_ids=[CAMERA],
                                                           subjects={s: "wl" for s in report.enrolled})),
    )
    alerts: list[Alert] = []
    start_ts = time.time()
    summary = pipeline.run([(CAMERA, scenario.source(start_ts))], sample_fps=2 * scenario.fps,
                           on_alert=alerts.append)
    assert summary.frames_published == summary.frames_processed == len(scenario.frames)
    skipped = {sample.labels["reason"]: sample.value for family in metrics.collect() for sample in family.samples
               if family.name == "openlfr_embed_faces_skipped" and sample.name.endswith("_total")}
    return Run(scenario, start_ts, alerts, tracker.joined, summary.matches, summary.dead_letters, summary.faces,
               skipped)


def _pass_of(run: Run, joined: Joined) -> str | None:
    """The pass whose pasted face the tracked face is (IoU >= 0.5), or None (a background face)."""
    index = int(round((joined.capture_ts - run.start_ts) * run.scenario.fps))
    for face in run.scenario.frames[index].faces:
        if box_iou(face.box, joined.box) >= 0.5:
            return face.walk_id
    return None


def _tracks_per_pass(run: Run, joined: Sequence[Joined]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for j in joined:
        pass_id = _pass_of(run, j)
        if pass_id is not None:
            out.setdefault(pass_id, set()).add(j.track_id)
    return out


def test_the_scenario_is_a_queue_at_one_spot_with_look_alikes_first(run: Run) -> None:
    passes = run.scenario.passes
    assert [p.photo.name for p in passes[:2]] == ["img35.jpg", "img31.jpg"]
    assert [p.enrolled for p in passes[:2]] == [False, True]
    assert sum(p.enrolled for p in passes) == len(ENROLLED) and len({p.person_id for p in passes}) == len(passes)
    boxes = [next(f.box for f in run.scenario.frames[p.start].faces) for p in passes]
    assert all(box_iou(a, b) >= 0.6 for a, b in zip(boxes, boxes[1:]))


def test_every_pass_is_its_own_track(run: Run) -> None:
    tracks = _tracks_per_pass(run, run.joined)
    assert sorted(tracks) == sorted(p.pass_id for p in run.scenario.passes)
    assert all(len(ids) == 1 for ids in tracks.values()), tracks  # no pass split
    owners = [next(iter(ids)) for ids in tracks.values()]
    assert len(set(owners)) == len(owners), tracks  # no track holds two passes
    sizes = {pass_id: sum(1 for j in run.joined if _pass_of(run, j) == pass_id) for pass_id in tracks}
    assert min(sizes.values()) >= MatchSettings().min_votes, sizes


def test_the_old_rule_would_have_merged_the_look_alikes(run: Run) -> None:
    # The same faces replayed through the tracker as it was: the enrolled person joins the
    # stranger's track. (This is what the test above guards against.)
    old = RecordingTracker(**{**_settings_of(FaceTracker()), **OLD_RULE})
    frames: dict[float, list[Joined]] = {}
    for j in run.joined:
        frames.setdefault(j.capture_ts, []).append(j)
    for n, (ts, faces) in enumerate(sorted(frames.items())):
        old.update(camera_id=CAMERA, frame_id=f"f{n}", capture_ts=ts, partition=0, offset=n,
                   observations=[Observation(index=i, box=j.box, embedding=j.embedding, quality=0.5)
                                 for i, j in enumerate(faces)])
    tracks = _tracks_per_pass(run, old.joined)
    first, second = (p.pass_id for p in run.scenario.passes[:2])
    assert tracks[first] & tracks[second]


def test_each_enrolled_person_alerts_once_and_nobody_else(run: Run) -> None:
    truth = run.scenario.truth(CAMERA, run.start_ts)
    observed = [ObservedAlert(a.camera_id, a.subject_id, a.capture_ts, a.alert_id) for a in run.alerts]
    result = check_alerts(truth, observed, min_frames=MatchSettings().min_votes, slack_s=0.5 / run.scenario.fps)
    assert result.ok, result.summary()
    assert result.expected == result.matched == len(ENROLLED)
    assert sorted(a.subject_id for a in run.alerts) == sorted(ENROLLED)
    assert run.matches == len(ENROLLED)  # one Match per enrolled pass, none for a stranger's track
    assert run.dead_letters == 0


def test_the_embed_skip_embeds_fewer_faces_and_gives_the_same_alerts(run: Run, run_skipping: Run) -> None:
    assert run_skipping.faces < run.faces, (run_skipping.faces, run.faces)
    assert sum(run_skipping.skipped.values()) == run.faces - run_skipping.faces, run_skipping.skipped
    # Here mostly the background's faces, below the match stage's quality gate: each pass is too
    # short (8 frames, its face growing, so each better than the last) to leave a face out.
    assert run_skipping.skipped.get("low_quality", 0) > 0, run_skipping.skipped

    def alerted(r: Run) -> list[tuple[str, str | None]]:
        passes = {j.track_id: _pass_of(r, j) for j in r.joined}
        return sorted((a.subject_id, passes.get(a.track_id)) for a in r.alerts)

    assert alerted(run_skipping) == alerted(run)  # the same people, on the same passes
    test_each_enrolled_person_alerts_once_and_nobody_else(run_skipping)
    tracks = _tracks_per_pass(run_skipping, run_skipping.joined)
    assert all(len(ids) == 1 for ids in tracks.values()), tracks  # no pass split by the sparser faces
    owners = [next(iter(ids)) for ids in tracks.values()]
    assert len(set(owners)) == len(owners), tracks
