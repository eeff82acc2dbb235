"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as ONNX.

The ``.dat`` file is read with the project's own reader of dlib's serialization format
(:class:`~openlfr.models.dlib_serialization.DlibReader`); dlib itself is not needed to convert.
The graph reproduces ``dlib.face_recognition_model_v1(dat).compute_face_descriptor(chip)`` for
150x150 RGB face chips and follows the :data:`~openlfr.models.specs.EMBEDDER` contract:
input ``chips`` ``(batch, 150, 150, 3)`` float32 pixel values 0..255 (NHWC), output
``embeddings`` ``(batch, 128)`` float32, not normalised (dlib's ``loss_metric`` hands the fc
output over as it is).

How the file is laid out (dlib ``dnn/core.h``): a network is nested layer objects, the output
layer outermost. ``add_loss_layer`` writes its version, its loss details, then its
sub-network; every ``add_layer``, ``add_tag_layer`` and ``add_skip_layer`` writes its version
and then its sub-network *before* its own details. So the file holds one run of version
integers, outermost first, then the input layer, then each layer's details from the input
outwards. Tag and skip layers write nothing but their version: their ids live in the C++ type,
so the wiring of the residual blocks comes from the architecture in dlib's
``dnn_face_recognition_ex.cpp``, written out in :func:`_architecture`, and the parser checks
every layer it reads against it.

Compute semantics taken from dlib's CPU code and matched here:

* ``input_rgb_image_sized``: ``(pixel - mean[c]) / 256`` per channel, means from the file
  (122.782, 117.001, 104.298 for red, green, blue), planes in R, G, B order;
* ``con_``: cross-correlation, OIHW filters then biases in one params tensor, padding
  ``stride != 1 ? 0 : size / 2`` (written in the file and checked);
* ``max_pool_`` / ``avg_pool_``: output ``1 + (n + 2p - w) / s`` with windows clipped to the
  image (no padding occurs in this network); ``avg_pool_everything`` is a global mean;
* ``add_prev_``: the output takes the larger of the two shapes in every dimension and each
  input is zero-padded at the end (trailing channels, bottom rows, right columns). In this
  network that happens in every down-sampling block (more channels on the main branch) and
  in the second 256-channel one, where the stride-2 convolution gives 3x3 but the 2x2 average
  pool of the 8x8 input gives 4x4, so the rest of the network runs on 4x4 and then 2x2;
* ``affine_`` (batch norm folded at training end): ``gamma[c] * x + beta[c]``. It is folded
  into the preceding convolution's weights, as onnxruntime would do on loading anyway;
* ``fc_``: ``x (n, inputs) @ W (inputs, outputs)``, no bias for ``fc_no_bias``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from openlfr.models.dlib_serialization import DlibReader
from openlfr.models.exceptions import DlibFormatError
from openlfr.models.specs import EMBEDDER

logger = logging.getLogger(__name__)

OPSET = 17
#: Opset 17 came with IR version 8; declaring no newer IR keeps older runtimes (Triton's
#: onnxruntime backend) able to load the file.
IR_VERSION = 8
BATCH_DIM = "batch"

# dlib's enums as serialized: layer_mode {CONV_MODE = 0, FC_MODE = 1} and
# fc_bias_mode {FC_HAS_BIAS = 0, FC_NO_BIAS = 1}.
_CONV_MODE = 0
_FC_HAS_BIAS = 0
_FC_NO_BIAS = 1

# loss_metric_ files older than "loss_metric_2" carried no parameters; dlib uses these.
_OLD_LOSS_MARGIN = 0.1
_OLD_LOSS_DISTANCE_THRESHOLD = 0.75


