"""A numpy executor of TFJS graph models: slow, plain, and the oracle the ONNX conversion is tested against.

Every op is written from TensorFlow's definition (NHWC tensors, HWIO filters, TF's padding
rules from :mod:`openlfr.models.tfjs_graph`), with no shared code with the ONNX converter
beyond those rules. It computes in float64 by default, so its rounding is well below the
converted model's float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from openlfr.models.tfjs_graph import (
    Fused,
    TfjsFormatError,
    TfjsGraph,
    TfjsNode,
    UnsupportedOpError,
    conv_padding,
    fused_ops,
    node_of,
    output_index,
    spatial,
)

OpFn = Callable[[TfjsNode, list[np.ndarray]], np.ndarray]


def _pad_spatial(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _windows(node: TfjsNode, x: np.ndarray, kernel_hw: tuple[int, int]):
    """Yield ``(ky, kx, patch)``: the input pixels each kernel tap sees, ``(n, oh, ow, c)``."""
    if x.ndim != 4:
        raise TfjsFormatError(f"node {node.name!r} ({node.op}): input of rank {x.ndim}, expected 4 (NHWC)")
    sy, sx = spatial(node, "strides")
    dy, dx = spatial(node, "dilations")
    kh, kw = kernel_hw
    xp = _pad_spatial(x, conv_padding(node, (x.shape[1], x.shape[2]), kernel_hw))
    oh = (xp.shape[1] - ((kh - 1) * dy + 1)) // sy + 1
    ow = (xp.shape[2] - ((kw - 1) * dx + 1)) // sx + 1
    if oh < 1 or ow < 1:
        raise TfjsFormatError(f"node {node.name!r}: kernel larger than the padded input")
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dy, kx * dx
            yield ky, kx, xp[:, y0 : y0 + (oh - 1) * sy + 1 : sy, x0 : x0 + (ow - 1) * sx + 1 : sx, :]


def conv2d(node: TfjsNode, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """TF ``Conv2D``: NHWC input, HWIO filter."""
    if w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise TfjsFormatError(f"node {node.name!r}: filter {w.shape} for input {x.shape}")
    out = None
    for ky, kx, patch in _windows(node, x, (w.shape[0], w.shape[1])):
        term = patch @ w[ky, kx]
        out = term if out is None else out + term
    return out


def depthwise_conv2d(node: TfjsNode, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """TF ``DepthwiseConv2dNative``: filter ``(kh, kw, c, m)``, output channel ``c * m + k``."""
    if w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise TfjsFormatError(f"node {node.name!r}: filter {w.shape} for input {x.shape}")
    out = None
    for ky, kx, patch in _windows(node, x, (w.shape[0], w.shape[1])):
        term = patch[..., :, None] * w[ky, kx]
        out = term if out is None else out + term
    n, oh, ow, c, m = out.shape
    return out.reshape(n, oh, ow, c * m)


def _activate(node: TfjsNode, fused: Fused, y: np.ndarray, args: list[np.ndarray]) -> np.ndarray:
    if fused.bias is not None:
        y = y + args[fused.bias]
    act = fused.activation
    if act is None:
        return y
    if act == "Relu":
        return np.maximum(y, 0)
    if act == "Relu6":
        return np.clip(y, 0, 6)
    if act == "Prelu":
        return np.where(y >= 0, y, y * args[fused.prelu_alpha])  # type: ignore[index]
    if act == "LeakyRelu":
        return np.where(y >= 0, y, y * fused.leaky_alpha)
    if act == "Elu":
        return np.where(y > 0, y, np.expm1(np.minimum(y, 0)))
    if act == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    raise UnsupportedOpError(node.op, node.name, f"activation {act}")


def _matmul(node: TfjsNode, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.ndim != 2 or b.ndim != 2:
        raise TfjsFormatError(f"node {node.name!r}: MatMul of ranks {a.ndim} and {b.ndim}, expected 2")
    if node.attr("transpose_a"):
        a = a.T
    if node.attr("transpose_b"):
        b = b.T
    return a @ b


def _axes(node: TfjsNode, value: np.ndarray, rank: int) -> tuple[int, ...]:
    axes = np.asarray(value).reshape(-1).astype(int)
    return tuple(sorted({int(a) % rank for a in axes}))


def _reduce(fn: Callable[..., np.ndarray]) -> OpFn:
    def run(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
        x, axes = args
        return fn(x, axis=_axes(node, axes, x.ndim), keepdims=bool(node.attr("keep_dims")))

    return run


def _squeeze(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    (x,) = args
    dims = node.attr("squeeze_dims") or []
    if not dims:
        return np.squeeze(x)
    axes = tuple(int(d) % x.ndim for d in dims)
    if any(x.shape[a] != 1 for a in axes):
        raise TfjsFormatError(f"node {node.name!r}: squeeze of dims {dims} of shape {x.shape}")
    return np.squeeze(x, axis=axes)


def _pad(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    x, paddings = args[0], np.asarray(args[1]).astype(int)
    value = float(args[2]) if len(args) > 2 else 0.0
    if paddings.shape != (x.ndim, 2) or (paddings < 0).any():
        raise TfjsFormatError(f"node {node.name!r}: paddings {paddings.tolist()} for rank {x.ndim}")
    return np.pad(x, [tuple(p) for p in paddings], constant_values=value)


def _softmax(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    (x,) = args
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reshape(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    x, shape = args
    return x.reshape(tuple(int(s) for s in np.asarray(shape).reshape(-1)))


def _fused_conv(conv: Callable[[TfjsNode, np.ndarray, np.ndarray], np.ndarray]) -> OpFn:
    def run(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
        fused = fused_ops(node)
        return _activate(node, fused, conv(node, args[0], args[1]), args)

    return run


def _fused_matmul(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    fused = fused_ops(node)
    return _activate(node, fused, _matmul(node, args[0], args[1]), args)


def _bias_add(node: TfjsNode, args: list[np.ndarray]) -> np.ndarray:
    x, b = args
    if (node.attr("data_format") or "NHWC") != "NHWC":
        raise UnsupportedOpError(node.op, node.name, "BiasAdd in NCHW")
    return x + b


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> OpFn:
    return lambda node, args: fn(args[0])


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> OpFn:
    return lambda node, args: fn(args[0], args[1])


#: The ops this executor runs, by TF op type.
OPS: dict[str, OpFn] = {
    "Identity": _unary(lambda x: x),
    "Conv2D": lambda node, args: conv2d(node, args[0], args[1]),
    "DepthwiseConv2dNative": lambda node, args: depthwise_conv2d(node, args[0], args[1]),
    "_FusedConv2D": _fused_conv(conv2d),
    "FusedDepthwiseConv2dNative": _fused_conv(depthwise_conv2d),
    "MatMul": lambda node, args: _matmul(node, args[0], args[1]),
    "_FusedMatMul": _fused_matmul,
    "BiasAdd": _bias_add,
    "Add": _binary(np.add),
    "AddV2": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "RealDiv": _binary(np.divide),
    "Maximum": _binary(np.maximum),
    "Minimum": _binary(np.minimum),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "Abs": _unary(np.abs),
    "Neg": _unary(np.negative),
    "Square": _unary(np.square),
    "Sqrt": _unary(np.sqrt),
    "Rsqrt": _unary(lambda x: 1 / np.sqrt(x)),
    "Sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "Prelu": lambda node, args: np.where(args[0] >= 0, args[0], args[0] * args[1]),
    "Softmax": _softmax,
    "Sum": _reduce(np.sum),
    "Mean": _reduce(np.mean),
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Pad": _pad,
    "PadV2": _pad,
}


def _const(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return value.astype(dtype) if value.dtype.kind == "f" else value


def run_graph(
    graph: TfjsGraph,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    *,
    dtype: type[np.floating] = np.float64,
    keep_all: bool = False,
) -> dict[str, np.ndarray]:
    """Run the graph on ``feeds`` (by placeholder name) and return ``outputs`` by reference.

    Args:
        graph: the model.
        feeds: one array per placeholder the outputs depend on.
        outputs: tensor references (``"node"`` or ``"node:0"``); the graph's outputs if None.
        dtype: float type to compute in (weights and feeds are cast to it).
        keep_all: return every computed node's value (by node name) as well.

    Raises:
        UnsupportedOpError: a node of an op not in :data:`OPS`.
        KeyError: a needed placeholder without a feed.
    """
    wanted = list(outputs) if outputs is not None else list(graph.outputs)
    nodes = graph.subgraph(wanted)
    for node in nodes:
        if node.op not in OPS and node.op not in ("Const", "Placeholder"):
            raise UnsupportedOpError(node.op, node.name)
    values: dict[str, np.ndarray] = {}
    for node in nodes:
        if node.op == "Const":
            values[node.name] = _const(graph.weights[node.name], np.dtype(dtype))
            continue
        if node.op == "Placeholder":
            if node.name not in feeds:
                raise KeyError(f"no feed for placeholder {node.name!r}")
            values[node.name] = np.asarray(feeds[node.name]).astype(dtype)
            continue
        args = []
        for ref in node.inputs:
            if output_index(ref) != 0:
                raise UnsupportedOpError(node.op, node.name, f"reads output {ref!r} of a multi-output op")
            args.append(values[node_of(ref)])
        values[node.name] = np.asarray(OPS[node.op](node, args))
    result = {ref: values[node_of(ref)] for ref in wanted}
    if keep_all:
        result.update(values)
    return result
