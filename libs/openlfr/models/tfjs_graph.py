"""TensorFlow.js graph models (``model.json`` + ``.bin`` shards), read without TensorFlow.

A TFJS graph model is a TensorFlow ``GraphDef`` written as JSON (``modelTopology.node``: name,
op, inputs, attributes) plus a weights manifest (``weightsManifest``: groups of shard files,
each listing name, shape, dtype and optional ``quantization`` of the weights stored one after
another in the concatenated shards). This module reads both into a :class:`TfjsGraph`:
attributes decoded from their protobuf-JSON form (strings are base64), every weight
dequantised to float32 or int32 the way ``tf.io.decodeWeights`` does, nodes in an order in
which each comes after its inputs.

The semantics the executors share live here too: TensorFlow's SAME/VALID/EXPLICIT padding
and the fused-op attributes of ``_FusedConv2D``, ``FusedDepthwiseConv2dNative`` and
``_FusedMatMul``. :mod:`openlfr.models.tfjs_reference` runs a graph in numpy (the oracle) and
:mod:`openlfr.models.tfjs_onnx` converts it to ONNX.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from openlfr.models.exceptions import ModelFormatError

logger = logging.getLogger(__name__)

AttrValue = Any
"""A decoded attribute: str, int, float, bool, a dtype name, a shape tuple or a list of those."""

_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1")}
_QUANTIZED: dict[str, np.dtype] = {
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}
#: TF's DataType enum names, as GraphDef JSON spells them, for the dtypes these graphs use.
_TF_DTYPES: dict[str, np.dtype] = {
    "DT_FLOAT": np.dtype("float32"),
    "DT_INT32": np.dtype("int32"),
    "DT_INT64": np.dtype("int64"),
    "DT_BOOL": np.dtype("bool"),
}


class TfjsFormatError(ModelFormatError):
    """A ``model.json`` or its weight shards are not a TFJS graph model this reader handles."""


class UnsupportedOpError(TfjsFormatError):
    """A graph uses an op (or an op variant) that an executor or the converter does not know."""

    def __init__(self, op: str, node: str, detail: str = "") -> None:
        self.op = op
        self.node = node
        suffix = f": {detail}" if detail else ""
        super().__init__(f"unsupported op {op!r} at node {node!r}{suffix}")


@dataclass(frozen=True, slots=True)
class TfjsNode:
    """One node of the graph.

    Attributes:
        name: the node's name (its first output is addressed by this name alone).
        op: the TF op type, e.g. ``"_FusedConv2D"``.
        inputs: data inputs as ``"node"`` or ``"node:k"``; control inputs (``^node``) dropped.
        attrs: decoded attributes (see :func:`decode_attr`).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)

    def attr(self, key: str, default: AttrValue = None) -> AttrValue:
        """An attribute's value, ``default`` when it is absent."""
        return self.attrs.get(key, default)


