"""Embed only the faces that can change a decision (issue 12, build item 4).

The match stage decides on a track's template: the quality-weighted mean of its best
``OPENLFR_MATCH_TEMPLATE_FACES`` (K) faces by quality (``openlfr.pipeline.templates``). A face
enters the template only while it holds fewer than K faces, or when the face is strictly better
than the worst of them; any other face leaves the template, and so the decision, as it was.
Such a face need not be embedded. The embed stage cannot see the match stage's tracks (they are
made from the embeddings), so it follows faces itself, by their boxes, per camera:

* **Where.** The embed stage's input, like every topic, is keyed by camera id, so all of a
  camera's frames reach one replica, in capture order, on one partition; a per-camera state in
  that replica sees everything it needs, under any number of replicas. In the embedded
  pipeline it is the one stage object. A partition that moves to another replica starts with
  no state there: its faces are all new, so all embedded (it errs towards embedding).
* **Following.** A face continues a follow of its camera when its box overlaps the follow's
  last box by at least ``follow_min_iou``, the follow was seen at most ``follow_gap_s`` of
  event time ago, and the pairing is unambiguous: the face overlaps no other follow and the
  follow no other face of the frame (two people crossing). Anything else starts a new follow.
  A new follow is what errs: it is embedded as a new person would be.
* **Decision.** A face of quality below ``OPENLFR_MATCH_MIN_QUALITY`` is skipped
  (``low_quality``): the match stage drops it unsearched and untracked. A face is embedded
  while its follow has had fewer than K good faces (``first``), when it is strictly better than
  the K-th best good face so far (``better``: it would enter the template), and, to keep the
  match stage's track alive and to re-check who it is, when the follow's last embedded face is
  ``recheck_s`` of event time old (``recheck``; below ``OPENLFR_MATCH_TRACK_MAX_GAP_S``, so the
  match stage's track never ends between two embedded faces). Every other face is skipped
  (``not_better``). A face that starts a follow is embedded (``new``), as is every face of a
  frame that does not come after the camera's last (``unordered``: a replay; its decision is
  not remembered) or that came in several parts (``crowd``).
* **Faithful to the template.** With one follow per match track, the faces embedded include
  every face that ever enters the track's template, so the template, its decisions and its
  alerts are the ones every face would give. What differs: the match stage's tracker sees
  fewer faces (its mean embedding is over fewer faces, its last box may be ``recheck_s`` old),
  and the references the skipped faces' searches would have found are not offered. Measured
  on the chokepoint and the 720p crossing scene (docs/benchmarks.md): the same alerts.
* **Re-delivery.** Decisions are planned on a copy of the state and committed after the batch
  is embedded, so a batch the backend failed is planned again from the same state; a frame
  handed over again after it was committed gets the decision it got (the last
  :data:`RECENT_DECISIONS` frames of a camera are remembered).

Only the vote decision (``OPENLFR_MATCH_DECISION=votes``) counts every frame; skipping would
take its votes away, so the two cannot be combined (refused at start).
"""

from __future__ import annotations

import copy
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.kafka.metrics import metrics_for
from openlfr.messages.models import Faces
from openlfr.pipeline.tracker import box_iou

#: Frames of a camera whose decisions are remembered for a batch handed over again.
RECENT_DECISIONS = 64
#: Most cameras whose follows are kept; the least recently seen is forgotten first.
MAX_CAMERAS = 4096

SkipReason = Literal["not_better", "low_quality"]
EmbedReason = Literal["first", "better", "recheck", "reappeared", "new", "unordered", "crowd"]
#: A follow missing from its camera's frames for more than this many frame periods is re-checked
#: when its face comes back (someone else may have stepped into the spot).
REAPPEAR_PERIODS = 1.5


def _match_env(name: str) -> AliasChoices:
    """Read a match-stage setting under its own name (one value for both stages)."""
    return AliasChoices(f"OPENLFR_MATCH_{name.upper()}", f"match_{name}")


