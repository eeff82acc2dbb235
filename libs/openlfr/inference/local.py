"""The ``local`` backend: onnxruntime CPU sessions in this process, one per model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from openlfr import paths
from openlfr.inference.base import InferenceBackend
from openlfr.inference.exceptions import InferenceError, ModelMismatchError, ModelNotBuiltError
from openlfr.inference.session_options import OrtThreading
from openlfr.inference.validation import (
    DYNAMIC,
    ServedTensor,
    batch_slices,
    concatenate,
    empty_outputs,
    io_differences,
    validate_inputs,
    validate_outputs,
)
from openlfr.models.specs import ModelSpec

logger = logging.getLogger(__name__)

_SPEC_DTYPES = {"tensor(float)": "FP32", "tensor(uint8)": "UINT8"}


def _served(node: ort.NodeArg) -> ServedTensor:
    # onnxruntime reports a dynamic dimension as a symbolic name or None.
    dims = [d if isinstance(d, int) and d >= 0 else DYNAMIC for d in node.shape]
    return ServedTensor(
        name=node.name, dtype=_SPEC_DTYPES.get(node.type, node.type), shape=tuple(dims[1:])
    )


def _batch_differences(kind: str, nodes: list[ort.NodeArg]) -> list[str]:
    differences = []
    for node in nodes:
        if not node.shape:
            differences.append(f"{kind} {node.name!r} has no batch dimension (shape {node.shape})")
        elif isinstance(node.shape[0], int) and node.shape[0] >= 0:
            differences.append(
                f"{kind} {node.name!r}: batch dimension fixed at {node.shape[0]}, expected dynamic"
            )
    return differences


class LocalBackend(InferenceBackend):
    """Runs models with onnxruntime on the CPU, from ``<model_dir>/<spec.onnx_file>``.

    Sessions are created by :meth:`load` (or on the first :meth:`infer` of a model) and shared
    by all threads; onnxruntime sessions are safe to run concurrently.
    """

    type = "local"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        allow_spinning: bool = False,
    ) -> None:
        """Create the backend; nothing is loaded yet.

        Args:
            model_dir: Directory of the ONNX files; defaults to :func:`openlfr.paths.model_dir`.
            intra_op_threads: Threads used inside one operator; 0 lets onnxruntime choose.
            inter_op_threads: Threads running independent operators in parallel; 0 lets
                onnxruntime choose (graphs run sequentially unless this is above 1).
            allow_spinning: Let idle pool threads spin-wait (onnxruntime's own default); off,
                they sleep at once, which leaves the cores to whatever else runs on them
                (:mod:`openlfr.inference.session_options`).

        Raises:
            ValueError: a thread count outside 0..256, naming it.
        """
        self.threading = OrtThreading(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                                      allow_spinning=allow_spinning)
        self.model_dir = Path(model_dir) if model_dir is not None else paths.model_dir()
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self._sessions: dict[ModelSpec, ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def load(self, spec: ModelSpec) -> None:
        """Open ``spec``'s ONNX file and check it against the spec.

        Raises:
            ModelNotBuiltError: The ONNX file is missing.
            ModelMismatchError: Input or output names, dtypes or non-batch dimensions differ
                from the spec, or the batch dimension is not dynamic.
            InferenceError: onnxruntime cannot open the file.
        """
        with self._lock:
            if spec in self._sessions:
                return
            path = self.model_dir / spec.onnx_file
            if not path.is_file():
                raise ModelNotBuiltError(
                    f"model {spec.name!r} is not built: {path} is missing; "
                    "run `openlfr models build`"
                )
            options = self.threading.session_options()
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own unexported exception types
                raise InferenceError(
                    f"model {spec.name!r}: onnxruntime cannot load {path}: {exc}"
                ) from exc
            inputs, outputs = session.get_inputs(), session.get_outputs()
            differences = (
                _batch_differences("input", inputs)
                + _batch_differences("output", outputs)
                + io_differences(
                    spec,
                    inputs=[_served(n) for n in inputs],
                    outputs=[_served(n) for n in outputs],
                )
            )
            if differences:
                raise ModelMismatchError(
                    f"model {spec.name!r} at {path} does not match its spec: "
                    + "; ".join(differences)
                )
            self._sessions[spec] = session
            logger.info('loaded model="%s" backend="local" path="%s" %s', spec.name, path, self.threading.describe())

    def infer(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch of any size, in sub-batches of at most ``spec.max_batch_size`` rows.

        Raises:
            ValueError: The inputs do not match the spec (names, dtypes, shapes).
            InferenceError: onnxruntime failed or returned something other than the spec.
        """
        batch_size = validate_inputs(spec, inputs)
        if batch_size == 0:
            return empty_outputs(spec)
        session = self._sessions.get(spec)
        if session is None:
            self.load(spec)
            session = self._sessions[spec]
        output_names = [t.name for t in spec.outputs]
        parts = []
        for rows in batch_slices(batch_size, spec.max_batch_size):
            feed = {name: np.ascontiguousarray(array[rows]) for name, array in inputs.items()}
            try:
                values = session.run(output_names, feed)
            except Exception as exc:  # onnxruntime raises its own unexported exception types
                raise InferenceError(f"model {spec.name!r}: onnxruntime failed: {exc}") from exc
            parts.append(dict(zip(output_names, values, strict=True)))
        outputs = concatenate(parts, spec)
        validate_outputs(spec, outputs, batch_size)
        return outputs

    def close(self) -> None:
        """Drop all sessions; a later ``infer`` loads again."""
        with self._lock:
            self._sessions.clear()
