"""Backend registry keyed by the ``type`` string that settings name."""

from __future__ import annotations

from openlfr.config import ModelSettings
from openlfr.inference.base import InferenceBackend


def make_backend(settings: ModelSettings) -> InferenceBackend:
    """The backend ``settings.backend`` names, configured from ``settings``."""
    if settings.backend == "local":
        from openlfr.inference.local import LocalBackend

        return LocalBackend(settings.model_dir, intra_op_threads=settings.threads)
    if settings.backend == "triton":
        from openlfr.inference.triton import TritonBackend

        return TritonBackend(
            url=settings.triton_url, protocol=settings.triton_protocol, timeout_s=settings.triton_timeout_s
        )
    raise ValueError(f"OPENLFR_BACKEND: unknown backend {settings.backend!r}; expected 'local' or 'triton'")
