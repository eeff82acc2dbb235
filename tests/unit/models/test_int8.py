"""The int8 models ``openlfr models build`` makes: accuracy gates against fp32 on real faces.

Gates (issue 12): detector recall on the shared set's ground-truth boxes within 1 point of the
fp32 model's; embedder EER on ``pairs.csv`` within 0.3 points of fp32's, and every face's int8
vector at cosine >= 0.99 to its fp32 vector (the same chips through both). Measured values are
in docs/models.md ("int8 models").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from openlfr.config import ModelSettings
from openlfr.evaluation import quantization as gates
from openlfr.inference.local import LocalBackend
from openlfr.models import quantize
from openlfr.models.manifest import DLIB_RESNET, DLIB_RESNET_INT8
from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, ModelSpec, int8_of
from openlfr.vision.detector import FaceDetector
from openlfr.vision.embedder import FaceEmbedder

RECALL_POINTS = 1.0
EER_POINTS = 0.3
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> LocalBackend:
    return LocalBackend(model_dir)


@pytest.mark.parametrize("spec", [BLAZEFACE_FULL, BLAZEFACE_SHORT], ids=lambda s: s.name)
def test_int8_detector_recall_is_within_a_point_of_fp32(
    backend: LocalBackend, faces_dir: Path, spec: ModelSpec
) -> None:
    gt = gates.ground_truth_boxes(faces_dir)
    fp32 = gates.detector_recall(FaceDetector(backend=backend, spec=spec), faces_dir, gt)
    int8 = gates.detector_recall(FaceDetector(backend=backend, spec=int8_of(spec)), faces_dir, gt)
    assert fp32.found > 0
    assert (int8.recall - fp32.recall) * 100 >= -RECALL_POINTS, (
        f"{spec.name}: int8 recall {int8.found}/{int8.total} vs fp32 {fp32.found}/{fp32.total}"
    )


def test_int8_embedder_keeps_the_eer_and_every_vector(
    backend: LocalBackend, analyzer, faces_dir: Path  # noqa: ANN001 - the session analyzer fixture
) -> None:
    pairs = gates.read_pairs(faces_dir)
    paths = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    chips = gates.largest_face_chips(analyzer, faces_dir, paths)
    assert len(chips) >= 0.95 * len(paths)
    agreement = gates.embedder_agreement(
        FaceEmbedder(backend=backend, manifest=DLIB_RESNET),
        FaceEmbedder(backend=backend, manifest=DLIB_RESNET_INT8),
        chips,
        pairs,
    )
    assert agreement.pairs_used >= 0.95 * len(pairs)
    assert (agreement.eer_candidate - agreement.eer_reference) * 100 <= EER_POINTS, (
        f"EER int8 {agreement.eer_candidate:.2%} vs fp32 {agreement.eer_reference:.2%}"
    )
    worst = int(np.argmin(agreement.cosines))
    assert agreement.cosines[worst] >= MIN_COSINE, f"{sorted(chips)[worst]}: cosine {agreement.cosines[worst]:.4f}"


def test_the_int8_embedder_is_a_model_version_of_its_own(model_dir: Path) -> None:
    fp32 = ModelSettings(model_dir=model_dir)
    int8 = ModelSettings(model_dir=model_dir, embedder="dlib_resnet_v1_int8")
    assert int8.embedder_manifest() is DLIB_RESNET_INT8
    assert int8.embedder_version().startswith("dlib_resnet_v1_int8@")
    assert int8.embedder_version() != fp32.embedder_version()
    assert "unbuilt" not in int8.embedder_version()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "blazeface_full"),
        ({"OPENLFR_DETECTOR_PRECISION": "int8"}, "blazeface_full_int8"),
        ({"OPENLFR_DETECTOR": "short", "OPENLFR_DETECTOR_PRECISION": "int8"}, "blazeface_short_int8"),
        ({"OPENLFR_DETECTOR": "short", "OPENLFR_DETECTOR_PRECISION": "fp32"}, "blazeface_short"),
        ({"OPENLFR_DETECTOR_PRECISION": "int4"}, ValidationError),
    ],
)
def test_the_detector_model_follows_the_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str | type[Exception]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        assert ModelSettings().detector_spec().name == expected
    else:
        with pytest.raises(expected, match="detector_precision"):
            ModelSettings()


def test_quantisation_is_deterministic(model_dir: Path, tmp_path: Path) -> None:
    rows = quantize.record_calibration_inputs(model_dir, quantize.calibration_images()[:2])
    outs = [tmp_path / f"{i}.onnx" for i in range(2)]
    for out in outs:
        quantize.quantize_onnx(model_dir / BLAZEFACE_SHORT.onnx_file, out, spec=int8_of(BLAZEFACE_SHORT),
                               rows=rows[BLAZEFACE_SHORT.name])
    assert outs[0].read_bytes() == outs[1].read_bytes()