class EmbedSkipSettings(BaseSettings):
    """Settings of the embed skip (env ``OPENLFR_EMBED_SKIP_<NAME>``), and the match stage's
    settings it must agree with, read under the match stage's names (``OPENLFR_MATCH_...``):
    give the embed service the same values as the match service.
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_EMBED_SKIP_", frozen=True, extra="ignore",
                                      populate_by_name=True)

    #: Skip faces that cannot change a decision; ``false`` embeds every face.
    enabled: bool = True
    #: A followed face is embedded at least this often (event time), to keep the match stage's
    #: track alive and re-check who it is.
    recheck_s: float = Field(default=0.5, gt=0, le=60)
    #: A follow ends this long (event time) after its last face.
    follow_gap_s: float = Field(default=0.5, gt=0, le=60)
    #: Least box overlap with a follow's last box for a face to continue it.
    follow_min_iou: float = Field(default=0.3, gt=0, le=1)
    match_decision: Literal["template", "votes"] = Field(default="template",
                                                         validation_alias=_match_env("decision"))
    match_template_faces: int = Field(default=5, ge=1, le=100, validation_alias=_match_env("template_faces"))
    match_min_quality: float = Field(default=0.2, ge=0, le=1, validation_alias=_match_env("min_quality"))
    match_track_max_gap_s: float = Field(default=2.0, gt=0, validation_alias=_match_env("track_max_gap_s"))
    match_track_max_distance: float = Field(default=0.45, gt=0, lt=2,
                                            validation_alias=_match_env("track_max_distance"))

    @model_validator(mode="after")
    def _consistent(self) -> EmbedSkipSettings:
        if not self.enabled:
            return self
        if self.match_decision != "template":
            raise ValueError(
                "OPENLFR_EMBED_SKIP_ENABLED=true needs OPENLFR_MATCH_DECISION=template: the vote decision "
                "counts every frame, so set OPENLFR_EMBED_SKIP_ENABLED=false with votes"
            )
        if self.recheck_s >= self.match_track_max_gap_s:
            raise ValueError(
                f"OPENLFR_EMBED_SKIP_RECHECK_S ({self.recheck_s:g}) must be below OPENLFR_MATCH_TRACK_MAX_GAP_S "
                f"({self.match_track_max_gap_s:g}), or the match stage's tracks end between two embedded faces"
            )
        return self

    @classmethod
    def for_match(cls, match: object, **values: object) -> EmbedSkipSettings:
        """Settings that agree with a match stage's (``MatchSettings``) in the same process;
        ``values`` (``enabled``, ``recheck_s``...) over the environment's."""
        return cls(
            match_decision=getattr(match, "decision"),
            match_template_faces=getattr(match, "template_faces"),
            match_min_quality=getattr(match, "min_quality"),
            match_track_max_gap_s=getattr(match, "track_max_gap_s"),
            match_track_max_distance=getattr(match, "track_max_distance"),
            **values,  # type: ignore[arg-type]
        )


class SkipMetrics:
    """``openlfr_embed_faces_skipped_total{reason}`` and ``openlfr_embed_faces_embedded_total{reason}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.skipped = Counter(
            "openlfr_embed_faces_skipped_total",
            "Faces the embed stage did not embed: not_better (no better than its follow's best "
            "OPENLFR_MATCH_TEMPLATE_FACES and no re-check due), low_quality (below OPENLFR_MATCH_MIN_QUALITY).",
            ["reason"],
            registry=registry,
        )
        self.embedded = Counter(
            "openlfr_embed_faces_embedded_total",
            "Faces the embed stage embedded with the skip on, by why: first (the follow's first good faces), "
            "better (would enter the template), recheck, new (starts a follow), unordered, crowd.",
            ["reason"],
            registry=registry,
        )
        self.switched = Counter(
            "openlfr_embed_follows_restarted_total",
            "Follows whose embedded face turned out to be someone else (farther than "
            "OPENLFR_MATCH_TRACK_MAX_DISTANCE): their next faces are embedded as a new person's.",
            registry=registry,
        )


@dataclass(slots=True)
class _Follow:
    box: tuple[float, float, float, float]
    last_ts: float
    #: Qualities of the best good faces so far, at most K, in no order.
    best: list[float] = field(default_factory=list)
    embedded_ts: float | None = None
    #: The last embedded face's vector and the sum and count of the embedded ones (who this is).
    vector: np.ndarray | None = field(default=None, repr=False)
    vector_sum: np.ndarray | None = field(default=None, repr=False)
    vectors: int = 0
    #: Came back after a gap and not yet confirmed by a vector: its faces are embedded till then.
    pending: bool = False


@dataclass(slots=True)
class _Camera:
    newest_ts: float
    follows: list[_Follow] = field(default_factory=list)
    #: Recent gaps between the camera's messages (its frame period is the least of them).
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    #: (frame_id, part) -> the indexes embedded
    decided: OrderedDict[tuple[str, int], tuple[int, ...]] = field(default_factory=OrderedDict)


@dataclass(frozen=True, slots=True)
class SkipPlan:
    """What to embed of one ``Faces`` message: the face positions (in ``message.faces``) to
    embed, and the count of faces per reason."""

    keep: tuple[int, ...]
    embedded: dict[str, int]
    skipped: dict[str, int]
    #: per face kept, the follow it belongs to (in the state planned on) and the face's quality
    follows: tuple[_Follow | None, ...] = ()
    qualities: tuple[float, ...] = ()


class SkipState:
    """The follows of every camera; :meth:`plan` on a :meth:`copy`, then commit by keeping it."""

    def __init__(self) -> None:
        self.cameras: OrderedDict[str, _Camera] = OrderedDict()
        #: cameras this copy has its own copy of (the rest are shared with the committed state)
        self._own: set[str] = set()

    def copy(self) -> SkipState:
        """A copy whose cameras are copied when first touched (a batch touches few)."""
        new = SkipState()
        new.cameras = OrderedDict(self.cameras)
        return new

    def save(self, camera_id: str) -> _Camera | None:
        """A copy of one camera's state, to :meth:`restore` if its message is refused after all."""
        cam = self.cameras.get(camera_id)
        return copy.deepcopy(cam) if cam is not None else None

    def restore(self, camera_id: str, saved: _Camera | None) -> None:
        """Put back what :meth:`save` returned."""
        if saved is None:
            self.cameras.pop(camera_id, None)
        else:
            self.cameras[camera_id] = saved
        self._own.add(camera_id)

    def camera(self, camera_id: str) -> _Camera | None:
        """The camera's state, this copy's own to change."""
        cam = self.cameras.get(camera_id)
        if cam is not None and camera_id not in self._own:
            cam = self.cameras[camera_id] = copy.deepcopy(cam)
        self._own.add(camera_id)
        return cam


