"""The real face models served by a real Triton server give what the local backend gives.

Starts ``tritonserver`` (nvidia-pytriton's binary, CPU, python backend running the same ONNX
files) over the models that ``openlfr models build`` made, then runs the whole face path
(detector, landmarks, chips, embedder) on real photos through Triton over gRPC and HTTP and
through local onnxruntime: boxes and embeddings must agree within 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.inference.triton import TritonBackend
from openlfr.inference.triton_repo import assemble_repository
from openlfr.inference.triton_server import TritonServer
from openlfr.models.specs import ALL_MODELS
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image

pytestmark = pytest.mark.integration

IMAGES = (
    "face_recognition/examples/obama-720p.jpg",
    "face_recognition/examples/two_people.jpg",
    "deepface/couple.jpg",
    "dlib/examples/faces/2008_002506.jpg",
    "glint360k_celebs/Barack_Obama/106.png",
)


def _second_embedder(model_dir: Path) -> list:  # noqa: ANN202 - [ModelSpec]
    """faceres_v1 (an embedder with no Triton template of its own: its config is generated from
    its manifest), when set-up built it; under CI it must have."""
    from openlfr.models.manifest import FACERES_MANIFEST

    if (model_dir / FACERES_MANIFEST.onnx_file).is_file():
        return [FACERES_MANIFEST.spec()]
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and faceres_v1.onnx is missing: set-up fetches the npm weights and builds it")
    return []


@pytest.fixture(scope="module")
def real_triton(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    specs = list(ALL_MODELS.values()) + _second_embedder(model_dir)
    repo = assemble_repository("python", tmp_path_factory.mktemp("repo"), model_dir, specs)
    with TritonServer(model_repository=repo, work_dir=tmp_path_factory.mktemp("work"), startup_timeout_s=120) as s:
        yield s


@pytest.fixture(scope="module")
def images(faces_dir: Path) -> list[np.ndarray]:
    return [load_image(faces_dir / p) for p in IMAGES]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_and_local_give_the_same_faces(
    real_triton: TritonServer, analyzer, images: list[np.ndarray], protocol: str
) -> None:
    url = real_triton.grpc_url if protocol == "grpc" else real_triton.http_url
    backend = TritonBackend(url=url, protocol=protocol, timeout_s=60)  # type: ignore[arg-type]
    try:
        remote = build_analyzer(ModelSettings(), backend=backend)
        assert backend.ready(remote.embedder.spec) == (True, "ok")
        for img, local_faces, triton_faces in zip(images, analyzer.analyze_many(images), remote.analyze_many(images)):
            assert len(local_faces) == len(triton_faces) > 0
            np.testing.assert_allclose(triton_faces.boxes, local_faces.boxes, atol=1e-4)
            np.testing.assert_allclose(triton_faces.landmarks, local_faces.landmarks, atol=1e-4)
            np.testing.assert_allclose(triton_faces.embeddings, local_faces.embeddings, atol=1e-4)
    finally:
        backend.close()


def test_crops_around_followed_faces_run_on_triton_as_locally(real_triton: TritonServer, analyzer,
                                                               images: list[np.ndarray]) -> None:
    """The detect stage's follow model (the short-range BlazeFace, OPENLFR_DETECTOR_FOLLOW=short)
    is served by Triton and gives the local backend's boxes for the crops cut around faces."""
    from openlfr.vision.detector import roi_tile

    backend = TritonBackend(url=real_triton.grpc_url, protocol="grpc", timeout_s=60)
    try:
        remote = build_analyzer(ModelSettings(), backend=backend).detector
        local = analyzer.detector
        assert [s.name for s in remote.specs] == ["blazeface_full", "blazeface_short"]
        assert all(backend.ready(spec) == (True, "ok") for spec in remote.specs)
        image = images[0]
        height, width = image.shape[:2]
        box = local.detect_many([image])[0].boxes[0]
        crop = roi_tile(box, frame_width=width, frame_height=height, input_size=remote.follow_input_size,
                        factor=4.0, min_side=remote.follow_input_size)
        none = np.zeros(len(local.tiles_for(width, height)), bool)
        there, here = (d.detect_many([image], tile_masks=[none], extra_tiles=[(crop,)])[0] for d in (remote, local))
        assert len(there) == len(here) > 0
        np.testing.assert_allclose(there.boxes, here.boxes, atol=1e-3)
    finally:
        backend.close()


def test_an_embedder_registered_by_its_manifest_is_served_by_triton(real_triton: TritonServer, model_dir: Path,
                                                                    local_backend, images: list[np.ndarray]) -> None:
    if not _second_embedder(model_dir):
        pytest.skip("faceres_v1 not built here (needs npm); CI fails instead")
    settings = ModelSettings(embedder="faceres_v1")
    backend = TritonBackend(url=real_triton.grpc_url, protocol="grpc", timeout_s=60)
    try:
        remote = build_analyzer(settings, backend=backend)
        local = build_analyzer(settings, backend=local_backend)
        assert remote.embedder.spec.outputs[0].shape == (1024,)
        for local_faces, triton_faces in zip(local.analyze_many(images[:3]), remote.analyze_many(images[:3])):
            assert len(local_faces) == len(triton_faces) > 0
            np.testing.assert_allclose(triton_faces.embeddings, local_faces.embeddings, atol=1e-4)
    finally:
        backend.close()


def test_cli_faces_json_over_triton(real_triton: TritonServer, faces_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    env = {**os.environ, "OPENLFR_BACKEND": "triton", "OPENLFR_TRITON_URL": real_triton.grpc_url}
    proc = subprocess.run(
        [sys.executable, "-m", "openlfr.cli", "faces", "--json",
         str(faces_dir / IMAGES[1]), str(corrupt), str(faces_dir / IMAGES[0])],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr  # one bad input: reported, the rest processed
    assert [len(r.get("faces", [])) for r in lines] == [2, 0, 1]
    assert "error" in lines[1] and "corrupt.jpg" in lines[1]["error"]
    face = lines[0]["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and len(face["embedding"]) == 128
    assert set(face["quality"]) >= {"inter_eye_px", "blur", "yaw", "detector_score", "score"}
    assert "Traceback" not in proc.stderr
