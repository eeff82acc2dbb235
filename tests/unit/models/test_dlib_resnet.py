"""The ONNX conversion of dlib's face-recognition ResNet gives dlib's own descriptors.

The reference is dlib itself (``face_recognition_model_v1.compute_face_descriptor``) on real
face chips: 150x150 chips cut by dlib from photographs of the shared face set, and the chips of
dlib's ``examples/johns`` folder, which dlib's example program cut the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from openlfr.models import sources
from openlfr.models.dlib_resnet import (
    BATCH_DIM,
    OPSET,
    AddPrev,
    Conv,
    FullyConnected,
    build_embedder_onnx,
    read_dlib_resnet,
)
from openlfr.models.dlib_serialization import DlibReader
from openlfr.models.exceptions import DlibFormatError
from openlfr.models.specs import EMBEDDER

#: Largest difference allowed between an ONNX and a dlib descriptor element (values ~0.1..0.4).
TOLERANCE = 1e-4

#: Photographs with one face each, from four source repositories; dlib detects and chips them.
PHOTOS = (
    "face_recognition/examples/obama_small.jpg",
    "face_recognition/examples/alex-lacamoire.png",
    "face_recognition/examples/lin-manuel-miranda.png",
    "face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg",
    "deepface/img5.jpg",
    "deepface/img12.jpg",
    "deepface/img25.jpg",
    "dlib/examples/faces/Tom_Cruise_avp_2014_4.jpg",
)


@pytest.fixture(scope="module")
def resnet_dat() -> Path:
    return sources.dlib_model_path("resnet")


@pytest.fixture(scope="module")
def embedder_onnx(tmp_path_factory: pytest.TempPathFactory, resnet_dat: Path) -> Path:
    out = tmp_path_factory.mktemp("dlib_resnet") / EMBEDDER.onnx_file
    build_embedder_onnx(resnet_dat, out)
    return out


@pytest.fixture(scope="module")
def session(embedder_onnx: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(embedder_onnx), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def face_chips(faces_dir: Path) -> np.ndarray:
    """(n, 150, 150, 3) uint8 RGB chips: dlib-cut from PHOTOS, then one per person in johns/."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(sources.dlib_model_path("shape_predictor_5")))
    chips = []
    for rel in PHOTOS:
        img = dlib.load_rgb_image(str(faces_dir / rel))
        boxes = detector(img, 1)
        if len(boxes) != 1:
            pytest.fail(f"{rel}: expected dlib to find one face, found {len(boxes)}")
        shape = predictor(img, boxes[0])
        chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
    for person in sorted((faces_dir / "dlib" / "examples" / "johns").iterdir()):
        chips.append(dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0])))
    stacked = np.stack(chips)
    if stacked.shape != (len(PHOTOS) + 5, 150, 150, 3) or stacked.dtype != np.uint8:
        pytest.fail(f"unexpected chips: {stacked.shape} {stacked.dtype}")
    return stacked


@pytest.fixture(scope="module")
def dlib_descriptors(resnet_dat: Path, face_chips: np.ndarray) -> np.ndarray:
    model = dlib.face_recognition_model_v1(str(resnet_dat))
    return np.stack([np.asarray(model.compute_face_descriptor(chip)) for chip in face_chips])


def test_batch_matches_dlib_descriptors(
    session: ort.InferenceSession, face_chips: np.ndarray, dlib_descriptors: np.ndarray
) -> None:
    (embeddings,) = session.run(None, {"chips": face_chips.astype(np.float32)})
    assert embeddings.shape == (len(face_chips), 128) and embeddings.dtype == np.float32
    diff = np.abs(embeddings - dlib_descriptors)
    worst = int(diff.max(axis=1).argmax())
    assert diff.max() < TOLERANCE, f"max abs difference {diff.max():.3g} at chip {worst}"
    # Not a vacuous match: the chips give different, non-trivial descriptors.
    assert np.abs(dlib_descriptors).max() > 0.1
    assert np.linalg.norm(dlib_descriptors[0] - dlib_descriptors[1]) > 0.3


def test_batch_of_one_matches_batch(session: ort.InferenceSession, face_chips: np.ndarray) -> None:
    chips = face_chips.astype(np.float32)
    (batch,) = session.run(None, {"chips": chips})
    for i in (0, len(chips) - 1):
        (single,) = session.run(None, {"chips": chips[i : i + 1]})
        np.testing.assert_allclose(single[0], batch[i], atol=1e-6)