@dataclass(frozen=True, slots=True, eq=False)
class TfjsGraph:
    """A TFJS graph model in memory.

    Attributes:
        nodes: every node, inputs before the nodes that read them.
        weights: the value of each ``Const`` node by name (float32, int32 or bool arrays).
        inputs: names of the ``Placeholder`` nodes.
        input_shapes: each placeholder's declared shape (-1 for an unknown dimension).
        outputs: the signature's outputs where the model declares them, else the nodes no
            other node reads.
    """

    nodes: tuple[TfjsNode, ...]
    weights: Mapping[str, np.ndarray]
    inputs: tuple[str, ...]
    input_shapes: Mapping[str, tuple[int, ...]]
    outputs: tuple[str, ...]

    def node(self, name: str) -> TfjsNode:
        """The node called ``name`` (``KeyError`` naming it when there is none)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}")

    def ops(self) -> set[str]:
        """The op types used."""
        return {n.op for n in self.nodes}

    def subgraph(self, outputs: Sequence[str]) -> tuple[TfjsNode, ...]:
        """The nodes ``outputs`` depend on, in graph order.

        Raises:
            KeyError: an output names no node.
        """
        by_name = {n.name: n for n in self.nodes}
        needed: set[str] = set()
        stack = [node_of(o) for o in outputs]
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            if name not in by_name:
                raise KeyError(f"no node named {name!r}")
            needed.add(name)
            stack.extend(node_of(i) for i in by_name[name].inputs)
        return tuple(n for n in self.nodes if n.name in needed)


def node_of(ref: str) -> str:
    """The node name of a tensor reference ``"node"`` or ``"node:k"``."""
    return ref.rsplit(":", 1)[0] if ":" in ref else ref


def output_index(ref: str) -> int:
    """The output index of a tensor reference (0 for ``"node"``)."""
    if ":" not in ref:
        return 0
    tail = ref.rsplit(":", 1)[1]
    if not tail.isdigit():
        raise TfjsFormatError(f"tensor reference {ref!r}: expected 'node' or 'node:index'")
    return int(tail)


# --- attributes --------------------------------------------------------------------------


def _decode_scalar(kind: str, value: Any) -> AttrValue:
    if kind == "s":
        return base64.b64decode(value).decode("utf-8")
    if kind == "i":
        return int(value)
    if kind == "f":
        return float(value)
    if kind == "b":
        return bool(value)
    if kind == "type":
        return str(value)
    if kind == "shape":
        if value.get("unknownRank"):
            return None
        return tuple(int(d.get("size", 0)) for d in value.get("dim", []))
    raise TfjsFormatError(f"attribute kind {kind!r} is not handled")


def decode_attr(value: Mapping[str, Any]) -> AttrValue:
    """Decode one attribute from GraphDef JSON: ``{"i": "2"}`` -> 2, ``{"s": "U0FNRQ=="}`` -> ``"SAME"``.

    Lists (``{"list": {"i": [...]}}``) become Python lists (``{"list": {}}`` is ``[]``);
    an empty value (a protobuf default left out) is ``None``; ``tensor`` values are arrays.
    """
    if not value:
        return None
    if "list" in value:
        items = value["list"] or {}
        for kind, seq in items.items():
            return [_decode_scalar(kind, v) for v in seq]
        return []
    if "tensor" in value:
        return decode_tensor_proto(value["tensor"])
    if "func" in value:
        return value["func"]
    kind, raw = next(iter(value.items()))
    return _decode_scalar(kind, raw)


def decode_tensor_proto(tensor: Mapping[str, Any]) -> np.ndarray:
    """A ``TensorProto`` in JSON form (a ``Const`` value inlined in the topology) as an array."""
    dtype_name = tensor.get("dtype", "DT_FLOAT")
    if dtype_name not in _TF_DTYPES:
        raise TfjsFormatError(f"inline tensor of dtype {dtype_name} is not handled")
    dtype = _TF_DTYPES[dtype_name]
    shape = tuple(int(d.get("size", 0)) for d in tensor.get("tensorShape", {}).get("dim", []))
    if "tensorContent" in tensor:
        raw = base64.b64decode(tensor["tensorContent"])
        return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    for key in ("floatVal", "intVal", "int64Val", "boolVal"):
        if key in tensor:
            vals = np.asarray(tensor[key], dtype=dtype)
            count = math.prod(shape)
            if vals.size == 1 and count != 1:
                vals = np.full(count, vals[0], dtype=dtype)
            return vals.reshape(shape)
    return np.zeros(shape, dtype=dtype)


# --- weights -------------------------------------------------------------------------------


def decode_weights(specs: Sequence[Mapping[str, Any]], buffer: bytes) -> dict[str, np.ndarray]:
    """Split one weight group's concatenated bytes into named arrays, dequantised.

    ``quantization.dtype`` ``uint8``/``uint16`` stores ``q`` with ``value = q * scale + min``
    (rounded for int32 weights); ``float16`` stores IEEE half floats of float32 weights.

    Raises:
        TfjsFormatError: an unknown dtype or quantisation, missing min/scale, or a buffer of
            the wrong length.
    """
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        name = spec["name"]
        dtype = spec.get("dtype", "float32")
        shape = tuple(int(d) for d in spec.get("shape", []))
        count = math.prod(shape)
        quant = spec.get("quantization")
        if quant is not None:
            qdtype = quant.get("dtype")
            if qdtype not in _QUANTIZED:
                raise TfjsFormatError(f"weight {name!r}: unknown quantization dtype {qdtype!r}")
            stored = _QUANTIZED[qdtype]
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buffer):
                raise TfjsFormatError(f"weight {name!r}: shard data ends early")
            raw = np.frombuffer(buffer, stored, count, offset)
            if qdtype == "float16":
                if dtype != "float32":
                    raise TfjsFormatError(f"weight {name!r}: float16 quantization of a {dtype} weight")
                values = raw.astype(np.float32)
            else:
                if "min" not in quant or "scale" not in quant:
                    raise TfjsFormatError(f"weight {name!r}: {qdtype} quantization without min and scale")
                # Float32 arithmetic, as tfjs does it in a Float32Array.
                real = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                if dtype == "float32":
                    values = real
                elif dtype == "int32":
                    # Math.round: halves go up.
                    values = np.floor(real.astype(np.float64) + 0.5).astype(np.int32)
                else:
                    raise TfjsFormatError(f"weight {name!r}: {qdtype} quantization of a {dtype} weight")
        else:
            if dtype not in _DTYPES:
                raise TfjsFormatError(f"weight {name!r}: unsupported dtype {dtype!r}")
            stored = _DTYPES[dtype]
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buffer):
                raise TfjsFormatError(f"weight {name!r}: shard data ends early")
            values = np.frombuffer(buffer, stored, count, offset).astype(stored.newbyteorder("="))
            if dtype == "bool":
                values = values.astype(bool)
        offset += nbytes
        out[name] = np.ascontiguousarray(values.reshape(shape))
    if offset != len(buffer):
        raise TfjsFormatError(f"weight data holds {len(buffer)} bytes, the manifest describes {offset}")
    return out


# --- reading -------------------------------------------------------------------------------


def _toposort(nodes: Sequence[TfjsNode]) -> tuple[TfjsNode, ...]:
    by_name = {n.name: n for n in nodes}
    if len(by_name) != len(nodes):
        raise TfjsFormatError("two nodes share a name")
    state: dict[str, int] = {}
    order: list[TfjsNode] = []
    for root in nodes:
        stack: list[tuple[str, bool]] = [(root.name, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise TfjsFormatError(f"the graph has a cycle through node {name!r}")
            state[name] = 1
            stack.append((name, True))
            for ref in by_name[name].inputs:
                src = node_of(ref)
                if src not in by_name:
                    raise TfjsFormatError(f"node {name!r} reads {ref!r}, which no node produces")
                if state.get(src) != 2:
                    stack.append((src, False))
    return tuple(order)


def parse_model_json(model: Mapping[str, Any], shards: Mapping[str, bytes]) -> TfjsGraph:
    """Build a :class:`TfjsGraph` from a parsed ``model.json`` and its shard files' bytes.

    Args:
        model: the parsed JSON.
        shards: the bytes of each shard, keyed by the path the manifest gives.

    Raises:
        TfjsFormatError: not a graph model, a missing shard or weight, malformed attributes.
    """
    topology = model.get("modelTopology")
    if not isinstance(topology, Mapping) or "node" not in topology:
        raise TfjsFormatError("model.json has no modelTopology.node: not a TFJS graph model")
    if topology.get("library", {}).get("function"):
        raise TfjsFormatError("graphs with function libraries (control flow) are not handled")

    weights: dict[str, np.ndarray] = {}
    for group in model.get("weightsManifest", []):
        missing = [p for p in group["paths"] if p not in shards]
        if missing:
            raise TfjsFormatError(f"weight shards missing: {missing}")
        data = b"".join(shards[p] for p in group["paths"])
        weights.update(decode_weights(group["weights"], data))

    nodes: list[TfjsNode] = []
    for raw in topology["node"]:
        attrs = {k: decode_attr(v) for k, v in raw.get("attr", {}).items()}
        inputs = tuple(i for i in raw.get("input", []) if not i.startswith("^"))
        node = TfjsNode(name=raw["name"], op=raw["op"], inputs=inputs, attrs=attrs)
        if node.op == "Const" and node.name not in weights:
            value = attrs.get("value")
            if not isinstance(value, np.ndarray):
                raise TfjsFormatError(f"Const node {node.name!r} has no weight and no inline value")
            weights[node.name] = value
        nodes.append(node)
    ordered = _toposort(nodes)

    placeholders = [n for n in ordered if n.op == "Placeholder"]
    shapes = {}
    for p in placeholders:
        shape = p.attr("shape")
        shapes[p.name] = tuple(shape) if shape is not None else ()
    signature = model.get("signature") or model.get("userDefinedMetadata", {}).get("signature") or {}
    declared = [node_of(v.get("name", k)) for k, v in signature.get("outputs", {}).items()]
    names = {n.name for n in ordered}
    if declared and all(d in names for d in declared):
        outputs = tuple(declared)
    else:
        read = {node_of(i) for n in ordered for i in n.inputs}
        outputs = tuple(n.name for n in ordered if n.name not in read and n.op != "Const")
    return TfjsGraph(
        nodes=ordered,
        weights=weights,
        inputs=tuple(p.name for p in placeholders),
        input_shapes=shapes,
        outputs=outputs,
    )


def read_tfjs_graph(model_json: Path) -> TfjsGraph:
    """Read a TFJS graph model: ``model_json`` and the shards its manifest names beside it.

    Raises:
        FileNotFoundError: the JSON or a shard is missing.
        TfjsFormatError: see :func:`parse_model_json`.
    """
    model_json = Path(model_json)
    model = json.loads(model_json.read_text())
    if model.get("format") not in (None, "graph-model"):
        raise TfjsFormatError(f"{model_json}: format {model.get('format')!r}, expected 'graph-model'")
    shards = {}
    for group in model.get("weightsManifest", []):
        for rel in group["paths"]:
            shards[rel] = (model_json.parent / rel).read_bytes()
    graph = parse_model_json(model, shards)
    logger.debug(
        'read tfjs graph="%s" nodes="%d" weights="%d" ops="%s"',
        model_json,
        len(graph.nodes),
        len(graph.weights),
        ",".join(sorted(graph.ops())),
    )
    return graph


# --- semantics shared by the executors ------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis: ``(before, after)``.

    The output has ``ceil(size / stride)`` positions; the padding needed for that is split
    with the odd pixel, if any, after (bottom/right), as TF's ``GetWindowedOutputSize`` does.
    """
    if min(size, kernel, stride, dilation) < 1:
        raise ValueError(f"size, kernel, stride, dilation must be >= 1, got {size, kernel, stride, dilation}")
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


