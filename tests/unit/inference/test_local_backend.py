"""LocalBackend against tiny stand-in ONNX models with the interfaces of the real ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from openlfr.inference.exceptions import InferenceError, ModelMismatchError, ModelNotBuiltError
from openlfr.inference.local import LocalBackend
from openlfr.inference.testing import write_standin_onnx
from openlfr.inference.validation import batch_slices
from openlfr.models.specs import ALL_MODELS, EMBEDDER, ModelSpec, TensorSpec


def _random_batch(spec: ModelSpec, batch_size: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        t.name: (rng.random((batch_size, *t.shape)) * 255).astype(np.float32) for t in spec.inputs
    }


def _with_input(spec: ModelSpec, **changes: object) -> ModelSpec:
    return dataclasses.replace(spec, inputs=(dataclasses.replace(spec.inputs[0], **changes),))


def _with_output(spec: ModelSpec, **changes: object) -> ModelSpec:
    return dataclasses.replace(spec, outputs=(dataclasses.replace(spec.outputs[0], **changes),))


@pytest.fixture(scope="module")
def standin_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    for spec in ALL_MODELS.values():
        write_standin_onnx(spec, directory / spec.onnx_file)
    return directory


@pytest.fixture()
def backend(standin_model_dir: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(standin_model_dir, intra_op_threads=1)
    yield backend
    backend.close()


@pytest.mark.parametrize("spec", list(ALL_MODELS.values()), ids=list(ALL_MODELS))
def test_serves_every_spec(backend: LocalBackend, spec: ModelSpec) -> None:
    backend.load(spec)
    outputs = backend.infer(spec, _random_batch(spec, 3))
    assert sorted(outputs) == sorted(t.name for t in spec.outputs)
    for tensor in spec.outputs:
        assert outputs[tensor.name].shape == (3, *tensor.shape)
        assert outputs[tensor.name].dtype == np.float32


def test_same_rows_give_same_outputs_whatever_the_batch(backend: LocalBackend) -> None:
    inputs = _random_batch(EMBEDDER, 5)
    whole = backend.infer(EMBEDDER, inputs)["embeddings"]
    single = backend.infer(EMBEDDER, {"chips": inputs["chips"][2:3]})["embeddings"]
    np.testing.assert_allclose(single[0], whole[2], rtol=1e-5, atol=1e-5)
    assert np.std(whole, axis=0).min() > 0, "stand-in outputs should depend on the input"


# A stand-in built from the changed spec is served to a backend expecting EMBEDDER.
MISMATCHES: list[tuple[str, Callable[[ModelSpec], ModelSpec], dict[str, object], str]] = [
    ("input name", lambda s: _with_input(s, name="image"), {}, "input(s) ['chips'] missing"),
    (
        "input dtype",
        lambda s: _with_input(s, dtype="UINT8"),
        {},
        "input 'chips': dtype UINT8, expected FP32",
    ),
    (
        "input dims",
        lambda s: _with_input(s, shape=(160, 160, 3)),
        {},
        "input 'chips': shape (N, 160, 160, 3), expected (N, 150, 150, 3)",
    ),
    (
        "output dims",
        lambda s: _with_output(s, shape=(64,)),
        {},
        "output 'embeddings': shape (N, 64), expected (N, 128)",
    ),
    (
        "output name",
        lambda s: _with_output(s, name="features"),
        {},
        "output(s) ['embeddings'] missing",
    ),
    (
        "extra output",
        lambda s: dataclasses.replace(s, outputs=(*s.outputs, TensorSpec("norms", "FP32", (1,)))),
        {},
        "unexpected output(s) ['norms']",
    ),
    ("fixed batch", lambda s: s, {"batch_dim": 1}, "batch dimension fixed at 1, expected dynamic"),
]


@pytest.mark.parametrize(
    ("change", "build_kwargs", "message"),
    [(m[1], m[2], m[3]) for m in MISMATCHES],
    ids=[m[0] for m in MISMATCHES],
)
def test_load_refuses_a_model_that_differs_from_its_spec(
    tmp_path: Path,
    change: Callable[[ModelSpec], ModelSpec],
    build_kwargs: dict[str, object],
    message: str,
) -> None:
    write_standin_onnx(change(EMBEDDER), tmp_path / EMBEDDER.onnx_file, **build_kwargs)
    backend = LocalBackend(model_dir=tmp_path)
    with pytest.raises(ModelMismatchError, match="does not match its spec") as caught:
        backend.load(EMBEDDER)
    assert message in str(caught.value)
    assert EMBEDDER.name in str(caught.value)


def test_expected_dynamic_dimension_needs_a_dynamic_model_dimension(tmp_path: Path) -> None:
    write_standin_onnx(EMBEDDER, tmp_path / EMBEDDER.onnx_file)
    any_size = _with_input(EMBEDDER, shape=(-1, -1, 3))
    with pytest.raises(
        ModelMismatchError, match=r"shape \(N, 150, 150, 3\), expected \(N, \?, \?, 3\)"
    ):
        LocalBackend(model_dir=tmp_path).load(any_size)


def test_model_with_dynamic_dimensions_serves_a_fixed_spec(tmp_path: Path) -> None:
    write_standin_onnx(_with_input(EMBEDDER, shape=(-1, -1, 3)), tmp_path / EMBEDDER.onnx_file)
    backend = LocalBackend(model_dir=tmp_path)
    backend.load(EMBEDDER)
    assert backend.infer(EMBEDDER, _random_batch(EMBEDDER, 2))["embeddings"].shape == (2, 128)


def test_missing_file_says_to_build_the_models(tmp_path: Path) -> None:
    backend = LocalBackend(model_dir=tmp_path)
    with pytest.raises(ModelNotBuiltError, match="run `openlfr models build`") as caught:
        backend.load(EMBEDDER)
    assert str(tmp_path / EMBEDDER.onnx_file) in str(caught.value)
    with pytest.raises(ModelNotBuiltError):
        backend.infer(EMBEDDER, _random_batch(EMBEDDER, 1))


def test_unreadable_file_is_an_inference_error(tmp_path: Path) -> None:
    (tmp_path / EMBEDDER.onnx_file).write_bytes(b"not an onnx model")
    with pytest.raises(InferenceError, match="onnxruntime cannot load"):
        LocalBackend(model_dir=tmp_path).load(EMBEDDER)


def test_model_dir_defaults_to_the_project_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENLFR_MODEL_DIR", str(tmp_path))
    assert LocalBackend().model_dir == tmp_path


@pytest.mark.parametrize("kwargs", [{"intra_op_threads": -1}, {"inter_op_threads": -2}])
def test_negative_thread_counts_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"expected 0\.\.256"):
        LocalBackend(**kwargs)


@pytest.mark.parametrize(
    ("batch_size", "max_batch_size", "expected"),
    [
        (0, 4, []),
        (3, 4, [(0, 3)]),
        (4, 4, [(0, 4)]),
        (10, 4, [(0, 4), (4, 8), (8, 10)]),
    ],
)
def test_batch_slices(
    batch_size: int, max_batch_size: int, expected: list[tuple[int, int]]
) -> None:
    assert [(s.start, s.stop) for s in batch_slices(batch_size, max_batch_size)] == expected


def test_batches_larger_than_max_batch_size_are_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = dataclasses.replace(EMBEDDER, max_batch_size=4)
    write_standin_onnx(small, tmp_path / small.onnx_file)
    backend = LocalBackend(model_dir=tmp_path, intra_op_threads=1)
    backend.load(small)
    inputs = _random_batch(small, 10)
    one_by_one = np.concatenate(
        [
            backend.infer(small, {"chips": inputs["chips"][i : i + 1]})["embeddings"]
            for i in range(10)
        ]
    )

    run_sizes: list[int] = []
    original_run = ort.InferenceSession.run

    def recording_run(
        self: ort.InferenceSession, output_names: list[str], feed: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        run_sizes.append(next(iter(feed.values())).shape[0])
        return original_run(self, output_names, feed)

    monkeypatch.setattr(ort.InferenceSession, "run", recording_run)
    outputs = backend.infer(small, inputs)

    assert run_sizes == [4, 4, 2]
    assert outputs["embeddings"].shape == (10, 128)
    np.testing.assert_allclose(outputs["embeddings"], one_by_one, rtol=1e-5, atol=1e-5)


def test_empty_batch_gives_empty_outputs_without_running(backend: LocalBackend) -> None:
    outputs = backend.infer(EMBEDDER, {"chips": np.empty((0, 150, 150, 3), np.float32)})
    assert outputs["embeddings"].shape == (0, 128)
    assert outputs["embeddings"].dtype == np.float32


CHIPS = np.zeros((2, 150, 150, 3), np.float32)

BAD_INPUTS: list[tuple[str, dict[str, object], str]] = [
    ("missing", {}, r"inputs \[\], expected \['chips'\] \(missing \['chips'\]\)"),
    ("unexpected", {"chips": CHIPS, "extra": CHIPS}, r"\(unexpected \['extra'\]\)"),
    ("renamed", {"images": CHIPS}, r"expected \['chips'\]"),
    ("not an array", {"chips": CHIPS.tolist()}, "list, expected numpy.ndarray"),
    ("float64", {"chips": CHIPS.astype(np.float64)}, r"dtype float64, expected float32 \(FP32\)"),
    ("uint8", {"chips": CHIPS.astype(np.uint8)}, r"dtype uint8, expected float32 \(FP32\)"),
    (
        "size",
        {"chips": np.zeros((2, 128, 128, 3), np.float32)},
        r"shape \(2, 128, 128, 3\), expected \(N, 150, 150, 3\)",
    ),
    (
        "no batch dimension",
        {"chips": CHIPS[0]},
        r"shape \(150, 150, 3\), expected \(N, 150, 150, 3\)",
    ),
    (
        "channels first",
        {"chips": np.zeros((2, 3, 150, 150), np.float32)},
        r"shape \(2, 3, 150, 150\)",
    ),
]


@pytest.mark.parametrize(
    ("inputs", "message"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_infer_refuses_inputs_that_differ_from_the_spec(
    backend: LocalBackend, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        backend.infer(EMBEDDER, inputs)


def test_close_drops_sessions_and_infer_loads_again(backend: LocalBackend) -> None:
    first = backend.infer(EMBEDDER, _random_batch(EMBEDDER, 2))
    backend.close()
    again = backend.infer(EMBEDDER, _random_batch(EMBEDDER, 2))
    np.testing.assert_array_equal(first["embeddings"], again["embeddings"])
