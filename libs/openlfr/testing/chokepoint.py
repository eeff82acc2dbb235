"""A chokepoint scenario: people pass one at a time through the same spot (a gate's queue).

The usual live-facial-recognition camera looks at a gate: one person after another, each face
at the same place and about the same size, the next person about a second after the last.
That is the case where a tracker that joins faces by position and a loose descriptor distance
merges two people into one track. This module composes such a camera from the shared face
set, with the load generator's helpers (:mod:`openlfr.testing.loadgen`: cast, sprites,
frame rendering, JPEG encoding, ground truth and alert scoring):

* **Passers**: every enrolled person of a seeded cast passes once (with a photo other than
  their enrolment photo), and strangers fill the rest; nobody passes twice.
* **Passes**: each pass shows one face for ``pass_s`` seconds at the centre of a 1280x720
  frame, growing from ``face_w[0]`` to ``face_w[1]`` pixels wide (the person walks up to the
  gate), then ``gap_s`` seconds of empty scene until the next person. Frames come ``1 / fps``
  apart.
* **Ground truth** per pass (``Pass``), per frame (``PoolFrame.faces``, the pass id as the
  walk id), as a :class:`~openlfr.testing.loadgen.GroundTruth` for
  :func:`~openlfr.testing.loadgen.check_alerts`, and a :class:`ChokepointSource` that feeds
  the frames to an ingest with their capture times.

Deterministic: the same seed, photos and settings compose the same frames, byte for byte.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from openlfr.pipeline.ingest import FrameSource, SourceEvent, SourceFrame, keep_all
from openlfr.testing.loadgen import (
    HEIGHT,
    WIDTH,
    Cast,
    GroundTruth,
    Person,
    PoolFrame,
    Walk,
    blurred_background,
    choose_cast,
    encode_jpeg,
    make_sprite,
    read_people,
    render_frame,
)

logger = logging.getLogger(__name__)

#: The lane (of :data:`openlfr.testing.loadgen.LANES`) the gate is in: the middle one.
GATE_LANE = 1
#: Face width in pixels at the start and the end of a pass (inter-eye distance ~35-45 px).
FACE_W = (100, 120)
#: The scene behind the gate: the first frame of this shared video, blurred.
BACKGROUND_VIDEO = "facenet_pytorch/examples/video.mp4"


@dataclass(frozen=True, slots=True)
class Passer:
    """One person who passes the gate: who, whether enrolled, the photo and its face box."""

    person_id: str
    enrolled: bool
    photo: Path
    rgb: np.ndarray
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Pass:
    """One person at the gate: frames ``start .. start + frames - 1`` of the scenario."""

    pass_id: str
    person_id: str
    enrolled: bool
    photo: Path
    start: int
    frames: int


@dataclass(frozen=True, slots=True)
class Chokepoint:
    """A composed chokepoint camera.

    Attributes:
        fps: frames per second (capture times are ``start_ts + index / fps``).
        passes: the passes in order.
        frames: every frame, JPEG-encoded, with the faces pasted into it.
        enrolled: the watchlist: subject id -> enrolment photos (every enrolled person of the
            cast; one whose photos all lack a face is enrolled but does not pass).
        skipped: photos left out because ``locate`` found no face in them.
    """

    fps: float
    passes: tuple[Pass, ...]
    frames: tuple[PoolFrame, ...]
    enrolled: dict[str, tuple[Path, ...]]
    skipped: tuple[str, ...] = ()

    def capture_ts(self, index: int, start_ts: float) -> float:
        """The capture time of frame ``index`` when the first frame is at ``start_ts``."""
        return start_ts + index / self.fps

    def truth(self, camera_id: str, start_ts: float) -> GroundTruth:
        """The ground truth of one run of the frames on ``camera_id`` (one appearance per pass)."""
        truth = GroundTruth()
        for frame in self.frames:
            truth.add_frame(camera_id, self.capture_ts(frame.index, start_ts), frame.faces)
        return truth

    def source(self, start_ts: float) -> ChokepointSource:
        """The frames as a camera source (not paced: read as fast as they are taken)."""
        return ChokepointSource(self, start_ts=start_ts)


class ChokepointSource(FrameSource):
    """A :class:`Chokepoint`'s frames as an ingest source, decoded from their JPEG.

    Args:
        scenario: the composed frames.
        start_ts: the capture time of the first frame.
    """

    live = False

    def __init__(self, scenario: Chokepoint, *, start_ts: float) -> None:
        self.scenario = scenario
        self.start_ts = start_ts
        self.description = f"chokepoint scenario ({len(scenario.frames)} frames, {len(scenario.passes)} passes)"

    def frames(
        self,
        stop: threading.Event,
        *,
        keep: Callable[[float], bool] = keep_all,
        on_event: Callable[[SourceEvent], None] = lambda event: None,
    ) -> Iterator[SourceFrame]:
        for frame in self.scenario.frames:
            if stop.is_set():
                return
            capture_ts = self.scenario.capture_ts(frame.index, self.start_ts)
            if not keep(capture_ts):
                continue
            bgr = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
            yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), capture_ts)


def choose_passers(
    cast: Cast, *, seed: int, passes: int, queue: Sequence[Path] = ()
) -> list[tuple[str, Path, bool]]:
    """Who passes, in order: the ``queue`` photos first, in their order (look-alikes one right
    after the other, say), then every other enrolled person and strangers for the rest, in a
    seeded order, each with one of their walking photos (seeded choice). Nobody passes twice.

    Raises:
        ValueError: a queue photo that is not a walking photo of the cast, two of one person,
            or ``passes`` fewer than the queue and the enrolled people or more than the people.
    """
    photos: dict[str, list[tuple[Path, bool]]] = {}
    owner: dict[Path, tuple[str, bool]] = {}
    for person_id, photo, enrolled in cast.walkers:
        photos.setdefault(person_id, []).append((photo, enrolled))
        owner[photo] = (person_id, enrolled)
    out: list[tuple[str, Path, bool]] = []
    for photo in queue:
        if photo not in owner:
            raise ValueError(f"queue: {photo} is not a walking photo of the cast (an enrolment photo, or none)")
        person_id, enrolled = owner[photo]
        if any(person_id == p for p, _, _ in out):
            raise ValueError(f"queue: {person_id} would pass twice")
        out.append((person_id, photo, enrolled))
    queued = {p for p, _, _ in out}
    enrolled = sorted(p for p in photos if p in cast.enrolled and p not in queued)
    strangers = sorted(p for p in photos if p not in cast.enrolled and p not in queued)
    least, most = len(out) + len(enrolled), len(out) + len(enrolled) + len(strangers)
    if not least <= passes <= most:
        raise ValueError(f"passes={passes}, expected {least}..{most} (the queue, every enrolled person once, "
                         "then strangers, nobody twice)")
    rng = np.random.default_rng(seed)
    chosen = enrolled + [strangers[i] for i in rng.choice(len(strangers), size=passes - least, replace=False)]
    for person_id in (chosen[i] for i in rng.permutation(len(chosen))):
        photo, is_enrolled = photos[person_id][int(rng.integers(len(photos[person_id])))]
        out.append((person_id, photo, is_enrolled))
    return out


def cast_with(people: Sequence[Person], enrolled: Sequence[str]) -> Cast:
    """The cast with the named people on the watchlist (their first photo), as
    :func:`~openlfr.testing.loadgen.choose_cast` enrols its seeded choice.

    Raises:
        ValueError: a name that is not one of ``people`` with two photos or more.
    """
    eligible = {p.person_id for p in people if len(p.photos) >= 2}
    unknown = sorted(set(enrolled) - eligible)
    if unknown:
        raise ValueError(f"enrolled: {unknown} are not people of the set with 2+ photos")
    cast: dict[str, tuple[Path, ...]] = {}
    walkers: list[tuple[str, Path, bool]] = []
    for person in people:
        on_list = person.person_id in enrolled
        if on_list:
            cast[person.person_id] = person.photos[:1]
        walkers += [(person.person_id, photo, on_list) for photo in person.photos[1 if on_list else 0:]]
    return Cast(enrolled=cast, walkers=tuple(walkers))


def plan_passes(
    passers: Sequence[Passer], *, fps: float, pass_s: float, gap_s: float, lead_s: float = 0.5
) -> list[Pass]:
    """One pass per passer, in order: ``lead_s`` of empty scene first, then each face for
    ``pass_s`` followed by ``gap_s`` of empty scene (at least one frame each).

    Raises:
        ValueError: a non-positive ``fps`` or ``pass_s``, or a negative ``gap_s`` or ``lead_s``.
    """
    if not (fps > 0 and pass_s > 0 and gap_s >= 0 and lead_s >= 0):
        raise ValueError(f"plan_passes: need fps > 0, pass_s > 0, gap_s >= 0, lead_s >= 0; got fps={fps}, "
                         f"pass_s={pass_s}, gap_s={gap_s}, lead_s={lead_s}")
    frames = max(int(round(pass_s * fps)), 1)
    gap = max(int(round(gap_s * fps)), 1)
    start = int(round(lead_s * fps))
    out: list[Pass] = []
    for k, passer in enumerate(passers):
        out.append(Pass(f"p{k:02d}", passer.person_id, passer.enrolled, passer.photo, start, frames))
        start += frames + gap
    return out


def compose_chokepoint(
    *,
    passers: Sequence[Passer],
    background: np.ndarray,
    fps: float,
    pass_s: float,
    gap_s: float,
    face_w: tuple[int, int] = FACE_W,
    jpeg_quality: int = 85,
) -> tuple[list[Pass], list[PoolFrame]]:
    """The passes and every frame (JPEG) of a chokepoint camera, ending one gap after the last pass.

    Each frame of a pass pastes the passer's head crop (:func:`~openlfr.testing.loadgen.make_sprite`,
    the face ``face_w`` pixels wide, growing over the pass) at the centre of the gate lane with
    :func:`~openlfr.testing.loadgen.render_frame`.

    Raises:
        ValueError: no passer, bad timing (:func:`plan_passes`) or face widths.
    """
    if not passers:
        raise ValueError("compose_chokepoint: no passer")
    if not 20 <= face_w[0] <= face_w[1]:
        raise ValueError(f"face_w={face_w}, expected 20 <= start <= end")
    passes = plan_passes(passers, fps=fps, pass_s=pass_s, gap_s=gap_s)
    total = passes[-1].start + passes[-1].frames + max(int(round(gap_s * fps)), 1)
    at_frame: dict[int, tuple[Pass, Passer, int]] = {}
    for p, passer in zip(passes, passers, strict=True):
        for step in range(p.frames):
            at_frame[p.start + step] = (p, passer, step)
    frames: list[PoolFrame] = []
    for index in range(total):
        sprites = []
        walks = []
        if index in at_frame:
            p, passer, step = at_frame[index]
            share = step / (p.frames - 1) if p.frames > 1 else 0.0
            width = int(round(face_w[0] + share * (face_w[1] - face_w[0])))
            sprites.append(make_sprite(passer.rgb, passer.box, person_id=p.person_id, enrolled=p.enrolled,
                                       face_w=width))
            # One frame long: render_frame centres it in the lane.
            walks.append(Walk(p.pass_id, 0, GATE_LANE, index, 1, True))
        image, faces = render_frame(background, sprites, walks, index)
        frames.append(PoolFrame(index, encode_jpeg(image, jpeg_quality), faces))
    return passes, frames


def build_chokepoint(
    faces_dir: Path,
    *,
    locate: Callable[[np.ndarray], np.ndarray | None],
    load: Callable[[Path], np.ndarray],
    seed: int = 7,
    passes: int = 10,
    enrolled_people: int = 3,
    enrolled: Sequence[str] | None = None,
    queue: Sequence[str] = (),
    fps: float = 8.0,
    pass_s: float = 1.0,
    gap_s: float = 0.25,
) -> Chokepoint:
    """A chokepoint camera from the shared face set (``labels.csv``), cast as the load generator
    casts its cameras (:func:`~openlfr.testing.loadgen.read_people`).

    Args:
        faces_dir: the shared face set.
        locate: the face box [x1, y1, x2, y2] of an RGB photo (the analyzer's largest face), or
            None when it has none (that photo is skipped; the person passes with another of
            their photos, or not at all when none has a face).
        load: reads a photo as RGB.
        seed: decides who is enrolled (unless ``enrolled`` says), who else passes, in which
            order and with which photo.
        passes: how many people pass (the queue, each enrolled person once, strangers for the rest).
        enrolled_people: how many people the seed puts on the watchlist (with their first photo).
        enrolled: the people to put on the watchlist instead of a seeded choice.
        queue: photos (paths under ``faces_dir``) that pass first, in this order.
        fps: frames per second.
        pass_s: how long each face is in view.
        gap_s: empty scene between two people.

    Raises:
        ValueError: too few people for ``passes``, an unusable queue or name, or bad timing.
    """
    people = read_people(faces_dir)
    if enrolled is None:
        cast = choose_cast(people, seed=seed, enrolled_people=enrolled_people)
    else:
        cast = cast_with(people, enrolled)
    photos: dict[str, list[Path]] = {}
    for person_id, photo, _ in cast.walkers:
        photos.setdefault(person_id, []).append(photo)
    skipped: list[str] = []
    passers: list[Passer] = []
    chosen = choose_passers(cast, seed=seed, passes=passes, queue=[faces_dir / q for q in queue])
    for person_id, photo, on_list in chosen:
        # The chosen photo first, then the person's others: the first with a face is used.
        for candidate in [photo, *(p for p in photos[person_id] if p != photo)]:
            rgb = load(candidate)
            box = locate(rgb)
            if box is not None:
                passers.append(Passer(person_id, on_list, candidate, rgb,
                                      (float(box[0]), float(box[1]), float(box[2]), float(box[3]))))
                break
            skipped.append(str(candidate))
    if skipped:
        logger.info('chokepoint skipped photos without a face count="%d"', len(skipped))
    planned, frames = compose_chokepoint(passers=passers, background=_background(faces_dir), fps=fps,
                                         pass_s=pass_s, gap_s=gap_s)
    return Chokepoint(fps=fps, passes=tuple(planned), frames=tuple(frames), enrolled=dict(cast.enrolled),
                      skipped=tuple(skipped))


def _background(faces_dir: Path) -> np.ndarray:
    """The gate's scene: the shared arcade video's first frame, blurred (grey when missing)."""
    cap = cv2.VideoCapture(str(faces_dir / BACKGROUND_VIDEO))
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        return np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    return blurred_background(bgr)
