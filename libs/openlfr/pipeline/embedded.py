"""The embedded mode: all five stages in one process over the in-process bus.

The same handlers and contracts as the separate services, with local onnxruntime models and
Qdrant's local mode. Ingest runs one thread per camera; the stages run in turn on the calling
thread, batch by batch, until every source is exhausted (files) or ``stop`` is set (streams).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from openlfr.messages.models import Alert
from openlfr.pipeline.alert import AlertStage
from openlfr.pipeline.bus import InProcessBus
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.ingest import CameraIngest, FrameSource, IngestCounters
from openlfr.pipeline.match import MatchStage
from openlfr.pipeline.stage import Stage

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EmbeddedSummary:
    """What a run did, for the end-of-run report."""

    cameras: int = 0
    frames_read: int = 0
    frames_sampled: int = 0
    frames_published: int = 0
    frames_processed: int = 0
    faces: int = 0
    tracks: int = 0
    matches: int = 0
    alerts: int = 0
    dead_letters: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: Stopped by Ctrl-C before the sources ended (what was read by then was still processed).
    interrupted: bool = False

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready figures."""
        return {name: getattr(self, name) for name in self.__slots__}

    def describe(self) -> str:
        """The figures in one line for a person."""
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        how = "stopped by Ctrl-C after" if self.interrupted else "in"
        return (f"{self.frames_processed} frame(s) processed of {self.frames_read} read, {self.faces} face(s), "
                f"{self.tracks} track(s), {self.matches} match(es), {self.alerts} alert(s) {how} {self.seconds:g} s; "
                f"dropped: {dropped}; dead letters: {self.dead_letters}")


def _add(into: dict[str, int], prefix: str, counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        key = f"{prefix}:{reason}"
        into[key] = into.get(key, 0) + n


class EmbeddedPipeline:
    """Wires ingest -> detect -> embed -> match -> alert on an :class:`InProcessBus`."""

    def __init__(
        self,
        *,
        detect: DetectStage,
        embed: EmbedStage,
        match: MatchStage,
        alert: AlertStage,
        batch_size: int = 8,
        bus: InProcessBus | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.stages: list[Stage] = [detect, embed, match, alert]
        self.match = match
        self.alert = alert
        self.batch_size = batch_size
        self.bus = bus or InProcessBus(capacity=4 * batch_size)
        self.summary = EmbeddedSummary()
        self._track_ids: set[str] = set()

    def _step(self, on_alert: Callable[[Alert], None], *, wait_s: float) -> int:
        """Run each stage once on what is waiting; returns how many inputs were handled."""
        handled = 0
        for i, stage in enumerate(self.stages):
            batch = self.bus.take(stage, max_messages=self.batch_size, timeout_s=wait_s if i == 0 else 0.0)
            if not batch:
                continue
            handled += len(batch)
            result = stage.handle(batch, now=time.time())
            self.bus.reject(stage, result.rejected)
            _add(self.summary.dropped, stage.name, result.dropped)
            if stage is self.stages[0]:
                self.summary.frames_processed += len(batch)
            for out in result.outputs:
                self.bus.publish(out, block=False)
                message = out.message
                if stage is self.stages[1]:
                    self.summary.faces += len(message.faces)  # type: ignore[attr-defined]
                elif stage is self.match:
                    self.summary.matches += 1
                elif stage is self.alert and isinstance(message, Alert):
                    self.summary.alerts += 1
                    on_alert(message)
            if stage is self.match:
                self._track_ids.update(t.track_id for t in self.match.tracker.tracks())
        return handled

    def run(
        self,
        cameras: Sequence[tuple[str, FrameSource]],
        *,
        sample_fps: float,
        on_alert: Callable[[Alert], None],
        stop: threading.Event | None = None,
        progress: Callable[[EmbeddedSummary], None] | None = None,
    ) -> EmbeddedSummary:
        """Run until every source ends (or ``stop`` is set) and the bus is drained.

        Ctrl-C (KeyboardInterrupt) stops the sources, processes what they had read, and returns
        the summary with ``interrupted`` set; a second Ctrl-C ends the draining too.
        ``progress`` is called with the summary so far after each round of the stages.
        """
        stop = stop or threading.Event()
        start = time.perf_counter()
        ingests = [
            CameraIngest(camera_id, source, publish=self.bus.publish, sample_fps=sample_fps)
            for camera_id, source in cameras
        ]
        errors: list[BaseException] = []

        def run_ingest(ingest: CameraIngest) -> None:
            try:
                ingest.run(stop)
            except BaseException as exc:  # reported after the run; the other cameras go on
                # The caller reports it (openlfr run names the flag); ingest has logged it.
                logger.debug('ingest failed camera_id="%s" error="%s"', ingest.camera_id, exc)
                errors.append(exc)

        threads = [threading.Thread(target=run_ingest, args=(i,), name=f"ingest-{i.camera_id}", daemon=True)
                   for i in ingests]
        for t in threads:
            t.start()
        try:
            while True:
                handled = self._step(on_alert, wait_s=0.2)
                if progress is not None:
                    progress(self.summary)
                if handled == 0 and not any(t.is_alive() for t in threads):
                    if all(self.bus.pending(s.input_topic) == 0 for s in self.stages):
                        break
        except KeyboardInterrupt:
            self.summary.interrupted = True
            stop.set()
            logger.warning("interrupted: the sources stop; what they read is still processed (Ctrl-C again to end now)")
            try:
                for t in threads:
                    t.join(timeout=15)
                while self._step(on_alert, wait_s=0.0):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        counters: list[IngestCounters] = [i.counters() for i in ingests]
        s = self.summary
        s.cameras = len(ingests)
        s.frames_read = sum(c.read for c in counters)
        s.frames_sampled = sum(c.sampled for c in counters)
        s.frames_published = sum(c.published for c in counters)
        for c in counters:
            _add(s.dropped, "ingest", dict(c.dropped))
        s.tracks = len(self._track_ids)
        s.dead_letters = len(self.bus.dead_letters)
        s.seconds = round(time.perf_counter() - start, 2)
        if errors:
            raise errors[0]
        return s
