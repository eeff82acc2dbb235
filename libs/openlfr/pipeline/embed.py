"""The embed stage: the faces of each frame in, the same faces with descriptors out.

The chips of every face of every fresh message in a batch go to the embedder together
(chunked at ``max_batch``), so the backend sees full batches however the faces are spread
over frames and cameras. Chips travel as PNG, so the embedder sees exactly the pixels the
detect stage cut: the split detect -> embed gives the vectors ``FaceAnalyzer.analyze_many``
gives for the same image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from openlfr.inference.exceptions import InferenceError
from openlfr.messages.models import DetectedFace, EmbeddedFace, Embeddings, Faces
from openlfr.messages.topics import EMBEDDINGS, FACES
from openlfr.pipeline.detect import DEFAULT_MAX_FRAME_AGE_S, check_max_age, fresh_and_decoded
from openlfr.pipeline.embed_skip import EmbedSkip, SkipPlan, SkipState
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.freshness import DEFAULT_CATCHUP_LATENESS_S, Freshness
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage
from openlfr.vision.embedder import FaceEmbedder
from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import decode_image

logger = logging.getLogger(__name__)


class EmbedStage(Stage[Faces]):
    """``faces`` -> ``embeddings``: one ``Embeddings`` message per fresh ``Faces`` message (a part
    of a crowded frame gives the same part: ``part``/``parts`` are kept).

    Per input: stale -> ``dropped["stale"]`` (or ``catchup_sampled`` in catch-up
    after an outage; a part detect took up in catch-up gets the same allowance); any chip that does not decode to a
    ``chip_size`` x ``chip_size`` RGB image, or a descriptor that is not finite -> ``rejected``
    (the whole message: a frame's faces travel together); with a ``skip``
    (``openlfr.pipeline.embed_skip``), the faces that cannot change a decision are left out, and a
    frame left with none -> ``dropped["skipped"]``; else one message keyed by camera id.
    """

    name = "embed"
    input_topic = FACES
    output_topics = (EMBEDDINGS,)
    input_model = Faces
    output_topic = EMBEDDINGS

    def __init__(
        self,
        embedder: FaceEmbedder,
        *,
        embedder_model: str,
        max_frame_age_s: float | None = DEFAULT_MAX_FRAME_AGE_S,
        max_batch: int | None = None,
        catchup_lateness_s: float = DEFAULT_CATCHUP_LATENESS_S,
        catchup_keep_every: int = 1,
        skip: EmbedSkip | None = None,
    ) -> None:
        """Set up the stage.

        Args:
            embedder: the face embedder (``FaceAnalyzer.embedder``).
            embedder_model: version of the embedding model, cited in every message
                (``openlfr.models.build.model_version(model_dir, embedder.spec.name)``).
            max_frame_age_s: messages whose frame was captured longer ago are dropped
                unprocessed; ``None`` turns the check off.
            max_batch: most chips per backend call; defaults to the model's ``max_batch_size``.
            catchup_lateness_s: after an outage, messages up to this old are processed instead
                of shed (``openlfr.pipeline.freshness``); 0 turns catch-up off.
            catchup_keep_every: in catch-up, every this-many-th frame of a camera is processed.
            skip: embeds only the faces that can change a track's decision
                (``openlfr.pipeline.embed_skip``); ``None`` embeds every face.

        Raises:
            ValueError: an argument out of range, naming it.
        """
        if not embedder_model:
            raise ValueError("embedder_model must be given")
        max_batch = embedder.spec.max_batch_size if max_batch is None else max_batch
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.embedder = embedder
        self.embedder_model = embedder_model
        self.max_frame_age_s = check_max_age(max_frame_age_s)
        self.freshness = Freshness(max_age_s=max_frame_age_s, lateness_s=catchup_lateness_s,
                                   keep_every=catchup_keep_every)
        self.max_batch = max_batch
        self.skip = skip

    def ready(self) -> tuple[bool, str]:
        """The embedder's model answers on its backend."""
        return self.embedder.backend.ready(self.embedder.spec)

    def handle(self, batch: Sequence[Incoming[Faces]], *, now: float) -> BatchResult:
        """Embed the faces of a batch (see the class docstring for each outcome).

        Raises:
            BackendUnavailable: the embedder's backend failed; retry the same batch.
        """
        result = BatchResult()
        state = self.skip.begin() if self.skip is not None else None
        plans: list[SkipPlan] = []

        def decode(message: Faces) -> np.ndarray:
            if self.skip is None or state is None:
                return self._decode_chips(message)
            saved = state.save(message.camera_id)
            plan = self.skip.plan(state, message)
            try:
                chips = self._decode_chips(message, plan.keep)
            except ImageError:
                state.restore(message.camera_id, saved)  # refused: as if never seen
                raise
            plans.append(plan)
            return chips

        kept, chips = fresh_and_decoded(batch, now=now, freshness=self.freshness, decode=decode, result=result)
        todo = [chip for chip in chips if chip.shape[0]]
        vectors = self._embed(np.concatenate(todo, axis=0)) if todo else np.zeros((0, 0), np.float32)
        if self.skip is not None and state is not None:
            at = 0
            for plan in plans:
                self.skip.observe(plan, vectors[at : at + len(plan.keep)])
                at += len(plan.keep)
            self.skip.commit(state, plans)  # only now: a failed backend leaves the state as it was
        start = 0
        for taken, own, plan in zip(kept, chips, plans if self.skip is not None else [None] * len(kept)):
            item, n = taken.item, own.shape[0]
            if n == 0:
                result.dropped["skipped"] = result.dropped.get("skipped", 0) + 1
                continue
            faces = item.message.faces if plan is None else tuple(item.message.faces[i] for i in plan.keep)
            try:
                message = self._message(item.message, faces, vectors[start : start + n], lateness_s=taken.lateness_s)
            except ValueError as exc:
                result.rejected.append((item, str(exc)))
            else:
                result.outputs.append(Outgoing(topic=EMBEDDINGS, key=item.message.camera_id, message=message))
            start += n
        self.freshness.done()
        return result

    def _decode_chips(self, message: Faces, keep: Sequence[int] | None = None) -> np.ndarray:
        """The chips of the message's faces (of those at positions ``keep``), ``(n, size, size, 3)``."""
        size = self.embedder.chip_size
        chips = []
        for face in message.faces if keep is None else [message.faces[i] for i in keep]:
            chip = decode_image(face.chip_png, name=f"frame {message.frame_id} face {face.index} chip")
            if chip.shape != (size, size, 3):
                raise ImageError(
                    f"frame {message.frame_id} face {face.index} chip: "
                    f"expected {size}x{size} RGB, got shape {chip.shape}"
                )
            chips.append(chip)
        return np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)

    def _embed(self, chips: np.ndarray) -> np.ndarray:
        parts = []
        try:
            for start in range(0, chips.shape[0], self.max_batch):
                parts.append(self.embedder.embed(chips[start : start + self.max_batch]))
        except InferenceError as exc:
            raise BackendUnavailable(f"embed: embedder backend failed: {exc}") from exc
        return np.concatenate(parts, axis=0)

    def _message(
        self, message: Faces, chosen: Sequence[DetectedFace], vectors: np.ndarray, *, lateness_s: float | None
    ) -> Embeddings:
        """The ``Embeddings`` message of the ``chosen`` faces; ``ValueError`` if a descriptor is not finite."""
        faces = []
        for face, vector in zip(chosen, vectors, strict=True):
            try:
                packed = EmbeddedFace.pack(vector)
            except ValueError as exc:
                raise ValueError(f"frame {message.frame_id} face {face.index}: {exc}") from exc
            faces.append(EmbeddedFace(**face.model_dump(), embedding=packed))
        return Embeddings(
            camera_id=message.camera_id,
            frame_id=message.frame_id,
            capture_ts=message.capture_ts,
            trace_id=message.trace_id,
            width=message.width,
            height=message.height,
            faces=tuple(faces),
            detector_model=message.detector_model,
            embedder_model=self.embedder_model,
            part=message.part,
            parts=message.parts,
            lateness_s=lateness_s,
        )
