"""Convert a TFJS graph model (:mod:`openlfr.models.tfjs_graph`) to ONNX, without TensorFlow.

The ONNX model keeps the TF model's NHWC input (with a dynamic batch dimension) and
transposes every 4-D input to NCHW once, at the start; activations then stay NCHW, the layout
ONNX's ``Conv`` wants, and each op that has NHWC meaning (reductions over axes, squeezes,
reshapes, pads, softmax) gets its axes remapped or, where that is not possible, a transpose
back to NHWC first. Constants that broadcast along NHWC's last axis are reshaped to broadcast
along NCHW's channel axis.

Padding is made explicit from the static spatial sizes, computed as TensorFlow computes SAME
(the odd pixel after: bottom/right), so asymmetric paddings are exact. Static shapes and
constant folding come from one run of the numpy reference executor on a zero batch of one:
any node that reads only constants becomes an initializer holding its value.

Ops outside :data:`SUPPORTED_OPS` are refused with :class:`UnsupportedOpError` naming the op
and the node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from openlfr.models.tfjs_graph import (
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
from openlfr.models.tfjs_reference import run_graph

logger = logging.getLogger(__name__)

OPSET = 17
#: Opset 17 came with IR version 8 (as the project's other converters declare).
IR_VERSION = 8
BATCH_DIM = "batch"

#: Where NHWC axis k sits in NCHW.
_NCHW_POS = (0, 2, 3, 1)

_BINARY = {
    "Add": "Add",
    "AddV2": "Add",
    "BiasAdd": "Add",
    "Sub": "Sub",
    "Mul": "Mul",
    "RealDiv": "Div",
    "Maximum": "Max",
    "Minimum": "Min",
}
_UNARY = {
    "Identity": "Identity",
    "Relu": "Relu",
    "Abs": "Abs",
    "Neg": "Neg",
    "Sqrt": "Sqrt",
    "Sigmoid": "Sigmoid",
}
_LAYOUT_OPS = frozenset(
    {
        "Conv2D",
        "_FusedConv2D",
        "DepthwiseConv2dNative",
        "FusedDepthwiseConv2dNative",
        "MatMul",
        "_FusedMatMul",
        "Square",
        "Rsqrt",
        "Relu6",
        "Prelu",
        "Softmax",
        "Sum",
        "Mean",
        "Squeeze",
        "Reshape",
        "Pad",
        "PadV2",
    }
)
#: The TF ops the converter translates (besides Const and Placeholder).
SUPPORTED_OPS: frozenset[str] = frozenset(_BINARY) | frozenset(_UNARY) | _LAYOUT_OPS


@dataclass
class _Tensor:
    """An emitted tensor: its ONNX name and whether it holds a 4-D NHWC value as NCHW."""

    name: str
    nchw: bool


@dataclass
class _Emitter:
    graph: TfjsGraph
    shapes: Mapping[str, tuple[int, ...]]
    consts: Mapping[str, np.ndarray]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    tensors: dict[str, _Tensor] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)
    _views: dict[tuple[str, bool], str] = field(default_factory=dict)
    _const_cache: dict[tuple[str, str], str] = field(default_factory=dict)

    def fresh(self, base: str) -> str:
        name = base
        k = 1
        while name in self._names:
            name = f"{base}__{k}"
            k += 1
        self._names.add(name)
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str, **attrs: object) -> str:
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    # -- tensors in a wanted layout ------------------------------------------------------

    def is_const(self, ref: str) -> bool:
        return node_of(ref) in self.consts

    def const(self, ref: str) -> np.ndarray:
        value = self.consts[node_of(ref)]
        return value.astype(np.float32) if value.dtype.kind == "f" else value

    def const_input(self, ref: str, *, nchw: bool) -> str:
        """A constant as an initializer, broadcastable in NCHW when ``nchw``."""
        key = (ref, "nchw" if nchw else "plain")
        if key not in self._const_cache:
            value = self.const(ref)
            if nchw and value.ndim > 0:
                if value.ndim > 4:
                    raise TfjsFormatError(f"constant {ref!r} of rank {value.ndim} against a 4-D tensor")
                value = value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(0, 3, 1, 2)
            self._const_cache[key] = self.initializer(f"{node_of(ref)}{'/nchw' if nchw else ''}", value)
        return self._const_cache[key]

    def view(self, ref: str, *, nchw: bool) -> str:
        """A computed tensor in NCHW (``nchw``) or as TF holds it, transposing once if needed."""
        t = self.tensors[node_of(ref)]
        if t.nchw == nchw:
            return t.name
        rank = len(self.shapes[node_of(ref)])
        if rank != 4:
            raise TfjsFormatError(f"tensor {ref!r} of rank {rank} cannot be viewed as NCHW")
        key = (t.name, nchw)
        if key not in self._views:
            perm = [0, 3, 1, 2] if nchw else [0, 2, 3, 1]
            self._views[key] = self.op(
                "Transpose", [t.name], f"{t.name}/{'nchw' if nchw else 'nhwc'}", perm=perm
            )
        return self._views[key]

    def stored_nchw(self, ref: str) -> bool:
        return not self.is_const(ref) and self.tensors[node_of(ref)].nchw

    def input(self, ref: str, *, nchw: bool) -> str:
        if output_index(ref) != 0:
            raise TfjsFormatError(f"reads output {ref!r} of a multi-output op")
        if self.is_const(ref):
            return self.const_input(ref, nchw=nchw)
        return self.view(ref, nchw=nchw)

    def set(self, node: TfjsNode, name: str, *, nchw: bool) -> None:
        self.tensors[node.name] = _Tensor(name, nchw)

    # -- ops -----------------------------------------------------------------------------

    def rank(self, ref: str) -> int:
        return len(self.shapes[node_of(ref)])

    def activation(
        self, node: TfjsNode, x: str, *, alpha_ref: str | None, act: str | None, leaky: float
    ) -> str:
        base = f"{node.name}/{act}"
        if act is None:
            return x
        if act == "Relu":
            return self.op("Relu", [x], base)
        if act == "Relu6":
            return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0)], base)
        if act == "Prelu":
            if alpha_ref is None:
                raise UnsupportedOpError(node.op, node.name, "Prelu without slopes")
            return self.op("PRelu", [x, self.const_input(alpha_ref, nchw=True)], base)
        if act == "LeakyRelu":
            return self.op("LeakyRelu", [x], base, alpha=leaky)
        if act == "Elu":
            return self.op("Elu", [x], base, alpha=1.0)
        if act == "Sigmoid":
            return self.op("Sigmoid", [x], base)
        raise UnsupportedOpError(node.op, node.name, f"activation {act}")

    def scalar(self, value: float) -> str:
        key = (repr(value), "scalar")
        if key not in self._const_cache:
            self._const_cache[key] = self.initializer("scalar", np.array(value, np.float32))
        return self._const_cache[key]

    def conv(self, node: TfjsNode) -> None:
        fused = fused_ops(node) if node.op.startswith(("_Fused", "Fused")) else None
        depthwise = "Depthwise" in node.op
        if not self.is_const(node.inputs[1]):
            raise UnsupportedOpError(node.op, node.name, "filter is not a constant")
        w = self.const(node.inputs[1])
        in_shape = self.shapes[node_of(node.inputs[0])]
        if len(in_shape) != 4:
            raise TfjsFormatError(f"node {node.name!r}: input of rank {len(in_shape)}, expected 4")
        (top, bottom), (left, right) = conv_padding(
            node, (in_shape[1], in_shape[2]), (w.shape[0], w.shape[1])
        )
        attrs: dict[str, object] = {
            "kernel_shape": [int(w.shape[0]), int(w.shape[1])],
            "strides": list(spatial(node, "strides")),
            "dilations": list(spatial(node, "dilations")),
            "pads": [top, left, bottom, right],
        }
        if depthwise:
            kh, kw, c, m = w.shape
            onnx_w = w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
            attrs["group"] = int(c)
        else:
            onnx_w = w.transpose(3, 2, 0, 1)
        inputs = [self.input(node.inputs[0], nchw=True), self.initializer(f"{node.name}/weights", onnx_w)]
        bias_separate = None
        if fused is not None and fused.bias is not None:
            bias_ref = node.inputs[fused.bias]
            if self.is_const(bias_ref) and self.const(bias_ref).ndim == 1:
                inputs.append(self.const_input(bias_ref, nchw=False))
            else:
                bias_separate = bias_ref
        y = self.op("Conv", inputs, f"{node.name}/conv" if fused else node.name, **attrs)
        if bias_separate is not None:
            y = self.op("Add", [y, self.input(bias_separate, nchw=True)], f"{node.name}/bias")
        if fused is not None:
            alpha = node.inputs[fused.prelu_alpha] if fused.prelu_alpha is not None else None
            y = self.activation(node, y, alpha_ref=alpha, act=fused.activation, leaky=fused.leaky_alpha)
        self.set(node, y, nchw=True)

    def matmul(self, node: TfjsNode) -> None:
        fused = fused_ops(node) if node.op == "_FusedMatMul" else None
        if self.rank(node.inputs[0]) != 2 or self.rank(node.inputs[1]) != 2:
            raise UnsupportedOpError(node.op, node.name, "MatMul of tensors not of rank 2")
        inputs = [self.input(node.inputs[0], nchw=False), self.input(node.inputs[1], nchw=False)]
        attrs = {"transA": int(bool(node.attr("transpose_a"))), "transB": int(bool(node.attr("transpose_b")))}
        act = None
        if fused is not None:
            if fused.bias is not None:
                inputs.append(self.input(node.inputs[fused.bias], nchw=False))
            act = fused.activation
        y = self.op("Gemm", inputs, f"{node.name}/gemm" if act else node.name, **attrs)
        if fused is not None:
            alpha = node.inputs[fused.prelu_alpha] if fused.prelu_alpha is not None else None
            y = self.activation(node, y, alpha_ref=alpha, act=act, leaky=fused.leaky_alpha)
        self.set(node, y, nchw=False)

    def elementwise(self, node: TfjsNode) -> None:
        refs = list(node.inputs)
        computed = [r for r in refs if not self.is_const(r)]
        nchw = any(self.stored_nchw(r) for r in computed)
        if nchw and any(self.rank(r) != 4 for r in computed):
            nchw = False  # mixed ranks: compute as TF lays the tensors out
        names = [self.input(r, nchw=nchw) for r in refs]
        if node.op in _BINARY:
            y = self.op(_BINARY[node.op], names, node.name)
        elif node.op in _UNARY:
            y = self.op(_UNARY[node.op], names, node.name)
        elif node.op == "Square":
            y = self.op("Mul", [names[0], names[0]], node.name)
        elif node.op == "Rsqrt":
            y = self.op("Reciprocal", [self.op("Sqrt", names, f"{node.name}/sqrt")], node.name)
        elif node.op == "Relu6":
            y = self.op("Clip", [names[0], self.scalar(0.0), self.scalar(6.0)], node.name)
        elif node.op == "Prelu":
            y = self.op("PRelu", names, node.name)
        else:  # pragma: no cover - dispatch covers every elementwise op
            raise UnsupportedOpError(node.op, node.name)
        self.set(node, y, nchw=nchw)

    def _axes_after(
        self, ref: str, axes: Sequence[int], keep: bool
    ) -> tuple[list[int], bool, list[int] | None]:
        """ONNX axes for NHWC ``axes`` of ``ref``, whether the result stays NCHW, and a perm to
        restore TF's axis order afterwards (None when not needed)."""
        rank = self.rank(ref)
        axes = sorted({a % rank for a in axes})
        if not self.stored_nchw(ref):
            return axes, False, None
        onnx_axes = sorted(_NCHW_POS[a] for a in axes)
        if keep:
            return onnx_axes, True, None
        remaining_nhwc = [a for a in range(4) if a not in axes]
        remaining_nchw_order = sorted(remaining_nhwc, key=lambda a: _NCHW_POS[a])
        if remaining_nchw_order == remaining_nhwc:
            return onnx_axes, False, None
        perm = [remaining_nchw_order.index(a) for a in remaining_nhwc]
        return onnx_axes, False, perm

    def reduce(self, node: TfjsNode) -> None:
        if not self.is_const(node.inputs[1]):
            raise UnsupportedOpError(node.op, node.name, "reduction axes are not a constant")
        keep = bool(node.attr("keep_dims"))
        axes = [int(a) for a in np.asarray(self.const(node.inputs[1])).reshape(-1)]
        onnx_axes, nchw, perm = self._axes_after(node.inputs[0], axes, keep)
        x = self.input(node.inputs[0], nchw=self.stored_nchw(node.inputs[0]))
        base = f"{node.name}/reduce" if perm else node.name
        if node.op == "Sum":
            axes_name = self.initializer(f"{node.name}/axes", np.array(onnx_axes, np.int64))
            y = self.op("ReduceSum", [x, axes_name], base, keepdims=int(keep))
        else:
            y = self.op("ReduceMean", [x], base, axes=onnx_axes, keepdims=int(keep))
        if perm:
            y = self.op("Transpose", [y], node.name, perm=perm)
        self.set(node, y, nchw=nchw)

    def squeeze(self, node: TfjsNode) -> None:
        ref = node.inputs[0]
        shape = self.shapes[node_of(ref)]
        dims = node.attr("squeeze_dims") or [i for i, d in enumerate(shape) if d == 1 and i != 0]
        onnx_axes, _, perm = self._axes_after(ref, [int(d) for d in dims], keep=False)
        x = self.input(ref, nchw=self.stored_nchw(ref))
        axes_name = self.initializer(f"{node.name}/axes", np.array(onnx_axes, np.int64))
        y = self.op("Squeeze", [x, axes_name], f"{node.name}/squeeze" if perm else node.name)
        if perm:
            y = self.op("Transpose", [y], node.name, perm=perm)
        self.set(node, y, nchw=False)

    def reshape(self, node: TfjsNode) -> None:
        if not self.is_const(node.inputs[1]):
            raise UnsupportedOpError(node.op, node.name, "target shape is not a constant")
        target = np.asarray(self.const(node.inputs[1])).reshape(-1).astype(np.int64)
        in_shape = self.shapes[node_of(node.inputs[0])]
        if target.size and target[0] == in_shape[0] and target[0] != -1:
            # The reference ran with a batch of one; a batch baked into the target shape would
            # pin it. Keep the batch dynamic (0 copies the input's first dimension).
            target = target.copy()
            target[0] = 0
        shape_name = self.initializer(f"{node.name}/shape", target)
        y = self.op("Reshape", [self.input(node.inputs[0], nchw=False), shape_name], node.name)
        self.set(node, y, nchw=False)

    def pad(self, node: TfjsNode) -> None:
        if not self.is_const(node.inputs[1]):
            raise UnsupportedOpError(node.op, node.name, "paddings are not a constant")
        paddings = np.asarray(self.const(node.inputs[1])).astype(np.int64).reshape(-1, 2)
        ref = node.inputs[0]
        nchw = self.stored_nchw(ref)
        if nchw:
            paddings = paddings[[0, 3, 1, 2]]
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        inputs = [self.input(ref, nchw=nchw), self.initializer(f"{node.name}/pads", pads)]
        if len(node.inputs) > 2:
            inputs.append(self.input(node.inputs[2], nchw=False))
        y = self.op("Pad", inputs, node.name, mode="constant")
        self.set(node, y, nchw=nchw)

    def softmax(self, node: TfjsNode) -> None:
        y = self.op("Softmax", [self.input(node.inputs[0], nchw=False)], node.name, axis=-1)
        self.set(node, y, nchw=False)

    def emit(self, node: TfjsNode) -> None:
        if node.op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            self.conv(node)
        elif node.op in ("MatMul", "_FusedMatMul"):
            self.matmul(node)
        elif node.op in ("Sum", "Mean"):
            self.reduce(node)
        elif node.op == "Squeeze":
            self.squeeze(node)
        elif node.op == "Reshape":
            self.reshape(node)
        elif node.op in ("Pad", "PadV2"):
            self.pad(node)
        elif node.op == "Softmax":
            self.softmax(node)
        else:
            self.elementwise(node)