Padding2D = tuple[tuple[int, int], tuple[int, int]]


def conv_padding(node: TfjsNode, in_hw: tuple[int, int], kernel_hw: tuple[int, int]) -> Padding2D:
    """``((top, bottom), (left, right))`` of a convolution node's ``padding`` attribute.

    Raises:
        UnsupportedOpError: a data format other than NHWC or an unknown padding mode.
    """
    check_nhwc(node)
    strides = spatial(node, "strides")
    dilations = spatial(node, "dilations")
    mode = node.attr("padding", "VALID")
    if mode == "VALID":
        return (0, 0), (0, 0)
    if mode == "SAME":
        return (
            same_padding(in_hw[0], kernel_hw[0], strides[0], dilations[0]),
            same_padding(in_hw[1], kernel_hw[1], strides[1], dilations[1]),
        )
    if mode == "EXPLICIT":
        pads = [int(p) for p in node.attr("explicit_paddings", [])]
        if len(pads) != 8:
            raise UnsupportedOpError(node.op, node.name, f"explicit_paddings {pads}, expected 8 values")
        return (pads[2], pads[3]), (pads[4], pads[5])
    raise UnsupportedOpError(node.op, node.name, f"padding {mode!r}")


def check_nhwc(node: TfjsNode) -> None:
    """Refuse a node whose ``data_format`` is not NHWC."""
    fmt = node.attr("data_format", "NHWC") or "NHWC"
    if fmt != "NHWC":
        raise UnsupportedOpError(node.op, node.name, f"data_format {fmt!r} (only NHWC)")


