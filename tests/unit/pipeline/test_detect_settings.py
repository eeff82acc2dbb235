"""One detect configuration for both paths (issue 12): ``openlfr run`` and the detect service
build their detect stage, gate included, from the same settings; bad thread settings stop
either at start naming the variable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openlfr import paths
from openlfr.cli import build_parser
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.detect_settings import DetectSettings, build_detect_stage
from openlfr.run_cli import run_settings
from openlfr.service.modules import load_service_main
from openlfr.service.settings import load_settings
from openlfr.vision.gating import MotionGate
from openlfr.vision.pyramid_gate import PyramidGate


detect_service = load_service_main("detect", module_name="openlfr_detect_main_under_test")


def stage_config(stage: DetectStage) -> dict[str, Any]:
    """Everything about a built detect stage that decides what it does with a frame."""
    gate = stage.gate
    detector = stage.analyzer.detector
    return {
        "gate": None if gate is None else (type(gate).__name__, {
            k: v for k, v in vars(gate).items() if not k.startswith("_") and isinstance(v, (int, float, str, bool))}),
        "max_frame_age_s": stage.max_frame_age_s,
        "freshness": (stage.freshness.max_age_s, stage.freshness.lateness_s, stage.freshness.keep_every),
        "min_quality": stage.min_quality,
        "png_compression": stage.png_compression,
        "max_message_bytes": stage.max_message_bytes,
        "detector_model": stage.detector_model,
        "detector": (detector.spec.name, detector.score_threshold, repr(detector.tile_grids), detector.tile_overlap),
        "detector_models": [spec.name for spec in detector.specs],
        "min_face_px": stage.analyzer.min_face_px,
    }


def stage_threads(stage: DetectStage) -> tuple[Any, Any]:
    """The onnxruntime pools of the stage's detector and embedder sessions."""
    return stage.analyzer.detector.backend.threading, stage.analyzer.embedder.backend.threading


def _run_args(*extra: str) -> Any:
    return build_parser().parse_args(["run", "--source", "video.mp4", "--watchlist", "people", *extra])


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OPENLFR_DETECT_GATING": "motion", "OPENLFR_DETECT_KEYFRAME_INTERVAL": "4", "OPENLFR_MIN_QUALITY": "0.25",
         "OPENLFR_MAX_FRAME_AGE_S": "2.5", "OPENLFR_DETECTOR": "short", "OPENLFR_TILING": "false",
         "OPENLFR_CATCHUP_KEEP_EVERY": "3", "OPENLFR_DETECT_INTRA_OP_THREADS": "1",
         "OPENLFR_EMBED_INTER_OP_THREADS": "2", "OPENLFR_ORT_ALLOW_SPINNING": "1"},
        {"OPENLFR_DETECT_GATING": "off", "OPENLFR_FACES_MESSAGE_MAX_BYTES": "400000", "OPENLFR_THREADS": "1"},
        {"OPENLFR_DETECT_STILL_KEYFRAMES": "0", "OPENLFR_DETECT_STILL_REFRESH": "2", "OPENLFR_DETECTOR_FOLLOW": "same"},
    ],
    ids=["defaults", "everything-changed", "ungated", "still-rules"],
)
def test_openlfr_run_and_the_detect_service_build_the_same_detect_stage(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, model_dir: Path,
) -> None:
    monkeypatch.setenv("OPENLFR_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9092")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    service_settings = load_settings(detect_service.DetectServiceSettings)
    cli_settings = run_settings(_run_args())
    run_fields, service_fields = cli_settings.detect_fields(), service_settings.detect_fields()
    if "OPENLFR_THREADS" not in env:  # below: run's own default of one thread a stage
        assert (run_fields.pop("threads"), service_fields.pop("threads")) == (1, 0)
    assert run_fields == service_fields

    service = detect_service.build(service_settings)
    live = build_detect_stage(cli_settings, live=True)
    assert stage_config(live) == stage_config(service)
    # Threads: the same once set; unset, ``openlfr run`` (its stages share one process) gives
    # each stage one onnxruntime thread and the service keeps onnxruntime's default.
    run_detect, run_embed = stage_threads(live)
    if "OPENLFR_THREADS" in env:
        assert (run_detect, run_embed) == stage_threads(service)
    else:
        assert cli_settings.threads == 1 and service_settings.threads == 0
        assert run_embed.intra_op_threads == (int(env.get("OPENLFR_EMBED_INTRA_OP_THREADS", 1)))
        assert stage_threads(service)[1].intra_op_threads == int(env.get("OPENLFR_EMBED_INTRA_OP_THREADS", 0))
    if not env:
        assert isinstance(service.gate, PyramidGate)  # the default, for both
    detector_models = [spec.name for spec in live.analyzer.detector.specs]
    if env.get("OPENLFR_DETECTOR_FOLLOW") == "same" or env.get("OPENLFR_DETECTOR") == "short":
        assert detector_models == [live.analyzer.detector.spec.name]
    else:  # the default: followed faces re-found by the short-range model
        assert detector_models[1:] == ["blazeface_short"]
    if "OPENLFR_DETECT_STILL_REFRESH" in env:
        assert isinstance(live.gate, PyramidGate) and (live.gate.still_keyframes, live.gate.still_refresh) == (0, 2)
    if env.get("OPENLFR_DETECT_GATING") == "motion":
        assert isinstance(live.gate, MotionGate) and live.gate.keyframe_interval == 4

    # A file read as fast as it goes: the same stage without a frame-age limit.
    from_file = stage_config(build_detect_stage(cli_settings, live=False))
    assert from_file.pop("max_frame_age_s") is None and from_file.pop("freshness")[0] is None
    expected = stage_config(service)
    del expected["max_frame_age_s"], expected["freshness"]
    assert from_file == expected