class EmbedSkip:
    """Decides which faces of each ``Faces`` message the embed stage embeds (module docstring).

    Args:
        settings: the skip and the match settings it agrees with (``enabled`` must be true).
        registry: where the skip counters are registered (the default registry if left out).

    Raises:
        ValueError: ``settings.enabled`` is false (build no skip at all then).
    """

    def __init__(self, settings: EmbedSkipSettings, *, registry: CollectorRegistry | None = None) -> None:
        if not settings.enabled:
            raise ValueError("EmbedSkip: settings.enabled is false; embed every face instead")
        self.settings = settings
        self.k = settings.match_template_faces
        self.state = SkipState()
        self.metrics: SkipMetrics = metrics_for(SkipMetrics, registry)

    @classmethod
    def from_settings(cls, settings: EmbedSkipSettings, *, registry: CollectorRegistry | None = None) -> EmbedSkip | None:
        """The skip, or None when the settings turn it off."""
        return cls(settings, registry=registry) if settings.enabled else None

    def begin(self) -> SkipState:
        """A copy of the state to plan a batch on (see :meth:`commit`)."""
        return self.state.copy()

    def commit(self, state: SkipState, plans: Sequence[SkipPlan]) -> None:
        """Make a batch's state the skip's and count its decisions."""
        self.state = state
        for plan in plans:
            for reason, n in plan.embedded.items():
                self.metrics.embedded.labels(reason).inc(n)
            for reason, n in plan.skipped.items():
                self.metrics.skipped.labels(reason).inc(n)

    def plan(self, state: SkipState, message: Faces) -> SkipPlan:
        """Which faces of ``message`` to embed, updating ``state``."""
        cam = state.camera(message.camera_id)
        key = (message.frame_id, message.part)
        if cam is not None and key in cam.decided:
            # Handed over again after it was committed: the same faces as the first time.
            return SkipPlan(cam.decided[key], {}, {})
        everything = tuple(range(len(message.faces)))
        if message.parts > 1:
            return SkipPlan(everything, {"crowd": len(everything)}, {})
        if cam is not None and message.capture_ts <= cam.newest_ts:
            return SkipPlan(everything, {"unordered": len(everything)}, {})
        if cam is None:
            cam = state.cameras[message.camera_id] = _Camera(newest_ts=message.capture_ts)
            while len(state.cameras) > MAX_CAMERAS:
                state.cameras.popitem(last=False)
        state.cameras.move_to_end(message.camera_id)
        now = message.capture_ts
        if cam.newest_ts < now:
            cam.gaps.append(now - cam.newest_ts)
        cam.newest_ts = now
        # Within this of its last face a follow was in the camera's previous frame.
        adjacent = REAPPEAR_PERIODS * min(cam.gaps) if cam.gaps else 0.0
        cam.follows = [f for f in cam.follows if now - f.last_ts <= self.settings.follow_gap_s]
        pairs = self._pairs(cam.follows, message)
        keep: list[int] = []
        follows: list[_Follow | None] = []
        embedded: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for i, face in enumerate(message.faces):
            follow = pairs.get(i)
            box = (float(face.box[0]), float(face.box[1]), float(face.box[2]), float(face.box[3]))
            if follow is None:
                follow = _Follow(box=box, last_ts=now)
                cam.follows.append(follow)
                seen = "new"
            else:
                seen = "first" if now - follow.last_ts <= adjacent else "reappeared"
                follow.box, follow.last_ts = box, now
            reason = self._decide(follow, face.quality.score, now=now, seen=seen)
            if reason in ("not_better", "low_quality"):
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                keep.append(i)
                follows.append(follow)
                embedded[reason] = embedded.get(reason, 0) + 1
        cam.decided[key] = tuple(keep)
        while len(cam.decided) > RECENT_DECISIONS:
            cam.decided.popitem(last=False)
        qualities = tuple(message.faces[i].quality.score for i in keep)
        return SkipPlan(tuple(keep), embedded, skipped, tuple(follows), qualities)

    def _decide(self, follow: _Follow, quality: float, *, now: float, seen: str) -> str:
        """Why the face is embedded, or why not (``seen``: ``new``, ``first`` (in the camera's
        previous frame too) or ``reappeared``)."""
        if quality < self.settings.match_min_quality:
            return "low_quality"  # dropped unsearched at match; never in a template
        if len(follow.best) < self.k:
            follow.best.append(quality)
            reason = seen
        else:
            worst = min(range(len(follow.best)), key=follow.best.__getitem__)
            if quality > follow.best[worst]:  # strictly, as the template takes a face
                follow.best[worst] = quality
                reason = "better"
            elif seen == "reappeared" or follow.pending:
                reason = "reappeared"
            elif follow.embedded_ts is None or now - follow.embedded_ts >= self.settings.recheck_s:
                reason = "recheck"
            else:
                return "not_better"
        follow.embedded_ts = now
        follow.pending = follow.pending or seen == "reappeared"
        return reason

    def observe(self, plan: SkipPlan, vectors: np.ndarray) -> None:
        """Tell the follows of a planned message the vectors of their embedded faces (in the
        plan's order; before :meth:`commit`). A face farther than ``OPENLFR_MATCH_TRACK_MAX_DISTANCE``
        from its follow's last embedded face or their mean is someone else, as the match stage's
        tracker would find: the follow starts again from it, so that person's first K faces are
        embedded."""
        limit = self.settings.match_track_max_distance
        if not plan.follows:  # a crowd, a replay, a frame handed over again: no follow to tell
            return
        for follow, quality, vector in zip(plan.follows, plan.qualities, vectors, strict=True):
            if follow is None:
                continue
            follow.pending = False
            v = np.asarray(vector, np.float64).reshape(-1)
            if follow.vector is not None and follow.vector_sum is not None and (
                float(np.linalg.norm(v - follow.vector)) > limit
                or float(np.linalg.norm(v - follow.vector_sum / follow.vectors)) > limit
            ):
                follow.best = [quality]  # the new person's first good face
                follow.vector_sum, follow.vectors = None, 0
                self.metrics.switched.inc()
            follow.vector = v
            follow.vector_sum = v.copy() if follow.vector_sum is None else follow.vector_sum + v
            follow.vectors += 1

    def _pairs(self, follows: Sequence[_Follow], message: Faces) -> dict[int, _Follow]:
        """Face position -> the follow it continues: overlap at least ``follow_min_iou``, and
        neither the face nor the follow overlapping anything else."""
        if not follows:
            return {}
        boxes = [tuple(float(v) for v in face.box) for face in message.faces]
        iou = [[box_iou(follow.box, box) for box in boxes] for follow in follows]  # type: ignore[arg-type]
        pairs: dict[int, _Follow] = {}
        for fi, follow in enumerate(follows):
            touching = [i for i, v in enumerate(iou[fi]) if v > 0.0]
            if len(touching) != 1:
                continue
            i = touching[0]
            if iou[fi][i] < self.settings.follow_min_iou:
                continue
            if sum(1 for row in iou if row[i] > 0.0) != 1:
                continue
            pairs[i] = follow
        return pairs