# ---------------------------------------------------------------------------------------------
# Parsed representation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Conv:
    """``con_``: weights ``(out, in, kh, kw)``, optional bias ``(out,)``, optional fused ReLU."""

    weights: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Affine:
    """``affine_`` in convolution mode: ``gamma[c] * x + beta[c]``."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True, slots=True)
class Relu:
    """``relu_``."""


@dataclass(frozen=True, slots=True)
class Pool:
    """``max_pool_`` or ``avg_pool_``; a window of ``(0, 0)`` pools the whole input."""

    kind: Literal["max", "avg"]
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Tag:
    """``tagN``: remembers its input under ``tag`` (identity otherwise)."""

    tag: int


@dataclass(frozen=True, slots=True)
class Skip:
    """``skipN``: outputs what the nearest ``tagN`` below it remembered."""

    tag: int


@dataclass(frozen=True, slots=True)
class AddPrev:
    """``add_prevN``: its input plus the nearest ``tagN``'s, zero-padded to the larger shape."""

    tag: int


@dataclass(frozen=True, slots=True, eq=False)
class FullyConnected:
    """``fc_``: weights ``(inputs, outputs)``, optional bias ``(outputs,)``."""

    weights: np.ndarray
    bias: np.ndarray | None


Layer: TypeAlias = Conv | Affine | Relu | Pool | Tag | Skip | AddPrev | FullyConnected

#: Shape of one sample: (channels, rows, columns).
Shape: TypeAlias = tuple[int, int, int]


@dataclass(frozen=True, slots=True, eq=False)
class DlibResNet:
    """The network as read from the file, layers in evaluation order (input first)."""

    input_means: tuple[float, float, float]
    """Per-channel means subtracted from red, green and blue pixel values."""
    input_size: tuple[int, int]
    """Rows and columns of the input image."""
    layers: tuple[Layer, ...]
    loss_margin: float
    loss_distance_threshold: float

    @property
    def embedding_size(self) -> int:
        """Length of the output vector."""
        last = self.layers[-1]
        if not isinstance(last, FullyConnected):
            raise ValueError(f"the last layer is {type(last).__name__}, not a fully connected one")
        return int(last.weights.shape[1])


# ---------------------------------------------------------------------------------------------
# The architecture (dnn_face_recognition_ex.cpp), outermost layer first
# ---------------------------------------------------------------------------------------------

SlotKind = Literal["fc", "avg_pool", "max_pool", "relu", "affine", "con", "add_prev", "tag", "skip"]


@dataclass(frozen=True, slots=True)
class _Slot:
    """One layer the architecture expects, with the hyper-parameters its type fixes."""

    kind: SlotKind
    outputs: int = 0
    window: int = 0
    stride: int = 1
    tag: int = 0

    @property
    def padding(self) -> int:
        # dlib's default for con_, max_pool_ and avg_pool_: "same" only for stride 1.
        return 0 if self.stride != 1 else self.window // 2


def _block(filters: int, stride: int) -> list[_Slot]:
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [
        _Slot("affine"),
        _Slot("con", outputs=filters, window=3, stride=1),
        _Slot("relu"),
        _Slot("affine"),
        _Slot("con", outputs=filters, window=3, stride=stride),
    ]


def _ares(filters: int) -> list[_Slot]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [_Slot("relu"), _Slot("add_prev", tag=1), *_block(filters, 1), _Slot("tag", tag=1)]


def _ares_down(filters: int) -> list[_Slot]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [
        _Slot("relu"),
        _Slot("add_prev", tag=2),
        _Slot("avg_pool", window=2, stride=2),
        _Slot("skip", tag=1),
        _Slot("tag", tag=2),
        *_block(filters, 2),
        _Slot("tag", tag=1),
    ]


