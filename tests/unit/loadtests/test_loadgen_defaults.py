"""The load generator runs the services with their production settings unless told otherwise."""

from __future__ import annotations

import importlib.util
import sys

from openlfr import paths


def _load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_loadgen_defaults_are_the_detect_service_defaults() -> None:
    sys.path.insert(0, str(paths.REPO_ROOT / "load-tests"))
    try:
        loadgen = _load("openlfr_loadgen_under_test", paths.REPO_ROOT / "load-tests" / "loadgen.py")
    finally:
        sys.path.remove(str(paths.REPO_ROOT / "load-tests"))
    detect = _load("openlfr_detect_main_under_test", paths.REPO_ROOT / "services" / "detect" / "main.py")
    fields = detect.DetectServiceSettings.model_fields
    assert loadgen.DETECT_MAX_FRAME_AGE_S == fields["max_frame_age_s"].default == detect.DETECT_MAX_FRAME_AGE_S
    assert fields["detect_gating"].default == "pyramid"
    args = loadgen.build_parser().parse_args(["--start-stack"])
    assert (args.detect_gating, args.detect_max_frame_age_s) == ("pyramid", detect.DETECT_MAX_FRAME_AGE_S)
