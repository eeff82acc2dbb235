"""The embed skip on real faces: which faces of a followed person are embedded, and that every
face a track's template would take is among them (``openlfr.pipeline.embed_skip``)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from openlfr.messages.models import DetectedFace, Faces
from openlfr.models.build import model_version
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
from openlfr.pipeline.ingest import CameraIngest, ImageFolderSource
from openlfr.pipeline.match import MatchSettings
from openlfr.pipeline.stage import Incoming, Outgoing
from openlfr.pipeline.templates import TemplateFace, TrackTemplate
from openlfr.service.settings import settings_error_lines

CAMERA = "cam-skip"
#: One face each, two different people.
PHOTOS = ("face_recognition/examples/obama-480p.jpg", "face_recognition/examples/biden.jpg")
FPS = 10.0


@pytest.fixture(scope="module")
def people(analyzer, model_dir: Path, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Faces]:
    """The photos' ``Faces`` messages from the real detect stage (Obama, then Biden)."""
    folder = tmp_path_factory.mktemp("skip-photos")
    for i, rel in enumerate(PHOTOS):
        shutil.copy(faces_dir / rel, folder / f"{i:02d}{Path(rel).suffix}")
    sent: list[Outgoing] = []
    CameraIngest(CAMERA, ImageFolderSource(folder, fps=5), publish=sent.append, sample_fps=5).run(threading.Event())
    detect = DetectStage(analyzer, detector_model=model_version(model_dir, analyzer.detector.spec.name),
                         max_frame_age_s=None)
    result = detect.handle([Incoming(o.message, 0, i) for i, o in enumerate(sent)], now=time.time())  # type: ignore[arg-type]
    messages = [o.message for o in result.outputs]
    assert [len(m.faces) for m in messages] == [1, 1]  # type: ignore[attr-defined]
    return messages  # type: ignore[return-value]


@pytest.fixture(scope="module")
def embedder_model(analyzer, model_dir: Path) -> str:
    return model_version(model_dir, analyzer.embedder.spec.name)


def _face(face: DetectedFace, *, index: int, dx: float, quality: float) -> DetectedFace:
    x1, y1, x2, y2 = face.box
    return face.model_copy(update={
        "index": index, "box": (x1 + dx, y1, x2 + dx, y2),
        "quality": face.quality.model_copy(update={"score": quality}),
    })


def _frames(person: Faces, qualities: Sequence[float], *, t0: float = 1000.0, step_px: float = 4.0,
            times: Sequence[float] | None = None) -> list[Faces]:
    """One followed face moving ``step_px`` a frame at :data:`FPS`, with the given qualities."""
    times = [t0 + n / FPS for n in range(len(qualities))] if times is None else [t0 + t for t in times]
    return [
        person.model_copy(update={
            "frame_id": f"{CAMERA}:{n}", "capture_ts": ts,
            "faces": (_face(person.faces[0], index=0, dx=step_px * n, quality=q),),
        })
        for n, (q, ts) in enumerate(zip(qualities, times))
    ]


def _skip(**values: object) -> EmbedSkip:
    match = MatchSettings(**{"template_faces": 3, **values.pop("match", {})})  # type: ignore[arg-type]
    return EmbedSkip(EmbedSkipSettings.for_match(match, **{"recheck_s": 0.35, **values}), registry=CollectorRegistry())


def _kept(skip: EmbedSkip, messages: Sequence[Faces]) -> list[list[int]]:
    """Per message, the face indexes embedded (planned and committed one message a batch)."""
    out = []
    for message in messages:
        state = skip.begin()
        plan = skip.plan(state, message)
        skip.observe(plan, np.ones((len(plan.keep), 128), np.float32))  # one person throughout
        skip.commit(state, [plan])
        out.append([message.faces[i].index for i in plan.keep])
    return out


