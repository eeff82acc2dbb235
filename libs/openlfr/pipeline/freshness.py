"""Which inputs are worth a look: fresh frames, and the backlog an outage left, within a bound.

In steady state a stage drops every input whose frame was captured more than ``max_age_s`` ago
(counted ``stale``): an overloaded stage sheds old frames and keeps up with the live ones. The
same rule after an outage would throw away everything that queued up in Kafka while the stage
(or a stage before it, or its backend) was down, and with it everyone who passed meanwhile.

So a stage tells the two apart. It is *resuming* when its first batch since start, or since
the last batch it finished more than ``max_age_s`` ago, begins: a gap in its own work (stopped,
restarted, its backend down, its input starved by a stage before it that was down); an
overloaded stage works batch after batch with no gap. A camera whose first input after a
resume is late enters *catch-up*: its inputs up to ``lateness_s`` old are processed (every
``keep_every``-th frame of it, to catch up faster where there is little headroom), and stamped
with how late they were (``lateness_s`` on the message, carried to the alert). Catch-up ends
for the camera when an input is fresh again (caught up), or after ``2 x lateness_s`` of wall
time (a stage that does not catch up in that time is overloaded: the freshness limit applies
again). Inputs older than ``lateness_s`` are dropped as ``stale`` in any case (the stale-drop
alert rule sees them); inputs a stage before took up in catch-up (``lateness_s`` set) get the
same allowance downstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.messages.models import Message
from openlfr.pipeline.stage import BatchResult, Incoming

logger = logging.getLogger(__name__)

#: Default bound on lateness (seconds) within which a backlog left by an outage is processed.
DEFAULT_CATCHUP_LATENESS_S = 30.0
#: Catch-up of a camera lasts at most this many times the lateness bound (wall time).
CATCHUP_MAX_FACTOR = 2.0

M = TypeVar("M", bound=Message)


class CatchUpSettings(BaseSettings):
    """Catch-up settings of a stage with a frame-age limit (a mix-in of its service settings;
    env ``OPENLFR_CATCHUP_LATENESS_S``, ``OPENLFR_CATCHUP_KEEP_EVERY``)."""

    model_config = SettingsConfigDict(env_prefix="OPENLFR_", frozen=True, extra="ignore")

    #: After an outage (a gap in the stage's work: restart, stop, backend down), frames up to
    #: this old are processed instead of shed; 0 turns catch-up off. At or below the frame-age
    #: limit it adds nothing (every frame that young is processed anyway): a replay that raises
    #: the age limit need not touch it.
    catchup_lateness_s: float = Field(default=DEFAULT_CATCHUP_LATENESS_S, ge=0, le=3600)
    #: During catch-up, process every this-many-th frame of a camera (1: every frame).
    catchup_keep_every: int = Field(default=1, ge=1, le=100)


@dataclass(frozen=True, slots=True)
class Taken(Generic[M]):
    """An input to process, and how late it was taken up (None: within the freshness limit)."""

    item: Incoming[M]
    lateness_s: float | None


@dataclass(slots=True)
class _CatchUp:
    started: float
    frames: int = 0
    last_frame_id: str | None = None
    keep: bool = True


class Freshness:
    """The freshness rule of one stage instance, with catch-up after an outage (module doc)."""

    def __init__(
        self,
        *,
        max_age_s: float | None,
        lateness_s: float = DEFAULT_CATCHUP_LATENESS_S,
        keep_every: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
            max_age_s: the steady-state frame-age limit; None keeps everything (replays, files).
            lateness_s: the catch-up bound; 0 turns catch-up off, and at or below ``max_age_s``
                it takes nothing the age limit does not (no frame older than it is within it).
            keep_every: during catch-up, every this-many-th frame of a camera is processed.
            clock: wall clock (seconds since the epoch), read when a batch is done.

        Raises:
            ValueError: an argument out of range, naming it.
        """
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError(f"max_frame_age_s must be positive or None, got {max_age_s}")
        if lateness_s < 0:
            raise ValueError(f"catchup_lateness_s must be 0 or more, got {lateness_s}")
        if keep_every < 1:
            raise ValueError(f"catchup_keep_every must be at least 1, got {keep_every}")
        self.max_age_s = max_age_s
        self.lateness_s = lateness_s
        self.keep_every = keep_every
        self._clock = clock
        self._last_done: float | None = None
        self._resumed_at: float | None = None
        self._seen_since_resume: set[str] = set()
        self._catching_up: dict[str, _CatchUp] = {}

    def catching_up(self) -> frozenset[str]:
        """Cameras in catch-up now."""
        return frozenset(self._catching_up)

    def select(self, batch: Sequence[Incoming[M]], *, now: float, result: BatchResult) -> list[Taken[M]]:
        """The inputs of a batch to process, in order; the others counted in ``result.dropped``
        (``stale``, ``catchup_sampled``)."""
        if self.max_age_s is None:
            return [Taken(item, getattr(item.message, "lateness_s", None)) for item in batch]
        max_age = self.max_age_s
        if self.lateness_s and (self._last_done is None or now - self._last_done > max_age):
            self._resumed_at = now
            self._seen_since_resume = set()
        taken: list[Taken[M]] = []
        for item in batch:
            message = item.message
            camera, age = message.camera_id, now - message.capture_ts
            upstream: float | None = getattr(message, "lateness_s", None)
            state = self._catching_up.get(camera)
            if state is not None and (age <= max_age or now - state.started > CATCHUP_MAX_FACTOR * self.lateness_s):
                del self._catching_up[camera]
                logger.info('camera_id="%s" catch-up ended after="%.1f" caught_up="%s"', camera,
                            now - state.started, age <= max_age)
                state = None
            # A camera's first input taken since the resume decides whether it catches up.
            first = (camera not in self._seen_since_resume and self._resumed_at is not None
                     and now - self._resumed_at <= self.lateness_s)
            if age <= max_age:
                self._seen_since_resume.add(camera)
                taken.append(Taken(item, upstream))
                continue
            if not self.lateness_s or age > self.lateness_s or (state is None and upstream is None and not first):
                _drop(result, "stale")  # (older than the bound: lost even to catch-up)
                continue
            self._seen_since_resume.add(camera)
            if state is None:
                state = self._catching_up[camera] = _CatchUp(started=now)
                logger.info('camera_id="%s" catch-up started lateness_s="%.1f" bound_s="%.1f"', camera, age,
                            self.lateness_s)
            if upstream is None and not self._sampled_in(state, message.frame_id):
                _drop(result, "catchup_sampled")
                continue
            taken.append(Taken(item, max(age, upstream or 0.0)))
        return taken

    def done(self) -> None:
        """A batch was handled to the end: the stage is working (no gap) as of now."""
        self._last_done = self._clock()

    def _sampled_in(self, state: _CatchUp, frame_id: str) -> bool:
        """Every ``keep_every``-th frame of the camera (all parts of a frame alike)."""
        if frame_id != state.last_frame_id:
            state.last_frame_id = frame_id
            state.keep = state.frames % self.keep_every == 0
            state.frames += 1
        return state.keep


def _drop(result: BatchResult, reason: str) -> None:
    result.dropped[reason] = result.dropped.get(reason, 0) + 1
