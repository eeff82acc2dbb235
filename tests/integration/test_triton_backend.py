"""TritonBackend against a real tritonserver (nvidia-pytriton wheel, Python backend, CPU).

The server serves tiny stand-in ONNX models with the interfaces of the real ones, through the
``python`` repository variant, and must give the numbers LocalBackend gives on the same files.
The repository-layout tests at the end need no server.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.inference.exceptions import InferenceError, ModelMismatchError, ModelNotBuiltError
from openlfr.inference.local import LocalBackend
from openlfr.inference.testing import write_standin_onnx
from openlfr.inference.triton import TritonBackend, TritonProtocol
from openlfr.inference.triton_repo import VARIANTS, assemble_repository, load_config
from openlfr.inference.triton_server import TritonDistribution, TritonServer, TritonServerError
from openlfr.models.specs import ALL_MODELS, BLAZEFACE_SHORT, EMBEDDER, ModelSpec, TensorSpec

PROTOCOLS: list[TritonProtocol] = ["grpc", "http"]
SPECS = list(ALL_MODELS.values())


def _random_batch(spec: ModelSpec, batch_size: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        t.name: (rng.random((batch_size, *t.shape)) * 255).astype(np.float32) for t in spec.inputs
    }


@pytest.fixture(scope="module")
def distribution() -> TritonDistribution:
    try:
        return TritonDistribution.find()
    except TritonServerError as exc:
        pytest.fail(f"no tritonserver here (scripts/setup.sh installs nvidia-pytriton): {exc}")


@pytest.fixture(scope="module")
def standin_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("standin-models")
    for spec in SPECS:
        write_standin_onnx(spec, directory / spec.onnx_file)
    return directory


@pytest.fixture(scope="module")
def python_repository(standin_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_repository("python", tmp_path_factory.mktemp("repo"), standin_model_dir, SPECS)


@pytest.fixture(scope="module")
def triton_server(
    distribution: TritonDistribution,
    python_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    server = TritonServer(
        model_repository=python_repository,
        work_dir=tmp_path_factory.mktemp("triton-work"),
        distribution=distribution,
        startup_timeout_s=60,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def local(standin_model_dir: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(standin_model_dir)
    yield backend
    backend.close()


@pytest.fixture(params=PROTOCOLS)
def triton(request: pytest.FixtureRequest, triton_server: TritonServer) -> Iterator[TritonBackend]:
    protocol: TritonProtocol = request.param
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    backend = TritonBackend(url=url, protocol=protocol, timeout_s=20, ready_timeout_s=20)
    yield backend
    backend.close()


@pytest.mark.integration
def test_server_starts_within_seconds(triton_server: TritonServer) -> None:
    assert triton_server.is_alive()
    assert triton_server.startup_s is not None and triton_server.startup_s < 30
    print(f"tritonserver startup: {triton_server.startup_s:.2f}s")  # shown with -s


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_triton_gives_the_numbers_local_gives(
    triton: TritonBackend, local: LocalBackend, spec: ModelSpec
) -> None:
    # One more row than max_batch_size: the client splits, the server batches.
    batch_size = spec.max_batch_size + 1 if spec is EMBEDDER else 3
    inputs = _random_batch(spec, batch_size)
    triton.load(spec)
    served = triton.infer(spec, inputs)
    expected = local.infer(spec, inputs)
    assert sorted(served) == sorted(expected)
    for name, value in expected.items():
        assert served[name].shape == value.shape
        assert served[name].dtype == value.dtype
        np.testing.assert_allclose(served[name], value, rtol=1e-5, atol=1e-5)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_concurrent_single_frames_are_batched_and_answered_correctly(
    triton: TritonBackend, local: LocalBackend
) -> None:
    frames = _random_batch(BLAZEFACE_SHORT, 16)["images"]
    expected = local.infer(BLAZEFACE_SHORT, {"images": frames})
    results: dict[int, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            results[index] = triton.infer(BLAZEFACE_SHORT, {"images": frames[index : index + 1]})
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for name, value in expected.items():
        served = np.concatenate([results[i][name] for i in range(len(frames))])
        np.testing.assert_allclose(served, value, rtol=1e-5, atol=1e-5)


MISMATCHES: list[tuple[str, ModelSpec, str]] = [
    (
        "output shape",
        dataclasses.replace(EMBEDDER, outputs=(TensorSpec("embeddings", "FP32", (64,)),)),
        "output 'embeddings': shape (N, 128), expected (N, 64)",
    ),
    (
        "input dtype",
        dataclasses.replace(EMBEDDER, inputs=(TensorSpec("chips", "UINT8", (150, 150, 3)),)),
        "input 'chips': dtype FP32, expected UINT8",
    ),
    (
        "input name",
        dataclasses.replace(EMBEDDER, inputs=(TensorSpec("faces", "FP32", (150, 150, 3)),)),
        "input(s) ['faces'] missing",
    ),
    (
        "max_batch_size",
        dataclasses.replace(EMBEDDER, max_batch_size=EMBEDDER.max_batch_size * 2),
        f"max_batch_size {EMBEDDER.max_batch_size}, "
        f"expected at least {EMBEDDER.max_batch_size * 2}",
    ),
    (
        "model name",
        dataclasses.replace(EMBEDDER, name="arcface_r100"),
        "serves no model 'arcface_r100'",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("spec", "message"), [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES]
)
def test_load_refuses_a_served_model_that_differs_from_the_spec(
    triton: TritonBackend, spec: ModelSpec, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ModelMismatchError) as caught:
        triton.load(spec)
    assert message in str(caught.value)
    assert time.monotonic() - started < 5, "a mismatch must be reported at once, not after waiting"


@pytest.mark.integration
def test_metrics_port_serves_inference_counters(
    triton_server: TritonServer, triton: TritonBackend
) -> None:
    triton.infer(EMBEDDER, _random_batch(EMBEDDER, 2))
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    found = re.search(
        r'^nv_inference_request_success\{model="dlib_resnet_v1",version="1"\} (\d+)', text, re.M
    )
    assert found is not None, text[:2000]
    assert int(found.group(1)) >= 1


@pytest.fixture()
def own_server(
    distribution: TritonDistribution, standin_model_dir: Path, tmp_path: Path
) -> Iterator[TritonServer]:
    """A server for one test, which may freeze or stop it."""
    repository = assemble_repository("python", tmp_path / "repo", standin_model_dir, [EMBEDDER])
    server = TritonServer(
        model_repository=repository, work_dir=tmp_path / "work", distribution=distribution
    )
    with server:
        yield server


def _wait_all_threads_stopped(pid: int, within_s: float = 10.0) -> None:
    """Until every thread of ``pid`` is in state T (stopped); fails naming the ones that are not."""
    deadline = time.monotonic() + within_s
    while True:
        states = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                # Field 3 of stat, after the parenthesised command name (which may hold spaces).
                states[task.name] = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that just ended
        running = {tid: state for tid, state in states.items() if state not in ("T", "t")}
        if states and not running:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Triton (pid {pid}) threads not stopped after SIGSTOP: {running}")
        time.sleep(0.02)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_stopped_server_gives_inference_errors_within_the_timeout(
    own_server: TritonServer,
) -> None:
    timeout_s = 1.5
    backends = [
        TritonBackend(
            url=own_server.grpc_url, protocol="grpc", timeout_s=timeout_s, ready_timeout_s=2
        ),
        TritonBackend(
            url=own_server.http_url, protocol="http", timeout_s=timeout_s, ready_timeout_s=2
        ),
    ]
    inputs = _random_batch(EMBEDDER, 2)
    for backend in backends:
        backend.load(EMBEDDER)
        backend.infer(EMBEDDER, inputs)

    # Frozen: connections are accepted but nothing answers, so only the timeout ends the call.
    assert own_server.pid is not None
    os.kill(own_server.pid, signal.SIGSTOP)
    try:
        # The stop is asynchronous: wait until the kernel reports every thread stopped, so no
        # request can slip through before it takes effect.
        _wait_all_threads_stopped(own_server.pid)
        for backend in backends:
            started = time.monotonic()
            try:
                backend.infer(EMBEDDER, inputs)
            except InferenceError as exc:
                assert backend.protocol in str(exc)
            else:
                pytest.fail(f"{backend.protocol}: a stopped server answered an inference")
            assert time.monotonic() - started < timeout_s + 1.0
    finally:
        os.kill(own_server.pid, signal.SIGCONT)

    grpc_backend, http_backend = backends
    http_backend.close()  # open HTTP connections hold up Triton's shutdown; gRPC channels do not
    own_server.stop()

    started = time.monotonic()
    with pytest.raises(InferenceError, match="grpc"):
        grpc_backend.infer(EMBEDDER, inputs)  # still loaded: fails on the call itself
    assert time.monotonic() - started < timeout_s + 1.0

    started = time.monotonic()
    with pytest.raises(InferenceError, match="not ready after"):
        http_backend.infer(EMBEDDER, inputs)  # closed, so loads again: waits, then gives up
    assert time.monotonic() - started < http_backend.ready_timeout_s + timeout_s + 1.0
    grpc_backend.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_launcher_reports_a_model_that_fails_to_load(
    distribution: TritonDistribution, standin_model_dir: Path, tmp_path: Path
) -> None:
    repository = assemble_repository("python", tmp_path / "repo", standin_model_dir, [EMBEDDER])
    (repository / EMBEDDER.name / "1" / "model.onnx").unlink()
    server = TritonServer(
        model_repository=repository, work_dir=tmp_path / "work", distribution=distribution
    )
    with pytest.raises(TritonServerError, match="exited with code") as caught:
        server.start()
    assert "model.onnx is missing" in str(caught.value)
    assert not server.is_alive()


# -- repository layout (no server) ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_committed_templates_match_the_specs(
    variant: str, standin_model_dir: Path, tmp_path: Path
) -> None:
    repository = assemble_repository(variant, tmp_path, standin_model_dir, SPECS)  # type: ignore[arg-type]
    for spec in SPECS:
        config = load_config(repository / spec.name / "config.pbtxt")
        assert config.name == spec.name
        assert config.max_batch_size == spec.max_batch_size
        assert (repository / spec.name / "1" / "model.onnx").is_file()
        assert (repository / spec.name / "1" / "model.py").is_file() == (variant == "python")


def test_assembly_is_idempotent_and_links_the_built_files(
    standin_model_dir: Path, tmp_path: Path
) -> None:
    assemble_repository("python", tmp_path, standin_model_dir, [EMBEDDER])
    config = tmp_path / EMBEDDER.name / "config.pbtxt"
    onnx_file = tmp_path / EMBEDDER.name / "1" / "model.onnx"
    before = (config.stat().st_mtime_ns, onnx_file.stat().st_ino)
    assemble_repository("python", tmp_path, standin_model_dir, [EMBEDDER])
    assert (config.stat().st_mtime_ns, onnx_file.stat().st_ino) == before
    assert os.path.samefile(onnx_file, standin_model_dir / EMBEDDER.onnx_file)
    site_packages = load_config(config).parameters["site_packages"].string_value
    assert site_packages and all(Path(p).is_dir() for p in site_packages.split(os.pathsep))

    assemble_repository("onnxruntime", tmp_path, standin_model_dir, [EMBEDDER])
    assert load_config(config).platform == "onnxruntime_onnx"
    assert not (tmp_path / EMBEDDER.name / "1" / "model.py").exists()


def test_tensorrt_accelerator_gets_profiles_for_every_batch_size(
    standin_model_dir: Path, tmp_path: Path
) -> None:
    assemble_repository("onnxruntime-gpu", tmp_path, standin_model_dir, [EMBEDDER], tensorrt=True)
    config = load_config(tmp_path / EMBEDDER.name / "config.pbtxt")
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["trt_profile_min_shapes"] == "chips:1x150x150x3"
    assert (
        accelerator.parameters["trt_profile_max_shapes"]
        == f"chips:{EMBEDDER.max_batch_size}x150x150x3"
    )
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        assemble_repository("onnxruntime", tmp_path, standin_model_dir, [EMBEDDER], tensorrt=True)


def test_assembly_refuses_missing_models_and_drifted_templates(tmp_path: Path) -> None:
    with pytest.raises(ModelNotBuiltError, match="openlfr models build"):
        assemble_repository("python", tmp_path / "repo", tmp_path, [EMBEDDER])
    drifted = dataclasses.replace(EMBEDDER, outputs=(TensorSpec("embeddings", "FP32", (512,)),))
    with pytest.raises(
        ModelMismatchError, match=r"output 'embeddings': dims \[128\], expected \[512\]"
    ):
        assemble_repository("python", tmp_path / "repo", tmp_path, [drifted])