# qualities of one face over 10 frames (0.1 s apart), K = 3, re-check every 0.35 s -> frames embedded
@pytest.mark.parametrize(
    ("qualities", "embedded"),
    [
        # first 3; 0.45 beats 0.4; 0.7 beats 0.5; then nothing better: a re-check 0.4 s after 0.7
        ([0.5, 0.6, 0.4, 0.45, 0.3, 0.7, 0.3, 0.3, 0.3, 0.3], [0, 1, 2, 3, 5, 9]),
        # rising quality (walking up to the camera): every face is better
        ([0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75], list(range(10))),
        # flat: the first 3, then a re-check every 0.4 s (the 4th frame after the last embed)
        ([0.5] * 10, [0, 1, 2, 6]),
        # below the match stage's quality gate (0.2): never embedded, never counted as good
        ([0.1, 0.1, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5], [2, 3, 4, 8]),
    ],
)
def test_a_follow_embeds_its_first_k_good_faces_then_better_ones_and_rechecks(
    people: list[Faces], qualities: list[float], embedded: list[int]
) -> None:
    kept = _kept(_skip(), _frames(people[0], qualities))
    assert [n for n, k in enumerate(kept) if k] == embedded


@pytest.mark.parametrize("seed", range(6))
def test_every_face_the_template_would_take_is_embedded(people: list[Faces], seed: int) -> None:
    rng = np.random.default_rng(seed)
    qualities = [float(q) for q in rng.uniform(0.0, 1.0, 60).round(2)]  # ties included
    frames = _frames(people[0], qualities, step_px=1.0)
    kept = _kept(_skip(), frames)
    template = TrackTemplate(max_faces=3)
    vector = np.ones(128, np.float32)
    took = []
    for n, q in enumerate(qualities):
        if q < MatchSettings().min_quality:
            continue  # the match stage drops it before the tracker
        face = TemplateFace.of(vector, quality=q, chip_jpeg=b"x", frame_id=str(n), capture_ts=n, trace_id="t" * 8)
        if template.add(face, []):
            took.append(n)
    assert set(took) <= {n for n, k in enumerate(kept) if k}
    assert sum(1 for k in kept if k) < len(frames)


def test_crossing_faces_are_embedded_as_new_people(people: list[Faces]) -> None:
    face = people[0].faces[0]
    width = face.box[2] - face.box[0]
    frames = [
        people[0].model_copy(update={
            "frame_id": f"{CAMERA}:{n}", "capture_ts": 1000.0 + n / FPS,
            # two faces a third of a width apart, passing each other: they overlap
            "faces": (_face(face, index=0, dx=width * (0.1 * n), quality=0.5),
                      _face(face, index=1, dx=width * (0.6 - 0.1 * n), quality=0.5)),
        })
        for n in range(6)
    ]
    skip = _skip()
    assert _kept(skip, frames) == [[0, 1]] * 6


def test_a_face_back_after_a_gap_is_embedded_and_a_long_gap_starts_afresh(people: list[Faces]) -> None:
    # frames at 0..0.4 s, a face again at 0.7 s (missed 2 frames) and at 1.4 s (past follow_gap_s)
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 1.4]
    skip = _skip()
    kept = _kept(skip, _frames(people[0], [0.5] * len(times), times=times, step_px=1.0))
    assert [t for t, k in zip(times, kept) if k] == [0.0, 0.1, 0.2, 0.7, 1.4]
    counts = {s.labels["reason"]: s.value for f in skip.metrics.embedded.collect() for s in f.samples
              if s.name.endswith("_total")}
    assert counts == {"new": 2.0, "first": 2.0, "reappeared": 1.0}


