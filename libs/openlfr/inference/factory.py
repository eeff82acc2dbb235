"""Backend registry keyed by the ``type`` string that settings name."""

from __future__ import annotations

from openlfr.config import ModelSettings, ModelStage
from openlfr.inference.base import InferenceBackend


def make_backend(settings: ModelSettings, *, stage: ModelStage = "detect") -> InferenceBackend:
    """The backend ``settings.backend`` names, configured from ``settings`` for ``stage`` (its
    onnxruntime thread pools, for the local backend)."""
    if settings.backend == "local":
        from openlfr.inference.local import LocalBackend

        threading = settings.ort_threading(stage)
        return LocalBackend(settings.model_dir, intra_op_threads=threading.intra_op_threads,
                            inter_op_threads=threading.inter_op_threads,
                            allow_spinning=threading.allow_spinning)
    if settings.backend == "triton":
        from openlfr.inference.triton import TritonBackend

        return TritonBackend(
            url=settings.triton_url, protocol=settings.triton_protocol, timeout_s=settings.triton_timeout_s
        )
    raise ValueError(f"OPENLFR_BACKEND: unknown backend {settings.backend!r}; expected 'local' or 'triton'")
