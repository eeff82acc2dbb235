"""Freshness with catch-up: the backlog an outage left is processed within a bounded lateness,
an overloaded stage still sheds, and the settings refuse a bound below the age limit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from openlfr.messages.models import Frame
from openlfr.pipeline.freshness import CatchUpSettings, Freshness
from openlfr.pipeline.stage import BatchResult, Incoming

T0 = 1_700_000_000.0
MAX_AGE = 1.0
BOUND = 30.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _frame(camera: str, k: int, capture_ts: float) -> Incoming[Frame]:
    message = Frame(camera_id=camera, frame_id=f"{camera}:{k}", capture_ts=capture_ts, trace_id=f"trace-{k:04d}",
                    width=4, height=4, jpeg=b"\xff\xd8\xff\xd9", ingest_ts=capture_ts)
    return Incoming(message, 0, k)


def _run(freshness: Freshness, clock: Clock, batch: list[Incoming[Frame]], *, now: float, took_s: float = 0.1):
    result = BatchResult()
    taken = freshness.select(batch, now=now, result=result)
    clock.t = now + took_s
    freshness.done()
    return [(t.item.message.frame_id, None if t.lateness_s is None else round(t.lateness_s, 1)) for t in taken], result.dropped


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def _stage(clock: Clock, **kwargs: object) -> Freshness:
    return Freshness(max_age_s=MAX_AGE, lateness_s=kwargs.pop("lateness_s", BOUND), clock=clock, **kwargs)  # type: ignore[arg-type]


def test_steady_state_keeps_fresh_frames_and_sheds_stale_ones(clock: Clock) -> None:
    stage = _stage(clock)
    _run(stage, clock, [_frame("cam-1", 0, T0 - 0.2)], now=T0)  # working
    taken, dropped = _run(stage, clock, [_frame("cam-1", 1, T0 - 0.1), _frame("cam-1", 2, T0 - 3.0)], now=T0 + 0.2)
    assert taken == [("cam-1:1", None)] and dropped == {"stale": 1}


def test_the_backlog_after_a_restart_is_processed_and_stamped_with_its_lateness(clock: Clock) -> None:
    stage = _stage(clock)  # a new process: its first batch is a resume
    backlog = [_frame("cam-1", k, T0 - 12 + 0.2 * k) for k in range(3)]
    taken, dropped = _run(stage, clock, backlog, now=T0)
    assert taken == [("cam-1:0", 12.0), ("cam-1:1", 11.8), ("cam-1:2", 11.6)] and not dropped
    assert stage.catching_up() == {"cam-1"}
    # Still behind in the next batch (no gap now): still catching up.
    taken, _ = _run(stage, clock, [_frame("cam-1", 3, T0 - 8)], now=T0 + 1)
    assert taken == [("cam-1:3", 9.0)]
    # Caught up: fresh again, and the freshness limit is back.
    taken, _ = _run(stage, clock, [_frame("cam-1", 4, T0 + 1.5)], now=T0 + 2)
    assert taken == [("cam-1:4", None)] and stage.catching_up() == frozenset()
    taken, dropped = _run(stage, clock, [_frame("cam-1", 5, T0 - 1)], now=T0 + 2.2)
    assert taken == [] and dropped == {"stale": 1}


def test_a_gap_in_the_stages_work_is_a_resume(clock: Clock) -> None:
    stage = _stage(clock)
    _run(stage, clock, [_frame("cam-1", 0, T0 - 0.1)], now=T0)
    # SIGSTOP for 10 s (or its backend down): the frames that queued meanwhile are late.
    taken, dropped = _run(stage, clock, [_frame("cam-1", k, T0 + 0.2 * k) for k in range(1, 4)], now=T0 + 10.2)
    assert [lateness for _, lateness in taken] == [10.0, 9.8, 9.6] and not dropped


def test_an_overloaded_stage_without_a_gap_sheds_as_before(clock: Clock) -> None:
    stage = _stage(clock)
    now = T0
    _run(stage, clock, [_frame("cam-1", 0, now - 0.5)], now=now, took_s=0.9)
    for k in range(1, 6):  # batch after batch, each slower than real time: it falls behind
        now += 0.9
        taken, dropped = _run(stage, clock, [_frame("cam-1", k, T0 + 0.2 * k - 0.5)], now=now, took_s=0.9)
        if now - (T0 + 0.2 * k - 0.5) > MAX_AGE:
            assert taken == [] and dropped == {"stale": 1}
    assert stage.catching_up() == frozenset()


def test_frames_older_than_the_bound_are_dropped_even_in_catch_up(clock: Clock) -> None:
    stage = _stage(clock)
    taken, dropped = _run(stage, clock, [_frame("cam-1", 0, T0 - 45), _frame("cam-1", 1, T0 - 20)], now=T0)
    assert taken == [("cam-1:1", 20.0)] and dropped == {"stale": 1}


def test_catch_up_that_does_not_catch_up_ends_after_twice_the_bound(clock: Clock) -> None:
    stage = _stage(clock)
    lag, taken_lateness, dropped_at = 10.0, [], []
    for k in range(70):  # batch after batch, no gap, never closer than 10 s behind: overloaded
        now = T0 + k
        taken, dropped = _run(stage, clock, [_frame("cam-1", k, now - lag)], now=now, took_s=1.0)
        taken_lateness += [lateness for _, lateness in taken]
        if dropped:
            dropped_at.append(k)
    assert taken_lateness == [lag] * 61  # catch-up for 2 x 30 s of wall time
    assert dropped_at == list(range(61, 70)) and stage.catching_up() == frozenset()


def test_keep_every_samples_whole_frames_during_catch_up(clock: Clock) -> None:
    stage = _stage(clock, keep_every=3)
    backlog = [_frame("cam-1", k, T0 - 10 + 0.2 * k) for k in range(7)]
    taken, dropped = _run(stage, clock, backlog, now=T0)
    assert [frame_id for frame_id, _ in taken] == ["cam-1:0", "cam-1:3", "cam-1:6"] and dropped == {"catchup_sampled": 4}


def test_a_camera_first_seen_after_the_resume_catches_up_too(clock: Clock) -> None:
    stage = _stage(clock)
    _run(stage, clock, [_frame("cam-1", 0, T0 - 5)], now=T0)
    taken, _ = _run(stage, clock, [_frame("cam-2", 0, T0 - 4)], now=T0 + 0.5)
    assert taken == [("cam-2:0", 4.5)]


def test_an_input_a_stage_before_took_up_late_keeps_its_allowance(clock: Clock) -> None:
    from openlfr.messages.models import DetectedFace, FaceQualityRecord, Faces

    stage = _stage(clock)
    _run(stage, clock, [_frame("cam-9", 0, T0)], now=T0)  # working, no gap
    face = DetectedFace(index=0, box=(0, 0, 1, 1), score=0.9, landmarks=((0.0, 0.0),) * 5, chip_png=b"\x89PNG....",
                        quality=FaceQualityRecord(face_px=1, inter_eye_px=1, blur=1, yaw=0, roll_deg=0,
                                                  detector_score=1, score=1))
    common = dict(camera_id="cam-1", capture_ts=T0 - 6, trace_id="trace-0001", width=4, height=4, faces=(face,),
                  detector_model="m@1")
    late = Incoming(Faces(frame_id="cam-1:1", lateness_s=5.5, **common), 0, 1)
    plain = Incoming(Faces(frame_id="cam-1:2", **common), 0, 2)
    result = BatchResult()
    taken = stage.select([late, plain], now=T0 + 0.3, result=result)
    assert [(t.item.message.frame_id, round(t.lateness_s or 0, 1)) for t in taken] == [("cam-1:1", 6.3), ("cam-1:2", 6.3)]


def test_no_age_limit_keeps_everything(clock: Clock) -> None:
    stage = Freshness(max_age_s=None, clock=clock)
    taken, dropped = _run(stage, clock, [_frame("cam-1", 0, 1_000_000.0)], now=T0)
    assert taken == [("cam-1:0", None)] and not dropped


def test_catch_up_off_sheds_the_backlog_as_before(clock: Clock) -> None:
    stage = _stage(clock, lateness_s=0.0)
    taken, dropped = _run(stage, clock, [_frame("cam-1", 0, T0 - 5)], now=T0)
    assert taken == [] and dropped == {"stale": 1}


def test_a_bound_below_the_age_limit_takes_nothing_more(clock) -> None:
    """A replay raises the age limit (3600 s) and leaves the bound at its default (30 s): frames
    within the age limit are taken, older ones are stale, catch-up or not."""
    stage = Freshness(max_age_s=3600.0, lateness_s=30.0, clock=clock)
    taken, dropped = _run(stage, clock, [_frame("cam-1", 0, T0 - 600), _frame("cam-1", 1, T0 - 4000)], now=T0)
    assert taken == [("cam-1:0", None)] and dropped == {"stale": 1}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_age_s": 0.0}, "max_frame_age_s"),
        ({"max_age_s": 5.0, "lateness_s": -1.0}, "catchup_lateness_s"),
        ({"max_age_s": 5.0, "keep_every": 0}, "catchup_keep_every"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Freshness(**kwargs)


class _Settings(CatchUpSettings):
    max_frame_age_s: float = 5.0


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({}, True),
        ({"OPENLFR_CATCHUP_LATENESS_S": "0"}, True),
        ({"OPENLFR_CATCHUP_LATENESS_S": "5"}, True),
        ({"OPENLFR_CATCHUP_LATENESS_S": "4"}, True),  # below the age limit: adds nothing, refuses nothing
        ({"OPENLFR_CATCHUP_LATENESS_S": "-1"}, False),
        ({"OPENLFR_CATCHUP_LATENESS_S": "7200"}, False),
        ({"OPENLFR_CATCHUP_KEEP_EVERY": "0"}, False),
    ],
)
def test_settings_are_validated(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], ok: bool) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if ok:
        assert _Settings().catchup_lateness_s == float(env.get("OPENLFR_CATCHUP_LATENESS_S", 30))
    else:
        with pytest.raises(ValidationError):
            _Settings()


def test_detect_and_embed_take_up_a_restarts_backlog_and_stamp_its_lateness(analyzer, faces_dir) -> None:
    """Production limits (detect 1 s, embed 5 s): a frame that waited 12 s in Kafka while the
    stages were down is processed by freshly started stages, and says how late it was."""
    import time

    import cv2

    from openlfr.pipeline.detect import DetectStage
    from openlfr.pipeline.embed import EmbedStage

    image = cv2.imread(str(faces_dir / "face_recognition/examples/biden.jpg"))
    ok, jpeg = cv2.imencode(".jpg", image)
    now = time.time()
    frame = Frame(camera_id="cam-1", frame_id="cam-1:0", capture_ts=now - 12, trace_id="trace-0000",
                  width=image.shape[1], height=image.shape[0], jpeg=jpeg.tobytes(), ingest_ts=now - 12)
    detect = DetectStage(analyzer, detector_model="blazeface_full@test", max_frame_age_s=1.0)
    embed = EmbedStage(analyzer.embedder, embedder_model="dlib@test", max_frame_age_s=5.0)
    faces = detect.handle([Incoming(frame, 0, 0)], now=now).outputs
    assert len(faces) == 1 and faces[0].message.lateness_s == pytest.approx(12, abs=0.01)
    embedded = embed.handle([Incoming(faces[0].message, 0, 0)], now=now + 0.5).outputs
    assert len(embedded) == 1 and embedded[0].message.lateness_s == pytest.approx(12.5, abs=0.01)
    # Older than the bound (30 s): dropped even so, and counted.
    old = frame.model_copy(update={"frame_id": "cam-1:1", "capture_ts": now - 40})
    result = DetectStage(analyzer, detector_model="blazeface_full@test", max_frame_age_s=1.0).handle(
        [Incoming(old, 0, 1)], now=now)
    assert result.dropped == {"stale": 1} and not result.outputs
