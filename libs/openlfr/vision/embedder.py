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

    With ``mirror``, each face is embedded twice, as cut and flipped left to right, and its
    descriptor is the two's mean direction at their mean length (:func:`mirror_mean`): the same
    rule as enrolment's mirrored references (``openlfr.watchlist.references``), so a probe and a
    reference are both the mean of a face and its mirror image. Measured on the shared set's
    tracks (docs/accuracy.md, "Mirrored probes"): FNIR at FPIR 1e-3 39.5% -> 35.5%, for one more
    embedding per face.

    Args:
        backend: where the network runs.
        manifest: the embedder (default dlib's ResNet).
        spec: a bare serving contract instead of a manifest (RGB 0..255 NHWC in, raw vectors
            out), for networks whose graph does its own preprocessing.
        mirror: embed each chip and its mirror image and average the two (see above).
    """

    def __init__(
        self,
        *,
        backend: InferenceBackend,
        manifest: EmbedderManifest | None = None,
        spec: ModelSpec | None = None,
        mirror: bool = False,
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
        self.mirror = mirror
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
        if chips.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        if not self.mirror:
            return self._embed_views(chips)
        # Two calls of the caller's batch size rather than one of twice it: a served model's
        # batch limit (Triton's max_batch_size) is the caller's to respect.
        return mirror_mean(self._embed_views(chips), self._embed_views(np.ascontiguousarray(chips[:, :, ::-1])))

    def _embed_views(self, chips: np.ndarray) -> np.ndarray:
        out_name = self.spec.outputs[0].name
        result = self.backend.infer(self.spec, {self.spec.inputs[0].name: self._inputs(chips)})
        vectors = np.asarray(result[out_name], dtype=np.float32)
        if self.manifest is not None and self.manifest.normalise == "l2":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def mirror_mean(vectors: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """Row by row, the mean direction of a descriptor and its mirror image's, at their mean length.

    Raises:
        ValueError: arrays of different shapes, or a zero descriptor.
    """
    a = np.asarray(vectors, dtype=np.float32)
    b = np.asarray(mirrored, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"mirror_mean: expected two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    la = np.linalg.norm(a, axis=1, keepdims=True)
    lb = np.linalg.norm(b, axis=1, keepdims=True)
    if not ((la > 0).all() and (lb > 0).all()):
        raise ValueError("mirror_mean: a zero descriptor has no direction")
    mean = (a / la + b / lb) / 2
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norm, 1e-12) * ((la + lb) / 2)).astype(np.float32)