def _check_ops(nodes: Sequence[TfjsNode]) -> None:
    for node in nodes:
        if node.op not in SUPPORTED_OPS and node.op not in ("Const", "Placeholder"):
            raise UnsupportedOpError(node.op, node.name)


def convert_tfjs_graph(
    graph: TfjsGraph,
    *,
    outputs: Mapping[str, str] | None = None,
    input_name: str | None = None,
    input_scale: float | Sequence[float] | None = None,
    input_shift: float | Sequence[float] | None = None,
    reverse_channels: bool = False,
    l2_normalise: Sequence[str] = (),
    name: str = "tfjs_graph",
    doc_string: str = "",
) -> onnx.ModelProto:
    """The ONNX model of a TFJS graph with one placeholder.

    Args:
        graph: the model.
        outputs: ONNX output name -> graph tensor (``"node"``); the graph's outputs, under
            their own names, if None.
        input_name: the ONNX input's name (the placeholder's if None).
        input_scale, input_shift: if given, the graph computes ``x * scale + shift`` on its
            input first (scalars or one value per channel), so callers feed raw pixels.
        reverse_channels: reverse the input's last axis first (before scale and shift), so
            an RGB input feeds a network trained on BGR.
        l2_normalise: ONNX outputs (of rank 2) to divide by their L2 norm along the last axis
            (with the norm floored at 1e-10, as TF's ``l2_normalize``).
        name: the ONNX graph's name.
        doc_string: the model's description.

    Returns:
        A checked model: NHWC float32 input ``(batch, H, W, C)``, outputs with a dynamic batch.

    Raises:
        UnsupportedOpError: an op (or variant: a non-constant filter, a data format other
            than NHWC, a fused batch norm) the converter does not translate.
        TfjsFormatError: the graph has no or several placeholders, or inconsistent shapes.
    """
    out_map = dict(outputs) if outputs is not None else {o: o for o in graph.outputs}
    nodes = graph.subgraph(list(out_map.values()))
    _check_ops(nodes)
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise TfjsFormatError(
            f"expected one placeholder, the outputs depend on {[p.name for p in placeholders]}"
        )
    placeholder = placeholders[0]
    declared = graph.input_shapes.get(placeholder.name, ())
    if not declared or any(d < 1 for d in declared[1:]):
        raise TfjsFormatError(
            f"placeholder {placeholder.name!r} has no static shape after the batch: {declared}"
        )

    probe = np.zeros((1, *declared[1:]), np.float32)
    with np.errstate(all="ignore"):
        values = run_graph(graph, {placeholder.name: probe}, list(out_map.values()), keep_all=True)
    shapes = {k: tuple(v.shape) for k, v in values.items()}
    consts: dict[str, np.ndarray] = {}
    for node in nodes:
        if node.op == "Const" or (
            node.op != "Placeholder" and node.inputs and all(node_of(i) in consts for i in node.inputs)
        ):
            consts[node.name] = values[node.name]

    em = _Emitter(graph=graph, shapes=shapes, consts=consts)
    onnx_in = input_name or placeholder.name
    # The graph's own node names must not take the input's or the outputs' names.
    em._names.update([onnx_in, *out_map])
    x = onnx_in
    if reverse_channels:
        channels = declared[-1]
        order = em.initializer("channel_order", np.arange(channels - 1, -1, -1, dtype=np.int64))
        x = em.op("Gather", [x, order], "input_reversed", axis=len(declared) - 1)
    if input_scale is not None:
        x = em.op(
            "Mul", [x, em.initializer("input_scale", np.asarray(input_scale, np.float32))], "input_scaled"
        )
    if input_shift is not None:
        x = em.op(
            "Add", [x, em.initializer("input_shift", np.asarray(input_shift, np.float32))], "input_shifted"
        )
    if len(declared) == 4:
        x = em.op("Transpose", [x], f"{placeholder.name}/nchw", perm=[0, 3, 1, 2])
        em.tensors[placeholder.name] = _Tensor(x, True)
    else:
        em.tensors[placeholder.name] = _Tensor(x, False)

    for node in nodes:
        if node.op in ("Const", "Placeholder") or node.name in consts:
            continue
        em.emit(node)

    unknown = set(l2_normalise) - set(out_map)
    if unknown:
        raise ValueError(f"l2_normalise: {sorted(unknown)} are not outputs ({sorted(out_map)})")
    out_infos = []
    for out_name, ref in out_map.items():
        if em.is_const(ref):
            raise TfjsFormatError(f"output {ref!r} does not depend on the input")
        src = em.view(ref, nchw=False)
        if out_name in l2_normalise:
            if len(shapes[node_of(ref)]) != 2:
                raise TfjsFormatError(
                    f"output {ref!r} has rank {len(shapes[node_of(ref)])}; L2 normalisation needs 2"
                )
            norm = em.op("ReduceL2", [src], f"{out_name}/norm", axes=[1], keepdims=1)
            norm = em.op("Max", [norm, em.scalar(1e-10)], f"{out_name}/norm_floor")
            src = em.op("Div", [src, norm], f"{out_name}/normalised")
        em.nodes.append(helper.make_node("Identity", [src], [out_name], name=f"{out_name}/output"))
        out_infos.append(
            helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [BATCH_DIM, *shapes[node_of(ref)][1:]])
        )
    graph_proto = helper.make_graph(
        em.nodes,
        name,
        inputs=[helper.make_tensor_value_info(onnx_in, TensorProto.FLOAT, [BATCH_DIM, *declared[1:]])],
        outputs=out_infos,
        initializer=em.initializers,
    )
    model = helper.make_model(
        graph_proto,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="openlfr",
        doc_string=doc_string,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    logger.debug(
        'converted tfjs graph="%s" tf_nodes="%d" onnx_nodes="%d" folded="%d"',
        name,
        len(nodes),
        len(em.nodes),
        len(consts),
    )
    return model
