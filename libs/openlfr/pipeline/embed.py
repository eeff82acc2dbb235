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
from openlfr.messages.models import EmbeddedFace, Embeddings, Faces
from openlfr.messages.topics import EMBEDDINGS, FACES
from openlfr.pipeline.detect import DEFAULT_MAX_FRAME_AGE_S, check_max_age, fresh_and_decoded
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
    (the whole message: a frame's faces travel together); else one message keyed by camera id.
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

    def ready(self) -> tuple[bool, str]:
        """The embedder's model answers on its backend."""
        return self.embedder.backend.ready(self.embedder.spec)

    def handle(self, batch: Sequence[Incoming[Faces]], *, now: float) -> BatchResult:
        """Embed the faces of a batch (see the class docstring for each outcome).

        Raises:
            BackendUnavailable: the embedder's backend failed; retry the same batch.
        """
        result = BatchResult()
        kept, chips = fresh_and_decoded(
            batch, now=now, freshness=self.freshness, decode=self._decode_chips, result=result
        )
        if not kept:
            self.freshness.done()
            return result
        vectors = self._embed(np.concatenate(chips, axis=0))
        start = 0
        for taken, own in zip(kept, chips):
            item, n = taken.item, own.shape[0]
            try:
                message = self._message(item.message, vectors[start : start + n], lateness_s=taken.lateness_s)
            except ValueError as exc:
                result.rejected.append((item, str(exc)))
            else:
                result.outputs.append(Outgoing(topic=EMBEDDINGS, key=item.message.camera_id, message=message))
            start += n
        self.freshness.done()
        return result

    def _decode_chips(self, message: Faces) -> np.ndarray:
        size = self.embedder.chip_size
        chips = []
        for face in message.faces:
            chip = decode_image(face.chip_png, name=f"frame {message.frame_id} face {face.index} chip")
            if chip.shape != (size, size, 3):
                raise ImageError(
                    f"frame {message.frame_id} face {face.index} chip: "
                    f"expected {size}x{size} RGB, got shape {chip.shape}"
                )
            chips.append(chip)
        return np.stack(chips)

    def _embed(self, chips: np.ndarray) -> np.ndarray:
        parts = []
        try:
            for start in range(0, chips.shape[0], self.max_batch):
                parts.append(self.embedder.embed(chips[start : start + self.max_batch]))
        except InferenceError as exc:
            raise BackendUnavailable(f"embed: embedder backend failed: {exc}") from exc
        return np.concatenate(parts, axis=0)

    def _message(self, message: Faces, vectors: np.ndarray, *, lateness_s: float | None) -> Embeddings:
        """The ``Embeddings`` message; ``ValueError`` if a descriptor is not finite."""
        faces = []
        for face, vector in zip(message.faces, vectors):
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
