"""onnxruntime session settings per stage (issue 12): thread pools and spinning from
``OPENLFR_*``, spinning off unless turned on, applied to the local backend's sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.inference.factory import make_backend
from openlfr.inference.local import LocalBackend
from openlfr.inference.session_options import OrtThreading
from openlfr.inference.testing import write_standin_onnx
from openlfr.models.specs import EMBEDDER

SPIN_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


@pytest.mark.parametrize(
    ("env", "detect", "embed"),
    [
        ({}, OrtThreading(0, 0, False), OrtThreading(0, 0, False)),
        ({"OPENLFR_THREADS": "2"}, OrtThreading(2, 0, False), OrtThreading(2, 0, False)),
        ({"OPENLFR_THREADS": "2", "OPENLFR_EMBED_INTRA_OP_THREADS": "1", "OPENLFR_DETECT_INTER_OP_THREADS": "2"},
         OrtThreading(2, 2, False), OrtThreading(1, 0, False)),
        ({"OPENLFR_DETECT_INTRA_OP_THREADS": "0", "OPENLFR_THREADS": "3", "OPENLFR_ORT_ALLOW_SPINNING": "true"},
         OrtThreading(0, 0, True), OrtThreading(3, 0, True)),
    ],
    ids=["defaults", "threads-for-both", "per-stage", "stage-zero-beats-threads"],
)
def test_each_stage_gets_its_own_pools_from_the_environment(
    env: dict[str, str], detect: OrtThreading, embed: OrtThreading, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ModelSettings()
    assert (settings.ort_threading("detect"), settings.ort_threading("embed")) == (detect, embed)
    for stage, expected in (("detect", detect), ("embed", embed)):
        backend = make_backend(settings, stage=stage)
        assert isinstance(backend, LocalBackend) and backend.threading == expected


@pytest.mark.parametrize("allow", [False, True])
def test_spinning_reaches_both_pools_of_the_session(allow: bool) -> None:
    options = OrtThreading(intra_op_threads=1, inter_op_threads=2, allow_spinning=allow).session_options()
    assert [options.get_session_config_entry(key) for key in SPIN_KEYS] == ["1" if allow else "0"] * 2
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)


@pytest.mark.parametrize("kwargs", [{"intra_op_threads": -1}, {"inter_op_threads": 257}])
def test_thread_counts_out_of_range_are_refused_naming_them(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        OrtThreading(**kwargs)


def test_a_session_without_spinning_gives_the_same_numbers(tmp_path: Path) -> None:
    write_standin_onnx(EMBEDDER, tmp_path / EMBEDDER.onnx_file)
    chips = (np.random.default_rng(3).random((5, *EMBEDDER.inputs[0].shape)) * 255).astype(np.float32)
    spinning = LocalBackend(tmp_path, intra_op_threads=2, allow_spinning=True)
    quiet = LocalBackend(tmp_path, intra_op_threads=2)
    assert quiet.threading.allow_spinning is False  # the default
    np.testing.assert_array_equal(quiet.infer(EMBEDDER, {"chips": chips})["embeddings"],
                                  spinning.infer(EMBEDDER, {"chips": chips})["embeddings"])


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, 4), ({"OPENLFR_BACKEND": "triton"}, 64), ({"OPENLFR_DETECTOR_MAX_BATCH": "16"}, 16),
     ({"OPENLFR_BACKEND": "triton", "OPENLFR_DETECTOR_MAX_BATCH": "1"}, 1)],
    ids=["local", "triton", "set", "set-triton"],
)
def test_detector_calls_are_small_on_the_cpu_and_whole_batches_on_triton(
    env: dict[str, str], expected: int, model_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small calls keep a batch's activations in cache (docs/benchmarks.md); the analyzer's
    detector gets what the settings say."""
    from openlfr.vision.factory import build_analyzer

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ModelSettings(model_dir=model_dir)
    assert settings.detector_batch() == expected
    backend = LocalBackend(model_dir)  # the batch is the settings', whatever serves the model
    try:
        assert build_analyzer(settings, backend=backend).detector.max_batch == expected
    finally:
        backend.close()


@pytest.mark.parametrize("value", ["0", "65", "four"])
def test_a_detector_batch_out_of_range_is_refused_naming_it(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLFR_DETECTOR_MAX_BATCH", value)
    with pytest.raises(ValueError, match="detector_max_batch"):
        ModelSettings()