def _architecture() -> list[_Slot]:
    """The layers of ``anet_type`` in the order their versions appear: outermost first."""
    return [
        _Slot("fc", outputs=128),
        _Slot("avg_pool", window=0, stride=1),  # avg_pool_everything
        *_ares_down(256),  # alevel0
        *_ares(256), *_ares(256), *_ares_down(256),  # alevel1
        *_ares(128), *_ares(128), *_ares_down(128),  # alevel2
        *_ares(64), *_ares(64), *_ares(64), *_ares_down(64),  # alevel3
        *_ares(32), *_ares(32), *_ares(32),  # alevel4
        _Slot("max_pool", window=3, stride=2),
        _Slot("relu"),
        _Slot("affine"),
        _Slot("con", outputs=32, window=7, stride=2),  # on input_rgb_image_sized<150>
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------


def _pooled(size: int, window: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - window) // stride


def _propagate(layer: Layer, shape: Shape, tags: dict[int, Shape]) -> Shape:
    """The output shape of ``layer`` for input ``shape``; records tags in ``tags``.

    Raises:
        ValueError: the layer cannot take an input of this shape.
    """
    c, h, w = shape
    if isinstance(layer, Conv):
        out_c, in_c, kh, kw = layer.weights.shape
        if in_c != c:
            raise ValueError(f"convolution expects {in_c} input channels, its input has {c}")
        (sy, sx), (py, px) = layer.stride, layer.padding
        if kh > h + 2 * py or kw > w + 2 * px:
            raise ValueError(f"{kh}x{kw} filter does not fit a {h}x{w} input padded by {py},{px}")
        return (out_c, _pooled(h, kh, sy, py), _pooled(w, kw, sx, px))
    if isinstance(layer, Affine):
        if layer.gamma.shape[0] != c:
            raise ValueError(f"affine has {layer.gamma.shape[0]} channels, its input has {c}")
        return shape
    if isinstance(layer, Pool):
        wy, wx = layer.window if layer.window != (0, 0) else (h, w)
        (sy, sx), (py, px) = layer.stride, layer.padding
        if wy > h + 2 * py or wx > w + 2 * px:
            raise ValueError(f"{wy}x{wx} pooling window does not fit a {h}x{w} input")
        return (c, _pooled(h, wy, sy, py), _pooled(w, wx, sx, px))
    if isinstance(layer, Tag):
        tags[layer.tag] = shape
        return shape
    if isinstance(layer, Skip | AddPrev):
        if layer.tag not in tags:
            raise ValueError(f"refers to tag{layer.tag}, which no layer below it sets")
        if isinstance(layer, Skip):
            return tags[layer.tag]
        other = tags[layer.tag]
        return (max(c, other[0]), max(h, other[1]), max(w, other[2]))
    if isinstance(layer, FullyConnected):
        inputs = layer.weights.shape[0]
        if inputs != c * h * w:
            raise ValueError(f"fc expects {inputs} inputs, its input has {c}x{h}x{w}")
        return (int(layer.weights.shape[1]), 1, 1)
    return shape  # Relu


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _read_tag(reader: DlibReader, allowed: Sequence[str], what: str) -> str:
    """Read a layer's version string and fail unless it is one of ``allowed``."""
    start = reader.pos
    found = reader.read_string()
    if found not in allowed:
        expected = " or ".join(repr(a) for a in allowed)
        raise reader.error(f"{what}: expected layer tag {expected}, found {found!r}", offset=start)
    return found


def _read_alias_shape(reader: DlibReader) -> tuple[int, int, int, int]:
    """Read a ``dlib::alias_tensor`` (a version, then n, k, nr, nc; no data)."""
    start = reader.pos
    version = reader.read_int()
    if version != 1:
        raise reader.error(f"unsupported alias_tensor version {version}", offset=start)
    n, k, nr, nc = (reader.read_int() for _ in range(4))
    return (n, k, nr, nc)


def _expect(reader: DlibReader, what: str, found: object, expected: object, offset: int) -> None:
    if found != expected:
        raise reader.error(f"{what}: expected {expected}, found {found}", offset=offset)


def _read_con(reader: DlibReader, slot: _Slot, what: str) -> Conv:
    start = reader.pos
    version = _read_tag(reader, ("con_4", "con_5", "con_6"), what)
    params = reader.read_tensor()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.read_int() for _ in range(7))
    filters = _read_alias_shape(reader)
    biases = _read_alias_shape(reader)
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.read_float()
    use_bias = reader.read_bool() if version in ("con_5", "con_6") else True
    use_relu = reader.read_bool() if version == "con_6" else False

    found = (num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x)
    s = slot
    expected = (s.outputs, s.window, s.window, s.stride, s.stride, s.padding, s.padding)
    _expect(reader, f"{what} (filters, nr, nc, stride y/x, padding y/x)", found, expected, start)
    if filters[0] != num_filters or filters[2:] != (nr, nc):
        raise reader.error(f"{what}: filter shape {filters} does not match the layer", offset=start)
    n_weights = math.prod(filters)
    n_bias = num_filters if use_bias else 0
    if use_bias and math.prod(biases) != num_filters:
        raise reader.error(f"{what}: bias shape {biases} for {num_filters} filters", offset=start)
    _expect(reader, f"{what} parameter count", params.size, n_weights + n_bias, start)
    flat = params.reshape(-1)
    return Conv(
        weights=flat[:n_weights].reshape(filters),
        bias=flat[n_weights:].copy() if use_bias else None,
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
        relu=use_relu,
    )


