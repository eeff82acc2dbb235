"""int8 models: static QDQ quantisation of BlazeFace and the dlib embedder, calibrated on real faces.

``openlfr models build`` makes ``<name>_int8.onnx`` beside each fp32 file (which it keeps): the
fp32 graph is pre-processed (shape inference and graph optimisation), then quantised with
onnxruntime's static quantiser in the QDQ format: weights int8 per output channel, activations
uint8 with ranges from a MinMax calibration; the input stem and the output heads stay float (:func:`float_nodes`).
onnxruntime's CPU provider fuses each
``DequantizeLinear -> Conv -> QuantizeLinear`` into an integer ``QLinearConv`` (a VNNI kernel on
x86 CPUs that have it); ``reduce_range`` is off, as VNNI does not saturate the way plain AVX2's
u8*s8 pairs do.

Calibration inputs are what the models see in service: the calibration images go through the
fp32 analyzer (``openlfr.vision.factory.build_analyzer``) and every batch it feeds the detector
(its crops and tiles, 0..255) and the embedder (aligned chips) is recorded. The images are a
fixed list from the shared face set that the accuracy gates do not use (crowd scenes and every
eighth UTKFace crop, sorted), so a build is deterministic: same fp32 file, same images, same
int8 file.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.inference.base import InferenceBackend
from openlfr.models.exceptions import ModelError
from openlfr.models.specs import ModelSpec

logger = logging.getLogger(__name__)

#: The shared face set (``../shared/data/faces`` beside the checkout), the calibration source.
FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
#: Most rows kept per model's calibration (an even, deterministic stride over what was recorded).
MAX_CALIBRATION_ROWS = 256
#: Rows per calibration batch fed to onnxruntime's calibrator.
CALIBRATION_BATCH = 16


def calibration_images(faces_dir: Path = FACES_DIR) -> list[Path]:
    """The calibration images: the crowd scenes and every eighth UTKFace crop, in name order.

    Neither subset is in ``pairs.csv`` or ``detection_boxes.csv``, which the accuracy gates use.

    Raises:
        ModelError: the shared face set is not there.
    """
    crowd = sorted(p for p in (faces_dir / "crowd_scenes").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    utk = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[::8]
    if not crowd or not utk:
        raise ModelError(f"int8 calibration: the shared face set is missing at {faces_dir} (crowd_scenes, utkface_balanced)")
    return crowd + utk


def calibration_sha256(images: Sequence[Path]) -> str:
    """SHA-256 over the calibration images' names and contents (a changed image means a rebuild)."""
    from openlfr.models.build import sha256_file

    digest = hashlib.sha256()
    for path in images:
        digest.update(f"{path.parent.name}/{path.name}={sha256_file(path)}\n".encode())
    return digest.hexdigest()


