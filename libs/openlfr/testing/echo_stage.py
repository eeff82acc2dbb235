"""A stage for tests of the Kafka loop: it echoes each ``Frame`` to an output topic.

The output is the input frame with ``frame_id`` upper-cased and tagged with where the input was
read (``<FRAME_ID>@<partition>.<offset>``), so a test can tell from the outputs alone which
input offsets were processed. Switches make it fail the ways real stages fail:

* ``fail_first``: raise ``BackendUnavailable`` for the first N calls (a backend down);
* ``delay_s``: sleep per batch (a slow backend; lets a test kill the process mid-stream);
* frames whose ``frame_id`` starts with ``reject`` are rejected (dead-lettered with a reason);
* frames whose ``frame_id`` starts with ``boom`` make ``handle`` raise ``RuntimeError``;
* ``hold_frame_id``: once that frame is seen, its offset is held (not committed past) for ever.

As a service, with ``OPENLFR_*`` settings plus ``OPENLFR_ECHO_*``::

    OPENLFR_BOOTSTRAP=127.0.0.1:9092 python -m openlfr.testing.echo_stage
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from pydantic import Field

from openlfr.messages.models import Frame
from openlfr.messages.topics import FRAMES, HOUR_MS, TopicSpec
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage
from openlfr.service.main import run_stage_service
from openlfr.service.settings import ServiceSettings

#: Where the echo stage writes (tests map it to a unique name).
ECHO_OUT = TopicSpec("openlfr.test.echo.v1", 3, HOUR_MS, "echo stage output (tests only)")


class EchoSettings(ServiceSettings):
    """Service settings plus the echo stage's switches (``OPENLFR_ECHO_*``)."""

    echo_fail_first: int = Field(default=0, ge=0)
    echo_delay_s: float = Field(default=0.0, ge=0, le=60)
    echo_hold_frame_id: str | None = None


class EchoStage(Stage[Frame]):
    """Echoes frames; see the module docstring for its switches."""

    name = "echo"
    input_topic = FRAMES
    input_model = Frame
    output_topics = (ECHO_OUT,)

    def __init__(
        self, *, fail_first: int = 0, delay_s: float = 0.0, hold_frame_id: str | None = None
    ) -> None:
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.hold_frame_id = hold_frame_id
        self.calls = 0
        self.failures = 0
        self.seen: list[tuple[int, int]] = []  # (partition, offset) of handled inputs, in order
        self.closed = False
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: EchoSettings) -> EchoStage:
        """The stage a service runs."""
        return cls(
            fail_first=settings.echo_fail_first,
            delay_s=settings.echo_delay_s,
            hold_frame_id=settings.echo_hold_frame_id,
        )

    def handle(self, batch: Sequence[Incoming[Frame]], *, now: float) -> BatchResult:
        """Echo every frame, or fail as switched."""
        with self._lock:
            self.calls += 1
            if self.failures < self.fail_first:
                self.failures += 1
                raise BackendUnavailable(f"echo backend down (failure {self.failures})")
        if self.delay_s:
            time.sleep(self.delay_s)
        result = BatchResult()
        for incoming in batch:
            frame = incoming.message
            if frame.frame_id.startswith("boom"):
                raise RuntimeError(f"boom in frame {frame.frame_id}")
        for incoming in batch:
            frame = incoming.message
            self.seen.append((incoming.partition, incoming.offset))
            if frame.frame_id.startswith("reject"):
                result.rejected.append((incoming, f"rejected by echo: {frame.frame_id}"))
                continue
            if frame.frame_id == self.hold_frame_id:
                self._held.setdefault(incoming.partition, incoming.offset)
            tag = f"{frame.frame_id.upper()}@{incoming.partition}.{incoming.offset}"
            result.outputs.append(
                Outgoing(
                    topic=ECHO_OUT,
                    key=frame.camera_id,
                    message=frame.model_copy(update={"frame_id": tag}),
                )
            )
        result.hold.update(self._held)
        return result

    def close(self) -> None:
        """Remember that the runner closed it."""
        self.closed = True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the echo stage as a service."""
    return run_stage_service(EchoStage.from_settings, EchoSettings, argv)


if __name__ == "__main__":
    sys.exit(main())
