"""The pure parts of the camera-replay load generator (``load-tests/loadgen.py``).

* **Cast**: people from the shared face set's identity subsets (``labels.csv``), linked ids
  (``identity_links.csv``) merged into one person; a seeded share of the people with two or
  more photos is put on the watchlist with one photo, their other photos walk by; everyone
  else walks by as a stranger.
* **Composition**: each camera has a background and three horizontal lanes; people walk
  across a lane (head crops pasted into 1280x720 frames), one after another with gaps, so a
  frame holds 0-3 faces and the tracker sees each person over several frames. Every frame of
  a camera's bounded pool is composed and JPEG-encoded before any clock starts; a run loops
  the pool, and each pass of a walk is its own appearance (``walk_id#pass``).
* **Ground truth**: which walk (person, enrolled or not, face box) is in which frame.
* **Scoring**: capture-to-alert latency percentiles, and alert correctness: every appearance
  of an enrolled person long enough to match gave exactly one alert, and no alert named a
  stranger, a wrong person or nobody.

Deterministic: the same seed, photos and settings compose the same pools, byte for byte.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

WIDTH, HEIGHT = 1280, 720
LANES = 3
#: Width of a pasted face box in pixels (inter-eye distance about 40 px), as in the samples.
FACE_W = 110
#: Head crop around the face box, in face widths: left/right, above, below.
_CROP_SIDE, _CROP_TOP, _CROP_BOTTOM = 0.35, 0.45, 0.55

UnexpectedReason = Literal["stranger", "wrong_identity", "no_walker"]


def subject_id_for(identity: str) -> str:
    """A registry subject id (slug) for a labels.csv identity (``deepface/person_01`` ->
    ``deepface_person_01``)."""
    return re.sub(r"[^A-Za-z0-9._:@-]", "_", identity)[:128]


# -- cast -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Person:
    """One person of the face set: an id (a subject id) and their uncropped photos."""

    person_id: str
    photos: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Cast:
    """Who is on the watchlist (with which photos) and who walks by (with which photos)."""

    enrolled: dict[str, tuple[Path, ...]]
    #: ``(person_id, photo, enrolled)``: the photos people walk by with.
    walkers: tuple[tuple[str, Path, bool], ...]


def read_people(faces_dir: Path) -> list[Person]:
    """People with uncropped single-person photos (``image_kind == face``) in ``labels.csv``;
    identities linked in ``identity_links.csv`` are one person (the id sorted first)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    links = faces_dir / "identity_links.csv"
    if links.is_file():
        with links.open(newline="") as fh:
            for row in csv.DictReader(fh):
                a, b = sorted((find(row["identity_a"]), find(row["identity_b"])))
                if a != b:
                    parent[b] = a
    photos: dict[str, list[Path]] = {}
    with (faces_dir / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["identity"] and row["image_kind"] == "face":
                photos.setdefault(find(row["identity"]), []).append(faces_dir / row["path"])
    return [Person(subject_id_for(pid), tuple(sorted(ps))) for pid, ps in sorted(photos.items())]


def choose_cast(people: Sequence[Person], *, seed: int, enrolled_people: int) -> Cast:
    """Enrol ``enrolled_people`` people (seeded choice among those with 2+ photos) with their
    first photo; their other photos and every photo of everyone else walk by.

    Raises:
        ValueError: fewer people with two photos than asked, or none left as strangers.
    """
    rng = np.random.default_rng(seed)
    eligible = [p for p in people if len(p.photos) >= 2]
    if not 1 <= enrolled_people <= len(eligible):
        raise ValueError(f"enrolled_people={enrolled_people}, expected 1..{len(eligible)} (people with 2+ photos)")
    chosen = {eligible[i].person_id for i in rng.choice(len(eligible), size=enrolled_people, replace=False)}
    enrolled: dict[str, tuple[Path, ...]] = {}
    walkers: list[tuple[str, Path, bool]] = []
    for person in people:
        if person.person_id in chosen:
            enrolled[person.person_id] = person.photos[:1]
            walkers += [(person.person_id, photo, True) for photo in person.photos[1:]]
        else:
            walkers += [(person.person_id, photo, False) for photo in person.photos]
    if all(e for _, _, e in walkers):
        raise ValueError("no stranger left to walk by")
    return Cast(enrolled=enrolled, walkers=tuple(walkers))


# -- composition ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sprite:
    """A head crop to paste: RGB pixels and the face box inside them ``[x1, y1, x2, y2]``."""

    person_id: str
    enrolled: bool
    image: np.ndarray
    face_box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"Sprite.image: expected (h, w, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.image.shape[0] > HEIGHT // LANES or self.image.shape[1] > WIDTH // 2:
            raise ValueError(f"Sprite.image: {self.image.shape[:2]} does not fit a lane of "
                             f"{HEIGHT // LANES}x{WIDTH // 2}")


def make_sprite(rgb: np.ndarray, box: Sequence[float], *, person_id: str, enrolled: bool,
                face_w: int = FACE_W) -> Sprite:
    """The photo's head crop around ``box`` (the face), scaled so the face is ``face_w`` wide."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w = x2 - x1
    if w <= 1 or y2 - y1 <= 1:
        raise ValueError(f"make_sprite: degenerate face box {tuple(box)}")
    left, right = max(x1 - _CROP_SIDE * w, 0.0), min(x2 + _CROP_SIDE * w, float(rgb.shape[1]))
    top, bottom = max(y1 - _CROP_TOP * w, 0.0), min(y2 + _CROP_BOTTOM * w, float(rgb.shape[0]))
    scale = face_w / w
    bottom = min(bottom, top + (HEIGHT // LANES - 1) / scale)  # a lane's height at most
    crop = rgb[int(top):int(bottom), int(left):int(right)]
    size = (max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1))
    image = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    face = ((x1 - int(left)) * scale, (y1 - int(top)) * scale, (x2 - int(left)) * scale,
            min((y2 - int(top)) * scale, float(image.shape[0])))
    return Sprite(person_id, enrolled, np.ascontiguousarray(image), face)


@dataclass(frozen=True, slots=True)
class Walk:
    """One person crossing one lane of one camera's pool: frames ``start .. start+frames-1``."""

    walk_id: str
    sprite: int
    lane: int
    start: int
    frames: int
    left_to_right: bool

    def position(self, frame: int, sprite_w: int) -> int | None:
        """The sprite's left x in ``frame``, or None when the walk is not on screen then."""
        step = frame - self.start
        if not 0 <= step < self.frames:
            return None
        share = step / (self.frames - 1) if self.frames > 1 else 0.5
        if not self.left_to_right:
            share = 1.0 - share
        return int(round(share * (WIDTH - sprite_w)))


@dataclass(frozen=True, slots=True)
class TruthFace:
    """A pasted face in a frame: whose, from which walk, and where."""

    walk_id: str
    person_id: str
    enrolled: bool
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class PoolFrame:
    """One precomposed frame of a camera's pool."""

    index: int
    jpeg: bytes
    faces: tuple[TruthFace, ...]


#: A person walks again on a camera at least this long after their last pass there ended, and
#: is never on two lanes at once: more than the match stage's 2 s track gap, so every pass is a
#: pass of its own (a real person cannot cross twice at the same time).
SAME_PERSON_GAP_S = 2.5


def plan_walks(
    *, camera: str, sprites: Sequence[Sprite], rng: np.random.Generator, fps: float, pool_frames: int,
    walk_s: float, enrolled_share: float, gap_s: tuple[float, float] = (0.4, 1.6),
) -> list[Walk]:
    """Walks on every lane, back to back with random gaps, all inside the pool (none wraps).

    Lanes are filled in time order. Each walk's person is enrolled with probability
    ``enrolled_share`` (when both kinds exist), chosen among the people of that kind who are not
    walking on this camera then nor within :data:`SAME_PERSON_GAP_S` of it (when none is free,
    the lane waits a moment and draws again).
    """
    if not 0 <= enrolled_share <= 1:
        raise ValueError(f"enrolled_share={enrolled_share}, expected 0..1")
    enrolled = [i for i, s in enumerate(sprites) if s.enrolled]
    strangers = [i for i, s in enumerate(sprites) if not s.enrolled]
    if not enrolled and not strangers:
        raise ValueError("plan_walks: no sprite")
    frames = max(int(round(walk_s * fps)), 2)
    apart = int(math.ceil(SAME_PERSON_GAP_S * fps))
    wait = max(int(round(gap_s[0] * fps)), 1)
    busy: dict[str, list[tuple[int, int]]] = {}

    def free(index: int, start: int) -> bool:
        return all(end + apart < start or start + frames + apart < begin
                   for begin, end in busy.get(sprites[index].person_id, ()))

    walks: list[Walk] = []
    next_start = [int(round(rng.uniform(0, gap_s[1]) * fps)) for _ in range(LANES)]
    while True:
        lane = min(range(LANES), key=lambda k: (next_start[k], k))
        t = next_start[lane]
        if t + frames > pool_frames:
            break
        pick_enrolled = bool(enrolled) and (not strangers or rng.random() < enrolled_share)
        pool = [i for i in (enrolled if pick_enrolled else strangers) if free(i, t)]
        if not pool:
            next_start[lane] = t + wait
            continue
        sprite = int(pool[int(rng.integers(len(pool)))])
        walks.append(Walk(f"{camera}/w{len(walks)}", sprite, lane, t, frames, bool(rng.random() < 0.5)))
        busy.setdefault(sprites[sprite].person_id, []).append((t, t + frames - 1))
        next_start[lane] = t + frames + max(int(round(rng.uniform(*gap_s) * fps)), 1)
    return walks


def render_frame(background: np.ndarray, sprites: Sequence[Sprite], walks: Iterable[Walk],
                 frame: int) -> tuple[np.ndarray, tuple[TruthFace, ...]]:
    """The RGB frame ``frame`` of a pool and the faces pasted in it."""
    if background.shape != (HEIGHT, WIDTH, 3):
        raise ValueError(f"background: expected ({HEIGHT}, {WIDTH}, 3), got {background.shape}")
    image = background.copy()
    faces: list[TruthFace] = []
    lane_h = HEIGHT // LANES
    for walk in walks:
        sprite = sprites[walk.sprite]
        sh, sw = sprite.image.shape[:2]
        x = walk.position(frame, sw)
        if x is None:
            continue
        y = walk.lane * lane_h + (lane_h - sh) // 2
        image[y:y + sh, x:x + sw] = sprite.image
        fx1, fy1, fx2, fy2 = sprite.face_box
        faces.append(TruthFace(walk.walk_id, sprite.person_id, sprite.enrolled, (x + fx1, y + fy1, x + fx2, y + fy2)))
    return image, tuple(faces)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB image, at ingest's default quality."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def compose_pool(
    *, camera: str, background: np.ndarray, sprites: Sequence[Sprite], seed: int, fps: float, pool_s: float,
    walk_s: float, enrolled_share: float, jpeg_quality: int = 85,
) -> list[PoolFrame]:
    """Every frame of one camera's pool, JPEG-encoded, with its ground truth."""
    pool_frames = max(int(round(pool_s * fps)), 1)
    rng = np.random.default_rng([seed, _stable_hash(camera)])
    walks = plan_walks(camera=camera, sprites=sprites, rng=rng, fps=fps, pool_frames=pool_frames,
                       walk_s=walk_s, enrolled_share=enrolled_share)
    pool = []
    for index in range(pool_frames):
        image, faces = render_frame(background, sprites, walks, index)
        pool.append(PoolFrame(index, encode_jpeg(image, jpeg_quality), faces))
    return pool