def _read_affine(reader: DlibReader, slot: _Slot, what: str) -> Affine:
    start = reader.pos
    version = _read_tag(reader, ("affine_", "affine_2"), what)
    params = reader.read_tensor()
    gamma = _read_alias_shape(reader)
    beta = _read_alias_shape(reader)
    mode = reader.read_int()
    disabled = reader.read_bool() if version == "affine_2" else False
    if disabled:
        raise reader.error(f"{what}: a disabled affine layer is not supported", offset=start)
    _expect(reader, f"{what} mode (0 = CONV_MODE)", mode, _CONV_MODE, start)
    if gamma != beta or gamma[0] != 1 or gamma[2:] != (1, 1):
        raise reader.error(f"{what}: gamma {gamma} / beta {beta} are not per-channel", offset=start)
    channels = gamma[1]
    _expect(reader, f"{what} parameter count", params.size, 2 * channels, start)
    flat = params.reshape(-1)
    return Affine(gamma=flat[:channels].copy(), beta=flat[channels:].copy())


def _read_relu(reader: DlibReader, slot: _Slot, what: str) -> Relu:
    _read_tag(reader, ("relu_",), what)
    return Relu()


def _read_pool(reader: DlibReader, slot: _Slot, what: str) -> Pool:
    start = reader.pos
    kind: Literal["max", "avg"] = "max" if slot.kind == "max_pool" else "avg"
    _read_tag(reader, (f"{kind}_pool_2",), what)
    nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.read_int() for _ in range(6))
    found = (nr, nc, stride_y, stride_x, pad_y, pad_x)
    s = slot
    expected = (s.window, s.window, s.stride, s.stride, s.padding, s.padding)
    _expect(reader, f"{what} (nr, nc, stride y/x, padding y/x)", found, expected, start)
    return Pool(kind=kind, window=(nr, nc), stride=(stride_y, stride_x), padding=(pad_y, pad_x))


def _read_add_prev(reader: DlibReader, slot: _Slot, what: str) -> AddPrev:
    _read_tag(reader, ("add_prev_",), what)
    return AddPrev(tag=slot.tag)


def _read_fc(reader: DlibReader, slot: _Slot, what: str) -> FullyConnected:
    start = reader.pos
    version = _read_tag(reader, ("fc_2", "fc_3"), what)
    num_outputs = reader.read_int()
    num_inputs = reader.read_int()
    params = reader.read_tensor()
    weights = _read_alias_shape(reader)
    biases = _read_alias_shape(reader)
    bias_mode = reader.read_int()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.read_float()
    use_bias = reader.read_bool() if version == "fc_3" else True

    _expect(reader, f"{what} outputs", num_outputs, slot.outputs, start)
    if bias_mode not in (_FC_HAS_BIAS, _FC_NO_BIAS):
        raise reader.error(f"{what}: unknown fc bias mode {bias_mode}", offset=start)
    _expect(reader, f"{what} weight shape", weights, (num_inputs, num_outputs, 1, 1), start)
    has_bias = bias_mode == _FC_HAS_BIAS and use_bias
    if has_bias and math.prod(biases) != num_outputs:
        raise reader.error(f"{what}: bias shape {biases} for {num_outputs} outputs", offset=start)
    n_weights = num_inputs * num_outputs
    n_bias = num_outputs if has_bias else 0
    _expect(reader, f"{what} parameter count", params.size, n_weights + n_bias, start)
    flat = params.reshape(-1)
    return FullyConnected(
        weights=flat[:n_weights].reshape(num_inputs, num_outputs),
        bias=flat[n_weights:].copy() if has_bias else None,
    )