def spatial(node: TfjsNode, key: Literal["strides", "dilations"]) -> tuple[int, int]:
    """The (height, width) entries of an NHWC ``strides``/``dilations`` attribute."""
    values = node.attr(key) or [1, 1, 1, 1]
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise UnsupportedOpError(node.op, node.name, f"{key} {values}")
    return int(values[1]), int(values[2])


Activation = Literal["Relu", "Relu6", "Prelu", "LeakyRelu", "Elu", "Sigmoid"]
_ACTIVATIONS: frozenset[str] = frozenset({"Relu", "Relu6", "Prelu", "LeakyRelu", "Elu", "Sigmoid"})


@dataclass(frozen=True, slots=True)
class Fused:
    """What a fused node adds after its convolution or product.

    Attributes:
        bias: the input (by index) added as a bias, or None.
        activation: the activation applied after the bias, or None.
        prelu_alpha: the input holding PReLU's slopes, or None.
        leaky_alpha: LeakyRelu's slope.
    """

    bias: int | None
    activation: Activation | None
    prelu_alpha: int | None
    leaky_alpha: float


def fused_ops(node: TfjsNode) -> Fused:
    """Parse ``fused_ops``/``num_args`` of ``_FusedConv2D``, ``FusedDepthwiseConv2dNative``, ``_FusedMatMul``.

    The node's inputs are the data, the filter (or right matrix), then ``num_args`` extra
    inputs: the bias (when ``BiasAdd`` is fused) followed by PReLU's slopes (when ``Prelu`` is).

    Raises:
        UnsupportedOpError: a fused batch norm or an unknown fused op.
    """
    ops: list[str] = list(node.attr("fused_ops") or [])
    num_args = int(node.attr("num_args") or 0)
    bias: int | None = None
    activation: str | None = None
    rest = ops
    if rest and rest[0] == "BiasAdd":
        bias = 2
        rest = rest[1:]
    if rest and rest[0] in _ACTIVATIONS:
        activation = rest[0]
        rest = rest[1:]
    if rest:
        raise UnsupportedOpError(node.op, node.name, f"fused_ops {ops}")
    prelu: int | None = None
    if activation == "Prelu":
        prelu = 3 if bias is not None else 2
    want = (bias is not None) + (prelu is not None)
    if num_args != want or len(node.inputs) != 2 + want:
        raise TfjsFormatError(
            f"node {node.name!r} ({node.op}): fused_ops {ops} need {want} extra inputs, "
            f"num_args is {num_args} and there are {len(node.inputs) - 2}"
        )
    leaky = float(node.attr("leakyrelu_alpha") or 0.2)
    return Fused(bias=bias, activation=activation, prelu_alpha=prelu, leaky_alpha=leaky)  # type: ignore[arg-type]


