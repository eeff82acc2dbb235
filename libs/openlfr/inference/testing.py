"""Stand-in ONNX models for tests: the interface of a :class:`ModelSpec` with a tiny random graph.

The real models are converted from downloaded weights; these stand-ins let the backends, the
Triton repository and the server launcher be tested without them. The graph is
``Cast? -> Mul(1/255) -> Transpose(NHWC->NCHW) -> Conv 3x3 -> Relu -> GlobalAveragePool ->
Flatten -> MatMul + Add -> Reshape`` per output, so every output depends on every input pixel.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from openlfr.models.specs import DType, ModelSpec

logger = logging.getLogger(__name__)

_ONNX_TYPES: dict[DType, int] = {"FP32": TensorProto.FLOAT, "UINT8": TensorProto.UINT8}
_FEATURES = 8


def write_standin_onnx(
    spec: ModelSpec,
    path: Path,
    *,
    seed: int = 0,
    batch_dim: str | int = "N",
    opset: int = 17,
) -> Path:
    """Write a tiny ONNX model with the names, dtypes and shapes of ``spec`` to ``path``.

    Args:
        spec: The interface to imitate: one NHWC image input (``-1`` height/width allowed) and
            any number of fixed-shape outputs.
        path: Where to write the ``.onnx`` file; parent directories are created.
        seed: Seed of the random weights; the same seed gives the same model.
        batch_dim: Batch dimension of every tensor: a name (dynamic) or a fixed size, the
            latter to build a model that a backend must refuse.
        opset: ONNX opset of the graph.

    Returns:
        ``path``.

    Raises:
        ValueError: ``spec`` has an interface the stand-in graph cannot imitate.
    """
    if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 3:
        raise ValueError(
            f"model {spec.name!r}: stand-ins need one (N, H, W, C) input, got "
            f"{[(t.name, t.shape) for t in spec.inputs]}"
        )
    image = spec.inputs[0]
    channels = image.shape[2]
    if channels < 1:
        raise ValueError(f"model {spec.name!r}: stand-ins need a fixed channel count")
    if any(d < 1 for t in spec.outputs for d in t.shape):
        raise ValueError(f"model {spec.name!r}: stand-ins need fixed output shapes")

    rng = np.random.default_rng(seed)

    def internal(name: str) -> str:
        # Prefixed so no spec tensor name can collide with a node of the stand-in graph.
        return f"standin/{name}"

    def weights(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, internal(name))

    initializers = [
        weights("scale", np.array([1.0 / 255.0], dtype=np.float32)),
        weights("conv_w", rng.normal(0.0, 0.5, (_FEATURES, channels, 3, 3)).astype(np.float32)),
        weights("conv_b", rng.normal(0.0, 0.1, (_FEATURES,)).astype(np.float32)),
    ]
    source = image.name
    nodes = []
    if image.dtype != "FP32":
        nodes.append(
            helper.make_node("Cast", [source], [internal("as_float")], to=TensorProto.FLOAT)
        )
        source = internal("as_float")
    conv_inputs = [internal("nchw"), internal("conv_w"), internal("conv_b")]
    nodes += [
        helper.make_node("Mul", [source, internal("scale")], [internal("scaled")]),
        helper.make_node("Transpose", [internal("scaled")], [internal("nchw")], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", conv_inputs, [internal("conv")], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [internal("conv")], [internal("relu")]),
        helper.make_node("GlobalAveragePool", [internal("relu")], [internal("pooled")]),
        helper.make_node("Flatten", [internal("pooled")], [internal("features")], axis=1),
    ]
    for index, output in enumerate(spec.outputs):
        size = math.prod(output.shape)
        w, b, shape = internal(f"w{index}"), internal(f"b{index}"), internal(f"shape{index}")
        initializers += [
            weights(f"w{index}", rng.normal(0.0, 1.0, (_FEATURES, size)).astype(np.float32)),
            weights(f"b{index}", rng.normal(0.0, 0.1, (size,)).astype(np.float32)),
            weights(f"shape{index}", np.array([-1, *output.shape], dtype=np.int64)),
        ]
        result = output.name if output.dtype == "FP32" else internal(f"float{index}")
        nodes += [
            helper.make_node("MatMul", [internal("features"), w], [internal(f"mm{index}")]),
            helper.make_node("Add", [internal(f"mm{index}"), b], [internal(f"flat{index}")]),
            helper.make_node("Reshape", [internal(f"flat{index}"), shape], [result]),
        ]
        if output.dtype != "FP32":
            nodes.append(
                helper.make_node("Cast", [result], [output.name], to=_ONNX_TYPES[output.dtype])
            )

    def value_info(name: str, dtype: DType, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
        dims: list[str | int] = [batch_dim]
        dims += [d if d > 0 else f"{name}_{i}" for i, d in enumerate(shape)]
        return helper.make_tensor_value_info(name, _ONNX_TYPES[dtype], dims)

    graph = helper.make_graph(
        nodes,
        f"standin_{spec.name}",
        [value_info(image.name, image.dtype, image.shape)],
        [value_info(t.name, t.dtype, t.shape) for t in spec.outputs],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # Pin an IR version old enough for every onnxruntime the project runs (the Triton one may lag).
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    logger.debug('wrote stand-in model="%s" path="%s"', spec.name, path)
    return path
