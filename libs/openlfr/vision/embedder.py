"""Face descriptors from aligned chips, on any inference backend, for the configured embedder."""

from __future__ import annotations

import numpy as np

from openlfr.inference.base import InferenceBackend
from openlfr.models.manifest import DLIB_RESNET, EmbedderManifest
from openlfr.models.specs import ModelSpec


class FaceEmbedder:
    """Maps (n, s, s, 3) uint8 RGB chips to (n, d) float32 descriptors of one embedder.

    The manifest (``openlfr.models.manifest``) says the chip side ``s`` and how faces are
    aligned for it (``alignment``), how pixels are fed (channel order, mean, scale, layout),
    the descriptor length ``d`` and whether descriptors are scaled to length 1.

    Args:
        backend: where the network runs.
        manifest: the embedder (default dlib's ResNet).
        spec: a bare serving contract instead of a manifest (RGB 0..255 NHWC in, raw vectors
            out), for networks whose graph does its own preprocessing.
    """

    def __init__(
        self,
        *,
        backend: InferenceBackend,
        manifest: EmbedderManifest | None = None,
        spec: ModelSpec | None = None,
    ) -> None:
        if manifest is not None and spec is not None:
            raise ValueError("FaceEmbedder: give a manifest or a spec, not both")
        if manifest is None and spec is None:
            manifest = DLIB_RESNET
        self.manifest = manifest
        resolved = manifest.spec() if manifest is not None else spec
        if resolved is None:  # unreachable: one of the two is set above
            raise ValueError("FaceEmbedder: no manifest and no spec")
        self.spec: ModelSpec = resolved
        shape = self.spec.inputs[0].shape
        self.chip_size = shape[0] if shape[-1] == 3 else shape[1]
        self.dim = self.spec.outputs[0].shape[0]
        self.backend = backend
        backend.load(self.spec)

    @property
    def name(self) -> str:
        """The embedder's name (what ``model_version`` is keyed by)."""
        return self.spec.name

    def _inputs(self, chips: np.ndarray) -> np.ndarray:
        pixels = chips.astype(np.float32)
        if self.manifest is None:
            return pixels
        spec = self.manifest.input
        if spec.channels == "BGR":
            pixels = pixels[..., ::-1]
        if spec.mean != (0.0, 0.0, 0.0) or spec.scale != 1.0:
            pixels = (pixels - np.asarray(spec.mean, np.float32)) * np.float32(spec.scale)
        if spec.layout == "NCHW":
            pixels = pixels.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(pixels)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Embed a batch of chips; an empty batch gives an empty (0, d) result.

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
            return np.zeros((0, self.dim), np.float32)
        result = self.backend.infer(self.spec, {self.spec.inputs[0].name: self._inputs(chips)})
        vectors = np.asarray(result[out_name], dtype=np.float32)
        if self.manifest is not None and self.manifest.normalise == "l2":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors
