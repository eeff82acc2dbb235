"""The one interface every inference backend implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from openlfr.models.specs import ModelSpec


class InferenceBackend(abc.ABC):
    """Runs a named model on a batch. Implementations: ``local`` (onnxruntime), ``triton``.

    ``infer`` takes and returns batched arrays keyed by tensor name, as in the model's
    :class:`~openlfr.models.specs.ModelSpec`. Pre- and post-processing live above this layer,
    so both backends give the same numbers for the same inputs.
    """

    type: str

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> None:
        """Make ``spec`` ready to serve and verify it matches; raise ``ModelMismatchError`` if not."""

    @abc.abstractmethod
    def infer(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch through the model; raise ``InferenceError`` on failure."""

    def ready(self, spec: ModelSpec) -> tuple[bool, str]:
        """Whether ``spec`` can be served now, with the reason when not (for ``/readyz``)."""
        return True, "ok"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and sessions."""
