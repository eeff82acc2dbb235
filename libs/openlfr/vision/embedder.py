"""Face descriptors from aligned chips, on any inference backend."""

from __future__ import annotations

import numpy as np

from openlfr.inference.base import InferenceBackend
from openlfr.models.specs import EMBEDDER, ModelSpec


class FaceEmbedder:
    """Maps (n, 150, 150, 3) uint8 RGB chips to (n, 128) float32 dlib-ResNet descriptors."""

    def __init__(self, *, backend: InferenceBackend, spec: ModelSpec = EMBEDDER) -> None:
        self.backend = backend
        self.spec = spec
        self.chip_size = spec.inputs[0].shape[0]
        backend.load(spec)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Embed a batch of chips; an empty batch gives an empty (0, 128) result.

        Raises:
            ValueError: chips of the wrong shape or dtype.
        """
        chips = np.asarray(chips)
        want = (self.chip_size, self.chip_size, 3)
        if chips.ndim != 4 or chips.shape[1:] != want:
            raise ValueError(f"chips: expected shape (n, {want[0]}, {want[1]}, 3), got {chips.shape}")
        if chips.dtype != np.uint8:
            raise ValueError(f"chips: expected dtype uint8, got {chips.dtype}")
        out_name = self.spec.outputs[0].name
        if chips.shape[0] == 0:
            return np.zeros((0, self.spec.outputs[0].shape[0]), np.float32)
        result = self.backend.infer(self.spec, {self.spec.inputs[0].name: chips.astype(np.float32)})
        return np.asarray(result[out_name], dtype=np.float32)