def test_someone_else_in_a_followed_box_is_embedded_as_a_new_person(
    analyzer, people: list[Faces], embedder_model: str
) -> None:
    obama, biden = people
    # Obama for 5 frames, then Biden's face in the same spot (the same box) from the next frame on.
    frames = _frames(obama, [0.6] * 10, step_px=0.0)
    same = frames[0].faces[0]
    swapped = biden.faces[0].model_copy(update={"box": same.box, "quality": same.quality})
    frames = frames[:5] + [f.model_copy(update={"faces": (swapped,)}) for f in frames[5:]]
    skip = _skip()
    stage = EmbedStage(analyzer.embedder, embedder_model=embedder_model, max_frame_age_s=None, skip=skip)
    embedded = []
    for n, frame in enumerate(frames):
        result = stage.handle([Incoming(frame, 0, n)], now=time.time())
        embedded.append(bool(result.outputs))
    # Obama's first 3; Biden's faces are no better, until a re-check (0.4 s after the last embed)
    # finds him farther from Obama than the tracker allows: his next 2 faces are his first 3 too.
    assert [n for n, e in enumerate(embedded) if e] == [0, 1, 2, 6, 7, 8]
    assert skip.metrics.switched._value.get() == 1  # noqa: SLF001 - the counter's own value


def test_a_batch_handed_over_again_gets_the_same_faces_and_a_failed_one_changes_nothing(
    analyzer, people: list[Faces], embedder_model: str
) -> None:
    frames = _frames(people[0], [0.5] * 8)
    batch = [Incoming(f, 0, n) for n, f in enumerate(frames)]
    skip = _skip()
    # planned but never committed (as when the backend fails): the next plan starts from the same state
    state = skip.begin()
    first = [skip.plan(state, f).keep for f in frames]
    state = skip.begin()
    assert [skip.plan(state, f).keep for f in frames] == first
    stage = EmbedStage(analyzer.embedder, embedder_model=embedder_model, max_frame_age_s=None, skip=skip)
    once = stage.handle(batch, now=time.time())
    again = stage.handle(batch, now=time.time())

    def sent(result) -> list[tuple[str, tuple[int, ...]]]:  # noqa: ANN001
        return [(o.message.frame_id, tuple(f.index for f in o.message.faces)) for o in result.outputs]

    assert sent(again) == sent(once) and len(sent(once)) == 4 and once.dropped == {"skipped": 4}
    a = {o.message.frame_id: o.message.faces[0].vector() for o in once.outputs}
    for o in again.outputs:
        np.testing.assert_array_equal(o.message.faces[0].vector(), a[o.message.frame_id])


def test_a_crowded_frame_in_parts_is_embedded_whole(people: list[Faces]) -> None:
    frames = [f.model_copy(update={"part": 0, "parts": 2}) for f in _frames(people[0], [0.5] * 6)]
    assert _kept(_skip(), frames) == [[0]] * 6


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"OPENLFR_MATCH_DECISION": "votes"}, "OPENLFR_MATCH_DECISION=template"),
        ({"OPENLFR_EMBED_SKIP_RECHECK_S": "2.5"}, "must be below OPENLFR_MATCH_TRACK_MAX_GAP_S"),
        ({"OPENLFR_EMBED_SKIP_RECHECK_S": "1.0", "OPENLFR_MATCH_TRACK_MAX_GAP_S": "0.8"},
         "OPENLFR_EMBED_SKIP_RECHECK_S (1) must be below OPENLFR_MATCH_TRACK_MAX_GAP_S (0.8)"),
        ({"OPENLFR_EMBED_SKIP_FOLLOW_MIN_IOU": "0"}, "OPENLFR_EMBED_SKIP_FOLLOW_MIN_IOU"),
        ({"OPENLFR_EMBED_SKIP_RECHECK_S": "soon"}, "OPENLFR_EMBED_SKIP_RECHECK_S"),
        ({"OPENLFR_MATCH_DECISION": "votes", "OPENLFR_EMBED_SKIP_ENABLED": "false"}, None),
        ({"OPENLFR_MATCH_TEMPLATE_FACES": "7"}, None),
    ],
)
def test_settings_are_checked_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if error is None:
        settings = EmbedSkipSettings()
        assert settings.match_template_faces == int(env.get("OPENLFR_MATCH_TEMPLATE_FACES", 5))
        assert (EmbedSkip.from_settings(settings, registry=CollectorRegistry()) is None) == (not settings.enabled)
        return
    with pytest.raises(ValidationError) as caught:
        EmbedSkipSettings()
    assert error in " ".join(settings_error_lines(caught.value, prefix="OPENLFR_EMBED_SKIP_"))