def test_openlfr_run_on_a_file_takes_its_threads_from_the_flag_or_the_setting_before_its_own_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENLFR_THREADS", raising=False)
    assert run_settings(_run_args()).threads == 1
    assert run_settings(_run_args("--threads", "0")).threads == 0
    # A camera keeps onnxruntime's default, as the services do: keeping up comes first.
    for camera in ("rtsp://cam.example/stream", "0"):
        args = build_parser().parse_args(["run", "--source", camera, "--watchlist", "people"])
        assert run_settings(args).threads == 0
    monkeypatch.setenv("OPENLFR_THREADS", "2")
    assert run_settings(_run_args()).threads == 2
    assert run_settings(_run_args("--threads", "3")).threads == 3


def test_the_run_flag_for_the_frame_age_limit_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLFR_MAX_FRAME_AGE_S", "2")
    assert run_settings(_run_args()).max_frame_age_s == 2.0
    assert run_settings(_run_args("--max-frame-age-s", "3")).max_frame_age_s == 3.0
    assert DetectSettings().detect_gating == "pyramid"


BAD_SETTINGS = [
    ("OPENLFR_DETECTOR_FOLLOW", "tiny"),
    ("OPENLFR_DETECT_STILL_KEYFRAMES", "-1"),
    ("OPENLFR_DETECT_STILL_REFRESH", "0"),
    ("OPENLFR_DETECT_INTRA_OP_THREADS", "-1"),
    ("OPENLFR_DETECT_INTER_OP_THREADS", "257"),
    ("OPENLFR_EMBED_INTRA_OP_THREADS", "two"),
    ("OPENLFR_EMBED_INTER_OP_THREADS", "-3"),
    ("OPENLFR_ORT_ALLOW_SPINNING", "sometimes"),
    ("OPENLFR_DETECT_GATING", "tiles"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_a_bad_setting_stops_the_detect_service_naming_it(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(detect_service.DetectServiceSettings)
    assert stopped.value.code == 2
    assert f"bad setting {name}:" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS[:3])
def test_a_bad_setting_stops_openlfr_run_naming_it(name: str, value: str, tmp_path: Path, faces_dir: Path) -> None:
    # A watchlist laid out as the command takes it (its layout is checked before the settings).
    (tmp_path / "people" / "biden").mkdir(parents=True)
    shutil.copy(faces_dir / "face_recognition" / "examples" / "biden.jpg", tmp_path / "people" / "biden" / "biden.jpg")
    video = faces_dir / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
    env = {"PATH": "/usr/bin:/bin", name: value}
    proc = subprocess.run([sys.executable, "-m", "openlfr.cli", "run", "--source", str(video),
                           "--watchlist", str(tmp_path / "people")], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=paths.REPO_ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"openlfr run: bad setting {name}:" in proc.stderr