class _RecordingBackend(InferenceBackend):
    """Passes every call to ``inner`` and keeps each model's input batches."""

    type = "recording"

    def __init__(self, inner: InferenceBackend) -> None:
        self.inner = inner
        self.inputs: dict[str, list[np.ndarray]] = {}

    def load(self, spec: ModelSpec) -> None:
        self.inner.load(spec)

    def infer(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.setdefault(spec.name, []).append(np.asarray(inputs[spec.inputs[0].name]).copy())
        return self.inner.infer(spec, inputs)


def record_calibration_inputs(model_dir: Path, images: Sequence[Path]) -> dict[str, np.ndarray]:
    """What the fp32 detector and embedder are fed for ``images``, keyed by model name.

    At most :data:`MAX_CALIBRATION_ROWS` rows per model, taken at an even stride.
    """
    from openlfr.config import ModelSettings
    from openlfr.inference.local import LocalBackend
    from openlfr.vision.factory import build_analyzer
    from openlfr.vision.images import load_image

    # One thread: the same sums in the same order, so the same ranges and the same int8 file.
    recorder = _RecordingBackend(LocalBackend(model_dir, intra_op_threads=1))
    # The analyzer's defaults, whatever OPENLFR_* says in this environment.
    defaults = {
        name: ModelSettings.model_fields[name].default
        for name in ("detector_score_threshold", "tiling", "min_face_px")
    }
    result: dict[str, np.ndarray] = {}
    for detector in ("full", "short"):
        recorder.inputs.clear()
        settings = ModelSettings(model_dir=model_dir, detector=detector, detector_precision="fp32",
                                 embedder="dlib_resnet_v1", **defaults)
        analyzer = build_analyzer(settings, backend=recorder)
        for path in images:
            analyzer.analyze(load_image(path))
        for name, batches in recorder.inputs.items():
            if name in result:
                continue  # the embedder's chips: from the full-range pass
            rows = np.concatenate(batches)
            keep = np.linspace(0, len(rows) - 1, min(len(rows), MAX_CALIBRATION_ROWS)).round().astype(int)
            result[name] = rows[np.unique(keep)]
    return result


#: Per-channel ``DequantizeLinear`` (its ``axis``) needs opset 13; BlazeFace's graph is opset 11.
MIN_OPSET = 13


def _at_least_opset(fp32: Path, tmp: Path) -> Path:
    """``fp32`` itself, or a copy converted to :data:`MIN_OPSET` when its opset is older."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(fp32))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= MIN_OPSET:
        return fp32
    converted = tmp / "opset.onnx"
    onnx.save(version_converter.convert_version(model, MIN_OPSET), str(converted))
    return converted


_WEIGHTED = ("Conv", "MatMul", "Gemm")


def float_nodes(model_path: Path) -> list[str]:
    """The nodes left in float: the stem (graph input to the first weighted layer) and the heads
    (each weighted layer that feeds a graph output, and what follows it).

    BlazeFace's stem scales 0..255 pixels to [-1, 1] with a scalar ``Mul`` and ``Add``;
    quantised, its output lost all signal (SQNR against fp32 -3.7 dB, measured with
    onnxruntime.quantization.qdq_loss_debug) and the detector found no face at all. Its heads'
    raw logits and box offsets span hundreds, so one uint8 scale leaves little resolution
    where the scores matter. Both ends are cheap elementwise ops or small layers.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    kept: list[str] = []
    stack = [o.name for o in graph.output]
    while stack:  # heads: back from the outputs to the last weighted layer
        node = producer.get(stack.pop())
        if node is None or node.name in kept:
            continue
        kept.append(node.name)
        if node.op_type not in _WEIGHTED:
            stack.extend(node.input)
    stack = [i.name for i in graph.input]
    while stack:  # stem: forward from the inputs to the first weighted layer
        for node in consumers.get(stack.pop(), []):
            if node.op_type in _WEIGHTED or node.name in kept:
                continue
            kept.append(node.name)
            stack.extend(node.output)
    return sorted(kept)


class _Reader:
    """onnxruntime's ``CalibrationDataReader``: the recorded rows in fixed batches."""

    def __init__(self, input_name: str, rows: np.ndarray) -> None:
        self._batches = iter(
            [{input_name: np.ascontiguousarray(rows[i : i + CALIBRATION_BATCH], np.float32)}
             for i in range(0, len(rows), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(
    fp32: Path,
    out: Path,
    *,
    spec: ModelSpec,
    rows: np.ndarray,
    per_channel: bool = True,
    reduce_range: bool = False,
) -> None:
    """Write the static QDQ int8 version of ``fp32`` to ``out``, calibrated on ``rows``.

    Inputs and outputs stay float32 (the quantise and dequantise nodes are inside the graph),
    so the int8 model serves the same contract, named ``<spec.name>_int8`` by its spec.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(rows) == 0:
        raise ModelError(f"int8 {spec.name}: no calibration inputs were recorded")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="openlfr-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(_at_least_opset(fp32, Path(tmp))), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / out.name
        quantize_static(
            str(prepared),
            str(staged),
            _Reader(spec.inputs[0].name, rows),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_nodes(prepared),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        staged.replace(out)