_DETAIL_READERS: dict[SlotKind, Callable[[DlibReader, _Slot, str], Layer]] = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def _read_add_layer_state(reader: DlibReader, *, version: int, on_input: bool, what: str) -> None:
    """Skip the training state ``add_layer`` writes after a layer's details.

    Versions as current dlib writes them: 2 for a layer over another layer (three bools, then
    x_grad, cached_output and params_grad), 2 or 3 for the layer over the input (three bools,
    x_grad, cached_output, grad_final, and from version 3 the sample expansion factor).
    """
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, getters disabled
        reader.read_bool()
    for _ in range(3):
        reader.read_tensor()
    if on_input and version == 3:
        start = reader.pos
        factor = reader.read_int()
        # Anything but 1 would mean an input layer that makes several tensors per image.
        _expect(reader, f"{what} sample expansion factor", factor, 1, start)


def _read_input(
    reader: DlibReader, expected_size: tuple[int, int]
) -> tuple[tuple[float, float, float], tuple[int, int]]:
    start = reader.pos
    _read_tag(reader, ("input_rgb_image_sized",), "input layer")
    means = (reader.read_float(), reader.read_float(), reader.read_float())
    size = (reader.read_int(), reader.read_int())
    _expect(reader, "input layer size (rows, columns)", size, expected_size, start)
    return means, size


def read_dlib_resnet(dat_path: Path) -> DlibResNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``.

    Args:
        dat_path: the dlib file.

    Returns:
        The network, layers in evaluation order.

    Raises:
        DlibFormatError: the file is not this network in a format this parser knows, is
            truncated, or has bytes left over. The message names the byte offset.
    """
    reader = DlibReader.from_file(dat_path)
    arch = _architecture()
    expected_size = EMBEDDER.inputs[0].shape[:2]

    start = reader.pos
    _expect(reader, "add_loss_layer version", reader.read_int(), 1, start)
    loss = _read_tag(reader, ("loss_metric_2", "loss_metric_"), "loss layer")
    if loss == "loss_metric_2":
        margin, threshold = reader.read_float(), reader.read_float()
    else:
        margin, threshold = _OLD_LOSS_MARGIN, _OLD_LOSS_DISTANCE_THRESHOLD

    # Each wrapper writes its version before its sub-network, so the versions come outermost
    # first, all before any layer's details.
    versions: list[int] = []
    for depth, slot in enumerate(arch):
        start = reader.pos
        version = reader.read_int()
        if slot.kind in ("tag", "skip"):
            allowed: tuple[int, ...] = (1,)
        elif depth == len(arch) - 1:
            allowed = (2, 3)
        else:
            allowed = (2,)
        if version not in allowed:
            raise reader.error(
                f"nesting level {depth} ({slot.kind}): expected version {allowed}, found {version}"
                " (not dlib's face recognition ResNet, or a dlib format this parser does not know)",
                offset=start,
            )
        versions.append(version)

    means, size = _read_input(reader, expected_size)

    layers: list[Layer] = []
    shape: Shape = (3, *size)
    tags: dict[int, Shape] = {}
    for index, (slot, version) in enumerate(zip(reversed(arch), reversed(versions), strict=True)):
        what = f"layer {index} ({slot.kind})"
        start = reader.pos
        layer: Layer
        if slot.kind == "tag":
            layer = Tag(slot.tag)
        elif slot.kind == "skip":
            layer = Skip(slot.tag)
        else:
            try:
                layer = _DETAIL_READERS[slot.kind](reader, slot, what)
                _read_add_layer_state(reader, version=version, on_input=index == 0, what=what)
            except DlibFormatError as exc:
                # The reader's own errors (end of data, bad tensor header) do not know which
                # layer they are in; say so, once.
                if f"{what}:" in str(exc):
                    raise
                raise DlibFormatError(f"{exc} (in {what})") from exc
        try:
            shape = _propagate(layer, shape, tags)
        except ValueError as exc:
            raise reader.error(f"{what}: {exc}", offset=start) from exc
        layers.append(layer)

    if reader.remaining:
        raise reader.error(f"{reader.remaining} unexpected bytes after the network")
    return DlibResNet(
        input_means=means,
        input_size=size,
        layers=tuple(layers),
        loss_margin=margin,
        loss_distance_threshold=threshold,
    )


# ---------------------------------------------------------------------------------------------
# ONNX graph
# ---------------------------------------------------------------------------------------------


def _fold_affines(layers: Sequence[Layer]) -> list[Layer]:
    """Fold each affine layer into the convolution right below it.

    ``gamma * (W x + b) + beta == (gamma W) x + (gamma b + beta)``; computed in float64 so the
    only change is the final rounding to float32.
    """
    out: list[Layer] = []
    for layer in layers:
        prev = out[-1] if out else None
        if isinstance(layer, Affine) and isinstance(prev, Conv) and not prev.relu:
            gamma = layer.gamma.astype(np.float64)
            bias = prev.bias.astype(np.float64) if prev.bias is not None else 0.0
            out[-1] = replace(
                prev,
                weights=(prev.weights * gamma[:, None, None, None]).astype(np.float32),
                bias=(gamma * bias + layer.beta).astype(np.float32),
            )
        else:
            out.append(layer)
    return out


class _GraphBuilder:
    """Collects nodes and initializers with generated, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def _name(self, stem: str) -> str:
        n = self._counts.get(stem, 0)
        self._counts[stem] = n + 1
        return f"{stem}_{n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], *, output: str | None = None, **attrs: object
    ) -> str:
        name = self._name(op_type.lower())
        out = output or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def pad_to(self, x: str, shape: Shape, target: Shape) -> str:
        if shape == target:
            return x
        # Pad at the end of each dimension only, as dlib's tt::add reads missing cells as 0.
        ends = [t - s for s, t in zip(shape, target, strict=True)]
        pads = np.array([0, 0, 0, 0, 0, *ends], dtype=np.int64)
        return self.op("Pad", [x, self.const("pads", pads)], mode="constant")


