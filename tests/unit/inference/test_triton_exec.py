"""openlfr.inference.triton_exec, the CPU Triton image's entry point: its arguments, the layout it
prepares from the real nvidia-pytriton wheel, and the command and environment it would exec.
Serving for real: tests/integration/test_triton_exec.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from openlfr.inference import triton_exec
from openlfr.inference.triton_server import TritonDistribution, interpreter_lib_dir


@pytest.fixture()
def repository(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def _args(repository: Path, work_dir: Path, *more: str) -> list[str]:
    return ["--model-repository", str(repository), "--work-dir", str(work_dir), *more]


def test_prepare_only_lays_out_the_backend_directory_and_prints_the_command(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    code = triton_exec.main(_args(repository, work, "--prepare-only", "--backend-config",
                                  "python,shm-default-byte-size=16777216", "--", "--log-info=false"))
    assert code == 0
    backend = work / "backends" / "python"
    assert sorted(p.name for p in backend.iterdir()) == [
        "libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = TritonDistribution.find().stubs_dir / version / "triton_python_backend_stub"
    assert (backend / "triton_python_backend_stub").read_bytes() == stub.read_bytes()
    command = capsys.readouterr().out.split()
    assert command[0].endswith("/tritonserver/bin/tritonserver")
    assert {f"--model-repository={repository}", f"--backend-directory={work / 'backends'}",
            "--http-address=0.0.0.0", "--http-port=8000", "--grpc-address=0.0.0.0", "--grpc-port=8001",
            "--metrics-address=0.0.0.0", "--metrics-port=8002", "--exit-timeout-secs=5",
            "--backend-config=python,shm-default-byte-size=16777216"} <= set(command)
    assert command[-1] == "--log-info=false"  # after --: tritonserver's, last


def test_a_second_prepare_leaves_the_layout_as_it_is(repository: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert triton_exec.main(_args(repository, work, "--prepare-only")) == 0
    stub = work / "backends" / "python" / "triton_python_backend_stub"
    before = stub.stat()
    assert triton_exec.main(_args(repository, work, "--prepare-only")) == 0
    after = stub.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_environment_puts_this_interpreters_libpython_and_venv_first(repository: Path, tmp_path: Path) -> None:
    args = triton_exec.parser().parse_args(_args(repository, tmp_path / "work", "--host", "127.0.0.1",
                                                 "--grpc-port", "9001"))
    command, env = triton_exec.server(args).prepare()
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [str(interpreter_lib_dir()),
                                                     str(TritonDistribution.find().libs_dir)]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "--grpc-address=127.0.0.1" in command and "--grpc-port=9001" in command


def test_a_missing_repository_stops_it_naming_the_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here"
    assert triton_exec.main(_args(missing, tmp_path / "work")) == 2
    assert f"model repository {missing} is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["python", "python,shm-default-byte-size", ",key=value"])
def test_a_malformed_backend_setting_is_refused(
    repository: Path, tmp_path: Path, setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        triton_exec.main(_args(repository, tmp_path / "work", "--backend-config", setting))
    assert exited.value.code == 2
    assert "expected BACKEND,KEY=VALUE" in capsys.readouterr().err


def test_a_negative_exit_timeout_is_refused(repository: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert triton_exec.main(_args(repository, tmp_path / "work", "--exit-timeout", "-1")) == 2
    assert "exit_timeout_s=-1" in capsys.readouterr().err