def test_model_follows_embedder_contract(embedder_onnx: Path) -> None:
    model = onnx.load(str(embedder_onnx))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    (inp,), (out,) = model.graph.input, model.graph.output
    spec_in, spec_out = EMBEDDER.inputs[0], EMBEDDER.outputs[0]

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert (inp.name, dims(inp)) == (spec_in.name, [BATCH_DIM, *spec_in.shape])
    assert (out.name, dims(out)) == (spec_out.name, [BATCH_DIM, *spec_out.shape])
    for value in (inp, out):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not list(embedder_onnx.parent.glob(".*.tmp")), "the temporary file was left behind"


def test_parsed_network_has_the_expected_structure(resnet_dat: Path) -> None:
    net = read_dlib_resnet(resnet_dat)
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.loss_margin == pytest.approx(0.04)
    assert net.loss_distance_threshold == pytest.approx(0.6)
    convs = [layer for layer in net.layers if isinstance(layer, Conv)]
    # 1 stem convolution plus 2 in each of the 14 residual blocks.
    assert len(convs) == 29 and len(net.layers) == 130
    stem = convs[0]
    assert stem.weights.shape == (32, 3, 7, 7) and stem.stride == (2, 2) and stem.padding == (0, 0)
    assert sum(isinstance(layer, AddPrev) for layer in net.layers) == 14
    fc = net.layers[-1]
    assert isinstance(fc, FullyConnected) and fc.weights.shape == (256, 128) and fc.bias is None
    assert net.embedding_size == 128


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    at = data.index(old)
    return data[:at] + new + data[at + len(old) :]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: b"", r"unexpected end of data .* at byte offset 0"),
        (lambda d: d[: len(d) // 2], r"unexpected end of data .* \(in layer \d+ \(con\)\)"),
        (lambda d: d[:-1], r"unexpected end of data"),
        (lambda d: d + b"\x00", r"1 unexpected bytes after the network"),
        (
            lambda d: _replace_once(d, b"loss_metric_2", b"loss_metric_9"),
            r"loss layer: expected layer tag 'loss_metric_2'",
        ),
        (
            lambda d: _replace_once(d, b"\x05con_4", b"\x05con_9"),
            r"layer 0 \(con\): expected layer tag 'con_4' .* found 'con_9' at byte offset \d+",
        ),
        (
            lambda d: _replace_once(d, b"\x07affine_", b"\x07affine!"),
            r"layer 1 \(affine\): expected layer tag",
        ),
        (lambda d: b"\x01\x02" + d[2:], r"add_loss_layer version: expected 1, found 2"),
        (lambda d: bytes(range(256)) * 64, r"at byte offset"),
    ],
    ids=[
        "empty", "half", "last-byte-missing", "trailing-byte",
        "loss-tag", "con-tag", "affine-tag", "version", "noise",
    ],  # fmt: skip
)
def test_corrupt_file_raises_format_error(
    tmp_path: Path, resnet_dat: Path, corrupt: Callable[[bytes], bytes], message: str
) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(corrupt(resnet_dat.read_bytes()))
    out = tmp_path / "out.onnx"
    with pytest.raises(DlibFormatError, match=message) as excinfo:
        build_embedder_onnx(bad, out)
    assert str(bad) in str(excinfo.value) and "byte offset" in str(excinfo.value)
    assert list(tmp_path.iterdir()) == [bad], "a failed conversion must leave no output behind"


def test_reader_reads_dlib_bools_as_ascii_digits() -> None:
    reader = DlibReader(b"10\x01")
    assert reader.read_bool() is True and reader.read_bool() is False
    with pytest.raises(DlibFormatError, match=r"bool .* found byte 0x01 at byte offset 2"):
        reader.read_bool()


@pytest.mark.parametrize("version", [1, 2])
def test_reader_reads_tensors_of_both_versions(version: int) -> None:
    values = np.array([0.5, -2.0, 3.25, 0.0, 1.5, -0.125], dtype=np.float32)

    def pack_int(value: int) -> bytes:
        magnitude = abs(value).to_bytes((abs(value).bit_length() + 7) // 8, "little")
        return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude

    def pack_float(value: float) -> bytes:
        # dlib's mantissa/exponent pair; the values above are exact binary fractions.
        numerator, denominator = float(value).as_integer_ratio()
        return pack_int(numerator) + pack_int(-(denominator.bit_length() - 1))

    data = pack_int(version) + b"".join(pack_int(d) for d in (1, 2, 3, 1))
    if version == 2:
        data += struct.pack("<6f", *values)
    else:
        data += b"".join(pack_float(v) for v in values)
    reader = DlibReader(data)
    tensor = reader.read_tensor()
    assert tensor.dtype == np.float32 and tensor.shape == (1, 2, 3, 1) and reader.remaining == 0
    np.testing.assert_array_equal(tensor.reshape(-1), values)