def build_onnx_model(net: DlibResNet) -> onnx.ModelProto:
    """The ONNX model (opset 17) of a parsed network, under the EMBEDDER contract.

    Args:
        net: the parsed network.

    Returns:
        A checked model: ``chips`` ``(batch, rows, cols, 3)`` float32 0..255 in,
        ``embeddings`` ``(batch, n)`` float32 out.
    """
    (chips_spec,), (emb_spec,) = EMBEDDER.inputs, EMBEDDER.outputs
    g = _GraphBuilder()

    # input_rgb_image_sized: (pixel - mean) / 256, computed in NHWC where the means broadcast
    # over the last axis; dividing by 256 is exact in float32, as a multiply by 1/256 is.
    means = np.asarray(net.input_means, dtype=np.float32)
    x = g.op("Sub", [chips_spec.name, g.const("input_means", means)])
    x = g.op("Mul", [x, g.const("input_scale", np.array(1.0 / 256.0, dtype=np.float32))])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])

    shape: Shape = (3, *net.input_size)
    tags: dict[int, tuple[str, Shape]] = {}
    tag_shapes: dict[int, Shape] = {}
    layers = _fold_affines(net.layers)
    for i, layer in enumerate(layers):
        out_shape = _propagate(layer, shape, tag_shapes)
        last = i == len(layers) - 1
        if isinstance(layer, Conv):
            inputs = [x, g.const("conv_w", layer.weights)]
            if layer.bias is not None:
                inputs.append(g.const("conv_b", layer.bias))
            py, px = layer.padding
            x = g.op(
                "Conv",
                inputs,
                kernel_shape=list(layer.weights.shape[2:]),
                strides=list(layer.stride),
                pads=[py, px, py, px],
            )
            if layer.relu:
                x = g.op("Relu", [x])
        elif isinstance(layer, Affine):
            c = layer.gamma.shape[0]
            x = g.op("Mul", [x, g.const("affine_gamma", layer.gamma.reshape(1, c, 1, 1))])
            x = g.op("Add", [x, g.const("affine_beta", layer.beta.reshape(1, c, 1, 1))])
        elif isinstance(layer, Relu):
            x = g.op("Relu", [x])
        elif isinstance(layer, Pool):
            if layer.window == (0, 0):
                x = g.op("GlobalAveragePool" if layer.kind == "avg" else "GlobalMaxPool", [x])
            else:
                py, px = layer.padding
                attrs: dict[str, object] = {
                    "kernel_shape": list(layer.window),
                    "strides": list(layer.stride),
                    "pads": [py, px, py, px],
                }
                if layer.kind == "avg":
                    # dlib averages over the window clipped to the image.
                    attrs["count_include_pad"] = 0
                x = g.op("MaxPool" if layer.kind == "max" else "AveragePool", [x], **attrs)
        elif isinstance(layer, Tag):
            tags[layer.tag] = (x, shape)
        elif isinstance(layer, Skip):
            x = tags[layer.tag][0]
        elif isinstance(layer, AddPrev):
            other, other_shape = tags[layer.tag]
            a = g.pad_to(x, shape, out_shape)
            b = g.pad_to(other, other_shape, out_shape)
            x = g.op("Add", [a, b])
        elif isinstance(layer, FullyConnected):
            x = g.op("Flatten", [x], axis=1)
            out = emb_spec.name if last and layer.bias is None else None
            x = g.op("MatMul", [x, g.const("fc_w", layer.weights)], output=out)
            if layer.bias is not None:
                out = emb_spec.name if last else None
                x = g.op("Add", [x, g.const("fc_b", layer.bias)], output=out)
        shape = out_shape

    if x != emb_spec.name:
        raise DlibFormatError(f"the network does not end in a fully connected layer (ends in {x})")
    if (shape[0],) != emb_spec.shape or shape[1:] != (1, 1):
        raise DlibFormatError(
            f"the network gives {shape} per sample, {EMBEDDER.name} wants {emb_spec.shape}"
        )

    chips_dims = [BATCH_DIM, *chips_spec.shape]
    emb_dims = [BATCH_DIM, *emb_spec.shape]
    graph = helper.make_graph(
        g.nodes,
        EMBEDDER.name,
        inputs=[helper.make_tensor_value_info(chips_spec.name, TensorProto.FLOAT, chips_dims)],
        outputs=[helper.make_tensor_value_info(emb_spec.name, TensorProto.FLOAT, emb_dims)],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="openlfr",
        doc_string=(
            "dlib_face_recognition_resnet_model_v1 converted by openlfr.models.dlib_resnet: "
            "RGB chips 0..255 (N,150,150,3) -> dlib face descriptors (N,128)"
        ),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "source": "dlib_face_recognition_resnet_model_v1.dat",
            "loss_margin": repr(net.loss_margin),
            "loss_distance_threshold": repr(net.loss_distance_threshold),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def build_embedder_onnx(dat_path: Path, out_path: Path) -> None:
    """Convert dlib's face-recognition ResNet to ONNX, writing ``out_path`` atomically.

    Args:
        dat_path: ``dlib_face_recognition_resnet_model_v1.dat``.
        out_path: where the ONNX file goes; written to a temporary file beside it and renamed,
            so a reader never sees a half-written model.

    Raises:
        DlibFormatError: the ``.dat`` file is not the expected network (see
            :func:`read_dlib_resnet`).
    """
    started = time.perf_counter()
    net = read_dlib_resnet(Path(dat_path))
    model = build_onnx_model(net)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        'built model="%s" source="%s" out="%s" layers="%d" bytes="%d" seconds="%.2f"',
        EMBEDDER.name,
        dat_path,
        out_path,
        len(net.layers),
        out_path.stat().st_size,
        time.perf_counter() - started,
    )