def _stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (``hash()`` is salted)."""
    value = 0
    for byte in text.encode():
        value = (value * 131 + byte) % (2**31 - 1)
    return value


def blurred_background(bgr: np.ndarray, *, sigma: float = 8.0) -> np.ndarray:
    """A 1280x720 RGB background from any BGR scene, blurred so its own faces are not found."""
    rgb = cv2.cvtColor(cv2.resize(bgr, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


# -- ground truth and scoring -----------------------------------------------------------------


@dataclass(slots=True)
class Appearance:
    """One pass of a walk on a camera as it was published: who, and the capture times seen."""

    camera_id: str
    key: str
    person_id: str
    enrolled: bool
    first_ts: float
    last_ts: float
    frames: int = 1


@dataclass(slots=True)
class GroundTruth:
    """Appearances by ``(camera, key)``, filled frame by frame as frames are published."""

    appearances: dict[tuple[str, str], Appearance] = field(default_factory=dict)
    frames: int = 0
    faces: int = 0

    def add_frame(self, camera_id: str, capture_ts: float, faces: Iterable[TruthFace], *, pass_no: int = 0) -> None:
        """Record a published frame (``pass_no``: how many times the pool has looped)."""
        self.frames += 1
        for face in faces:
            self.faces += 1
            key = f"{face.walk_id}#{pass_no}"
            found = self.appearances.get((camera_id, key))
            if found is None:
                self.appearances[(camera_id, key)] = Appearance(camera_id, key, face.person_id, face.enrolled,
                                                                capture_ts, capture_ts)
            else:
                found.first_ts, found.last_ts = min(found.first_ts, capture_ts), max(found.last_ts, capture_ts)
                found.frames += 1


@dataclass(frozen=True, slots=True)
class ObservedAlert:
    """What the checker needs of an alert (a pipeline ``Alert`` or a baseline decision)."""

    camera_id: str
    subject_id: str
    capture_ts: float
    alert_id: str = ""


@dataclass(frozen=True, slots=True)
class Unexpected:
    alert: ObservedAlert
    reason: UnexpectedReason


@dataclass(frozen=True, slots=True)
class Correctness:
    """Alerts against the ground truth.

    Attributes:
        expected: presences of enrolled people that had to alert (at least ``min_frames``; a
            presence is one appearance, or several of one person that a track may span).
        matched: expected presences with at least one alert.
        missing: expected presences without an alert (their first appearance).
        duplicates: appearances with more than one alert, and how many they got.
        unexpected: alerts for no appearance of the named person.
        extra_ok: alerts for presences too short to be required, and second alerts of a presence
            on another of its appearances (not counted wrong).
    """

    expected: int
    matched: int
    missing: tuple[Appearance, ...]
    duplicates: tuple[tuple[Appearance, int], ...]
    unexpected: tuple[Unexpected, ...]
    extra_ok: int
    alerts: int

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicates and not self.unexpected

    @property
    def recall(self) -> float | None:
        return self.matched / self.expected if self.expected else None

    def summary(self) -> dict[str, object]:
        """Counts and the first few problems, for the JSON report."""
        return {
            "ok": self.ok, "alerts": self.alerts, "expected": self.expected, "matched": self.matched,
            "recall": self.recall, "missing": len(self.missing),
            "duplicates": sum(n - 1 for _, n in self.duplicates), "unexpected": len(self.unexpected),
            "unexpected_by_reason": {r: sum(1 for u in self.unexpected if u.reason == r)
                                     for r in ("stranger", "wrong_identity", "no_walker")},
            "extra_ok": self.extra_ok,
            "missing_examples": [f"{a.camera_id} {a.key} {a.person_id} ({a.frames} frames)" for a in self.missing[:5]],
            "duplicate_examples": [f"{a.camera_id} {a.key} {a.person_id} ({a.frames} frames, {n} alerts)"
                                   for a, n in self.duplicates[:5]],
            "unexpected_examples": [f"{u.alert.camera_id} {u.alert.subject_id} {u.reason}" for u in self.unexpected[:5]],
        }


def check_alerts(truth: GroundTruth, alerts: Sequence[ObservedAlert], *, min_frames: int,
                 slack_s: float, rejoin_gap_s: float = 0.0) -> Correctness:
    """Which expected appearances alerted once, which not, which twice, and which alerts were wrong.

    An alert belongs to the appearance on its camera of the person it names whose capture-time
    window (widened by ``slack_s``) holds the alert's capture time; with none, it is unexpected:
    ``stranger`` when only strangers were on screen, ``wrong_identity`` when an enrolled person
    was, ``no_walker`` when nobody was.

    Appearances of one enrolled person on one camera that follow each other within
    ``rejoin_gap_s`` (+ ``slack_s``) form one *presence*: the tracker may carry a track across
    such a gap (the match stage's ``track_max_gap_s``), so whether it alerts once or once per
    appearance depends on timing. A presence is expected when one of its appearances was
    published in at least ``min_frames`` frames (passes that reach it only if joined are not
    required, nor is their alert wrong); one alert anywhere in it satisfies it, a
    further alert on another of its appearances is ``extra_ok``, a second alert on one appearance
    is a duplicate. With ``rejoin_gap_s=0`` every appearance is its own presence.
    """
    if min_frames < 1:
        raise ValueError(f"min_frames={min_frames}, expected >= 1")
    if rejoin_gap_s < 0:
        raise ValueError(f"rejoin_gap_s={rejoin_gap_s}, expected >= 0")
    by_camera: dict[str, list[Appearance]] = {}
    for appearance in truth.appearances.values():
        by_camera.setdefault(appearance.camera_id, []).append(appearance)
    counts: dict[tuple[str, str], int] = {}
    unexpected: list[Unexpected] = []
    for alert in alerts:
        on_screen = [a for a in by_camera.get(alert.camera_id, [])
                     if a.first_ts - slack_s <= alert.capture_ts <= a.last_ts + slack_s]
        mine = [a for a in on_screen if a.enrolled and a.person_id == alert.subject_id]
        if mine:
            # Two passes of one person overlapping in time: the nearer one.
            best = min(mine, key=lambda a: abs((a.first_ts + a.last_ts) / 2 - alert.capture_ts))
            counts[(best.camera_id, best.key)] = counts.get((best.camera_id, best.key), 0) + 1
        elif any(a.enrolled for a in on_screen):
            unexpected.append(Unexpected(alert, "wrong_identity"))
        elif on_screen:
            unexpected.append(Unexpected(alert, "stranger"))
        else:
            unexpected.append(Unexpected(alert, "no_walker"))
    expected: list[list[Appearance]] = []
    extra_ok = 0
    for presence in _presences(truth, rejoin_gap_s + slack_s):
        alerted = sum(1 for a in presence if (a.camera_id, a.key) in counts)
        if any(a.frames >= min_frames for a in presence):
            expected.append(presence)
            extra_ok += max(alerted - 1, 0)
        else:
            extra_ok += alerted
    missing = tuple(p[0] for p in expected if not any((a.camera_id, a.key) in counts for a in p))
    duplicates = tuple((truth.appearances[k], n) for k, n in sorted(counts.items()) if n > 1)
    return Correctness(expected=len(expected), matched=len(expected) - len(missing), missing=missing,
                       duplicates=duplicates, unexpected=tuple(unexpected), extra_ok=extra_ok, alerts=len(alerts))


def _presences(truth: GroundTruth, gap_s: float) -> list[list[Appearance]]:
    """Enrolled appearances grouped per camera and person into runs whose gaps are at most ``gap_s``."""
    runs: dict[tuple[str, str], list[Appearance]] = {}
    for a in truth.appearances.values():
        if a.enrolled:
            runs.setdefault((a.camera_id, a.person_id), []).append(a)
    out: list[list[Appearance]] = []
    for appearances in runs.values():
        appearances.sort(key=lambda a: (a.first_ts, a.key))
        current = [appearances[0]]
        reach = appearances[0].last_ts
        for a in appearances[1:]:
            if a.first_ts - reach <= gap_s:
                current.append(a)
            else:
                out.append(current)
                current = [a]
            reach = max(reach, a.last_ts)
        out.append(current)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"q={q}, expected 0..1")
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, p99, max and mean of latencies in seconds."""
    return {
        "n": len(values),
        "p50_s": percentile(values, 0.50),
        "p95_s": percentile(values, 0.95),
        "p99_s": percentile(values, 0.99),
        "max_s": max(values) if values else None,
        "mean_s": sum(values) / len(values) if values else None,
    }


def locate_sprites(cast: Cast, locate: Callable[[np.ndarray], np.ndarray | None],
                   load: Callable[[Path], np.ndarray]) -> tuple[list[Sprite], list[str]]:
    """Sprites of the cast's walking photos; photos whose face ``locate`` cannot find are skipped
    (named in the second list)."""
    sprites: list[Sprite] = []
    skipped: list[str] = []
    for person_id, photo, enrolled in cast.walkers:
        rgb = load(photo)
        box = locate(rgb)
        if box is None:
            skipped.append(str(photo))
            continue
        sprites.append(make_sprite(rgb, box, person_id=person_id, enrolled=enrolled))
    return sprites, skipped
