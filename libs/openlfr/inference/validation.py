"""Checks shared by the inference backends, so both refuse and accept exactly the same things.

Two kinds of check live here: a served model against its :class:`ModelSpec` (at ``load``), and a
batch of arrays against the spec (at every ``infer``, before and after the model runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from openlfr.inference.exceptions import InferenceError
from openlfr.models.specs import DType, ModelSpec, TensorSpec

logger = logging.getLogger(__name__)

#: numpy dtype of each spec dtype.
NUMPY_DTYPES: dict[DType, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "UINT8": np.dtype(np.uint8),
}

DYNAMIC = -1


@dataclass(frozen=True, slots=True)
class ServedTensor:
    """A tensor as a backend reports it, translated into the spec's vocabulary.

    Attributes:
        name: Tensor name.
        dtype: ``"FP32"``/``"UINT8"`` when the backend's type has a spec equivalent, otherwise the
            backend's own type string (which then never matches).
        shape: Dimensions without the batch dimension; ``-1`` for a dynamic dimension.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]


def format_shape(shape: Sequence[int], *, batch: str | None = "N") -> str:
    """Render a shape as ``(N, 150, 150, 3)``; dynamic dimensions as ``?``."""
    dims = [batch] if batch is not None else []
    dims += ["?" if d == DYNAMIC else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _dims_match(expected: Sequence[int], served: Sequence[int]) -> bool:
    """A served dynamic dimension accepts any expected size; a fixed one must equal it.

    An expected dynamic dimension needs a dynamic served one: a fixed served size would refuse
    the other sizes the contract allows.
    """
    if len(expected) != len(served):
        return False
    return all(s in (DYNAMIC, e) for e, s in zip(expected, served, strict=True))


def _tensor_differences(
    kind: str, expected: Sequence[TensorSpec], served: Sequence[ServedTensor]
) -> list[str]:
    differences: list[str] = []
    served_by_name = {t.name: t for t in served}
    expected_names = [t.name for t in expected]
    missing = [n for n in expected_names if n not in served_by_name]
    unexpected = [t.name for t in served if t.name not in expected_names]
    if missing:
        differences.append(f"{kind}(s) {missing} missing (served {kind}s: {list(served_by_name)})")
    if unexpected:
        differences.append(f"unexpected {kind}(s) {unexpected} (expected {expected_names})")
    for want in expected:
        got = served_by_name.get(want.name)
        if got is None:
            continue
        if got.dtype != want.dtype:
            differences.append(f"{kind} {want.name!r}: dtype {got.dtype}, expected {want.dtype}")
        if not _dims_match(want.shape, got.shape):
            differences.append(
                f"{kind} {want.name!r}: shape {format_shape(got.shape)}, "
                f"expected {format_shape(want.shape)}"
            )
    return differences


def io_differences(
    spec: ModelSpec, *, inputs: Sequence[ServedTensor], outputs: Sequence[ServedTensor]
) -> list[str]:
    """List every way the served inputs and outputs differ from ``spec`` (empty if they match)."""
    return _tensor_differences("input", spec.inputs, inputs) + _tensor_differences(
        "output", spec.outputs, outputs
    )


def validate_inputs(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
    """Check a batch against ``spec`` and return its batch size.

    Raises:
        ValueError: An input is missing, unexpected, not an array, or has the wrong dtype or
            shape, or the inputs disagree on the batch size. The message gives expected and
            actual values.
    """
    expected_names = [t.name for t in spec.inputs]
    missing = [n for n in expected_names if n not in inputs]
    unexpected = [n for n in inputs if n not in expected_names]
    if missing or unexpected:
        raise ValueError(
            f"model {spec.name!r}: inputs {sorted(inputs)}, expected {expected_names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {unexpected})" if unexpected else "")
        )
    batch_sizes: dict[str, int] = {}
    for tensor in spec.inputs:
        array = inputs[tensor.name]
        if not isinstance(array, np.ndarray):
            raise ValueError(
                f"model {spec.name!r} input {tensor.name!r}: {type(array).__name__}, "
                "expected numpy.ndarray"
            )
        want_dtype = NUMPY_DTYPES[tensor.dtype]
        if array.dtype != want_dtype:
            raise ValueError(
                f"model {spec.name!r} input {tensor.name!r}: dtype {array.dtype}, "
                f"expected {want_dtype} ({tensor.dtype})"
            )
        if array.ndim != len(tensor.shape) + 1 or any(
            e not in (DYNAMIC, a) for e, a in zip(tensor.shape, array.shape[1:], strict=True)
        ):
            raise ValueError(
                f"model {spec.name!r} input {tensor.name!r}: shape {tuple(array.shape)}, "
                f"expected {format_shape(tensor.shape)}"
            )
        batch_sizes[tensor.name] = array.shape[0]
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"model {spec.name!r}: inputs disagree on the batch size: {batch_sizes}")
    return next(iter(batch_sizes.values()))


def validate_outputs(spec: ModelSpec, outputs: Mapping[str, np.ndarray], batch_size: int) -> None:
    """Check what a model returned; a served model with dynamic dimensions is only checked here.

    Raises:
        InferenceError: An output is missing or has the wrong dtype or shape.
    """
    for tensor in spec.outputs:
        array = outputs.get(tensor.name)
        if array is None:
            raise InferenceError(
                f"model {spec.name!r} returned no {tensor.name!r} (got {sorted(outputs)})"
            )
        want_dtype = NUMPY_DTYPES[tensor.dtype]
        expected = (batch_size, *tensor.shape)
        if (
            array.dtype != want_dtype
            or array.ndim != len(expected)
            or any(e not in (DYNAMIC, a) for e, a in zip(expected, array.shape, strict=True))
        ):
            raise InferenceError(
                f"model {spec.name!r} output {tensor.name!r}: {array.dtype} {tuple(array.shape)}, "
                f"expected {want_dtype} {format_shape(tensor.shape, batch=str(batch_size))}"
            )


def batch_slices(batch_size: int, max_batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``max_batch_size`` rows covering ``batch_size`` rows."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size {max_batch_size}, expected >= 1")
    for start in range(0, batch_size, max_batch_size):
        yield slice(start, min(start + max_batch_size, batch_size))


def empty_outputs(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Outputs for a batch of zero rows, without calling the model (dynamic dimensions as 0)."""
    return {
        t.name: np.empty((0, *(max(d, 0) for d in t.shape)), dtype=NUMPY_DTYPES[t.dtype])
        for t in spec.outputs
    }


def concatenate(
    parts: Sequence[Mapping[str, np.ndarray]], spec: ModelSpec
) -> dict[str, np.ndarray]:
    """Join the outputs of consecutive sub-batches along the batch dimension."""
    if len(parts) == 1:
        return dict(parts[0])
    return {t.name: np.concatenate([p[t.name] for p in parts], axis=0) for t in spec.outputs}