def consumers(nodes: Iterable[TfjsNode]) -> dict[str, list[TfjsNode]]:
    """The nodes reading each node's outputs, by node name."""
    out: dict[str, list[TfjsNode]] = {}
    for n in nodes:
        for ref in n.inputs:
            out.setdefault(node_of(ref), []).append(n)
    return out


def unfuse_relu_before_prelu(graph: TfjsGraph) -> tuple[TfjsGraph, list[str]]:
    """Undo a ReLU that a converter fused into a node whose output also feeds a PReLU pattern.

    The pattern is ``pos + alpha * (x - |x|)`` with ``pos = relu(x)``: TF-Slim's and Keras'
    PReLU without a PReLU op. When tfjs-converter fuses that ``Relu`` into the convolution
    before it, the ``Abs`` and ``Sub`` of the pattern read the rectified output, where
    ``x - |x|`` is always 0, so the layer computes a plain ReLU. This splits each such node
    into the unrectified node (read by ``Abs`` and ``Sub``) and a ``Relu`` under the original
    name (read by everything else), which restores the network as trained.

    Returns:
        The repaired graph and the names of the nodes split (empty: the graph is returned as is).
    """
    readers = consumers(graph.nodes)
    replaced: dict[str, tuple[TfjsNode, TfjsNode]] = {}
    rewired: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul"):
            continue
        ops = list(node.attr("fused_ops") or [])
        if not ops or ops[-1] != "Relu":
            continue
        users = readers.get(node.name, [])
        absolutes = [u for u in users if u.op == "Abs" and u.inputs == (node.name,)]
        subs = [u for u in users if u.op == "Sub" and any(u.inputs == (node.name, a.name) for a in absolutes)]
        if not absolutes or not subs:
            continue
        pre_name = f"{node.name}/pre_activation"
        pre = TfjsNode(
            name=pre_name, op=node.op, inputs=node.inputs, attrs={**node.attrs, "fused_ops": ops[:-1]}
        )
        relu = TfjsNode(name=node.name, op="Relu", inputs=(pre_name,))
        replaced[node.name] = (pre, relu)
        for u in (*absolutes, *subs):
            rewired[u.name] = node.name
    if not replaced:
        return graph, []
    nodes: list[TfjsNode] = []
    for node in graph.nodes:
        if node.name in replaced:
            nodes.extend(replaced[node.name])
            continue
        if node.name in rewired:
            src = rewired[node.name]
            pre_name = f"{src}/pre_activation"
            node = TfjsNode(
                name=node.name,
                op=node.op,
                inputs=tuple(pre_name if i == src else i for i in node.inputs),
                attrs=node.attrs,
            )
        nodes.append(node)
    repaired = TfjsGraph(
        nodes=_toposort(nodes),
        weights=graph.weights,
        inputs=graph.inputs,
        input_shapes=graph.input_shapes,
        outputs=graph.outputs,
    )
    return repaired, sorted(replaced)
