"""``openlfr run`` (embedded mode) on the built sample: one alert per enrolled walker, at a
threshold it can justify; and the refusals that come before any frame is read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openlfr import paths


@pytest.fixture(scope="module")
def run_env(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, str]:
    """One build folder for the module: the sample video and its cohort are built once, from
    the project's embedding cache (set-up fills it when it builds the demo's cohort)."""
    build = tmp_path_factory.mktemp("build")
    cache = paths.build_dir() / "eval-cache"
    cache.mkdir(parents=True, exist_ok=True)
    (build / "eval-cache").symlink_to(cache)
    return {**os.environ, "OPENLFR_BUILD_DIR": str(build), "OPENLFR_MODEL_DIR": str(model_dir)}


def _run(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openlfr.cli", "run", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False, cwd=paths.REPO_ROOT)


def _normalised_threshold(stderr: str) -> float:
    found = re.search(r"normalised threshold ([0-9.]+)", stderr)
    assert found, stderr
    return float(found.group(1))


def test_openlfr_run_without_arguments_alerts_on_the_sample(run_env: dict[str, str]) -> None:
    proc = _run(run_env, "--json")
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(a["subject_id"] for a in alerts) == ["barack_obama", "joe_biden"], proc.stderr
    for alert in alerts:
        assert len(alert["alert_id"]) == 32 and alert["camera_id"] == "cam-1"
        assert alert["score"] >= alert["threshold"] and alert["capture_ts"] > 0
        # Decided on each subject's own threshold against the sample cohort.
        assert alert["normalised_score"] >= alert["normalised_threshold"] > 0
        assert alert["cohort"].startswith("cohort@")
    assert "false alert(s) per 10,000 passers-by" in proc.stderr and "expected miss rate" in proc.stderr
    summary = json.loads(proc.stderr.split("openlfr run summary: ", 1)[1].splitlines()[0])
    assert summary["alerts"] == 2 and summary["frames_processed"] == summary["frames_published"] > 30
    assert summary["tracks"] >= 3 and summary["dead_letters"] == 0


def test_a_larger_watchlist_runs_at_a_stricter_threshold(run_env: dict[str, str], faces_dir: Path,
                                                         tmp_path: Path) -> None:
    """Against one cohort, the sample's 3 subjects and then the same 3 and 20 more people
    (none of them in the cohort): the threshold rises with the watchlist."""
    utk = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))
    cohort_src = tmp_path / "cohort-src"
    cohort_src.mkdir()
    for photo in utk[:300]:
        shutil.copyfile(photo, cohort_src / photo.name)
    cohort = tmp_path / "cohort.npz"
    built = subprocess.run([sys.executable, "-m", "openlfr.cli", "cohort", "build", str(cohort_src), "--one-per-person",
                            "--out", str(cohort), "--no-progress"], capture_output=True, text=True, env=run_env,
                           timeout=600, check=False, cwd=paths.REPO_ROOT)
    assert built.returncode == 0, built.stderr
    base = _run(run_env, "--cohort", str(cohort))  # the sample: builds it in this module's build folder
    assert base.returncode == 0, base.stderr
    sample = Path(run_env["OPENLFR_BUILD_DIR"]) / "samples"
    watchlist = tmp_path / "watchlist"
    shutil.copytree(sample / "watchlist", watchlist)
    for i, photo in enumerate(utk[300:320]):
        (watchlist / f"extra_{i:02d}").mkdir()
        shutil.copyfile(photo, watchlist / f"extra_{i:02d}" / photo.name)
    bigger = _run(run_env, "--source", str(sample / "walk-by.mp4"), "--watchlist", str(watchlist),
                  "--cohort", str(cohort))
    assert bigger.returncode == 0, bigger.stderr
    enrolled = re.search(r"enrolled (\d+) subject", bigger.stderr)
    assert enrolled and int(enrolled.group(1)) >= 13, bigger.stderr
    assert _normalised_threshold(bigger.stderr) > _normalised_threshold(base.stderr)


def test_a_loose_threshold_is_refused_before_any_frame(run_env: dict[str, str]) -> None:
    proc = _run(run_env, "--threshold", "0.705")
    assert proc.returncode == 2
    assert "--threshold 0.705: on a watchlist of 3" in proc.stderr and "--accept-fpir" in proc.stderr
    assert "summary" not in proc.stderr and proc.stdout == ""


def test_a_named_rate_accepts_a_threshold_above_the_target(run_env: dict[str, str]) -> None:
    proc = _run(run_env, "--threshold", "0.8", "--accept-fpir", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(a["subject_id"] for a in alerts) == ["barack_obama", "joe_biden"]
    assert all(a["threshold"] == 0.8 and "normalised_score" not in a for a in alerts)
    refused = _run(run_env, "--threshold", "0.8", "--accept-fpir", "1e-6")
    assert refused.returncode == 2 and "above the --accept-fpir 1e-06 you named" in refused.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--source", "v.mp4"], "--watchlist"),
        (["--watchlist", "."], "give both --source and --watchlist"),
        (["--target-fpir", "2"], "--target-fpir"),
        (["--target-fpir", "often"], "--target-fpir"),
        (["--accept-fpir", "0.01"], "--accept-fpir applies to a named --threshold"),
        (["--threshold", "7"], "--threshold 7"),
        (["--threshold", "0.8", "--max-distance", "0.4"], "--threshold and --max-distance"),
        (["--floor", "0"], "--floor"),
        (["--min-votes", "0"], "--min-votes"),
        (["--sample-fps", "0"], "--sample-fps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--max-reconnects", "-2"], "--max-reconnects"),
        (["--source", "missing.mp4", "--watchlist", "."], "--source missing.mp4: no such file"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(args: list[str], named: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "openlfr.cli", "run", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr


def _tiny_video(path: Path) -> Path:
    """A few decodable frames, enough for ``--source`` to pass its check."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for k in range(3):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    return path


def _layout(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """``openlfr run``'s arguments for one refused input and the words its refusal must hold."""
    video = _tiny_video(tmp_path / "clip.mp4")
    people = tmp_path / "people"
    (people / "ada").mkdir(parents=True)
    (people / "ada" / "photo.jpg").write_bytes(b"layout only: refused before any photo is read")
    if case == "empty watchlist":
        (tmp_path / "empty").mkdir()
        return ["--source", str(video), "--watchlist", str(tmp_path / "empty")], "no subject folder with a photo in it"
    if case == "photos not in per-person folders":
        flat = tmp_path / "flat"
        flat.mkdir()
        for name in ("a.jpg", "b.jpg"):
            (flat / name).write_bytes(b"x")
        (flat / "nobody").mkdir()  # an empty subject folder does not count
        return ["--source", str(video), "--watchlist", str(flat)], "2 file(s) not in a subject's folder (a.jpg, b.jpg)"
    if case == "empty source folder":
        (tmp_path / "frames").mkdir()
        (tmp_path / "frames" / "notes.txt").write_text("not an image")
        return ["--source", str(tmp_path / "frames"), "--watchlist", str(people)], "an image folder with no image in it"
    if case == "not a video":
        (tmp_path / "notes.txt").write_text("not a video")
        return ["--source", str(tmp_path / "notes.txt"), "--watchlist", str(people)], "notes.txt: not a video file"
    if case == "corrupt video":
        (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing")
        return ["--source", str(tmp_path / "broken.mp4"), "--watchlist", str(people)], "cannot be read as a video"
    if case == "missing cohort":
        return (["--source", str(video), "--watchlist", str(people), "--cohort", str(tmp_path / "none.npz")],
                f"--cohort: no cohort file at {tmp_path / 'none.npz'}; build one with `openlfr cohort build")
    assert case == "unknown scheme"
    return ["--source", "ftp://cam/1", "--watchlist", str(people)], "--source ftp://cam/1: unsupported scheme 'ftp'"


@pytest.mark.parametrize("case", ["empty watchlist", "photos not in per-person folders", "empty source folder",
                                  "not a video", "corrupt video", "unknown scheme", "missing cohort"])
def test_inputs_that_cannot_give_an_alert_are_refused_before_any_model(case: str, tmp_path: Path) -> None:
    """Exit 2 naming the flag, before a model is loaded or a subject enrolled (no cohort, model
    or build folder is needed to get here), with no FFmpeg noise."""
    args, words = _layout(tmp_path, case)
    env = {**os.environ, "OPENLFR_BUILD_DIR": str(tmp_path / "no-build"),
           "OPENLFR_MODEL_DIR": str(tmp_path / "no-models")}
    proc = subprocess.run([sys.executable, "-m", "openlfr.cli", "run", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and proc.stderr.startswith("openlfr run: --"), proc.stderr
    assert "enrolled" not in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    assert "moov atom" not in proc.stderr and "[mov," not in proc.stderr, proc.stderr
    assert not (tmp_path / "no-build").exists()


def test_a_watchlist_nobody_could_be_enrolled_from_is_refused(run_env: dict[str, str], faces_dir: Path,
                                                               tmp_path: Path) -> None:
    watchlist = tmp_path / "watchlist"
    (watchlist / "nobody").mkdir(parents=True)
    shutil.copyfile(faces_dir / "dlib" / "dlib" / "test" / "ffmpeg_data" / "dog.jpg", watchlist / "nobody" / "dog.jpg")
    sample = Path(run_env["OPENLFR_BUILD_DIR"]) / "samples" / "walk-by.mp4"
    proc = _run(run_env, "--source", str(sample), "--watchlist", str(watchlist),
                "--cohort", str(Path(run_env["OPENLFR_BUILD_DIR"]) / "cohort" / "default.npz"))
    assert proc.returncode == 2, proc.stderr
    assert "no subject could be enrolled" in proc.stderr and "dog.jpg" in proc.stderr


def test_a_missing_cohort_is_refused_naming_the_flag(run_env: dict[str, str], tmp_path: Path) -> None:
    sample = Path(run_env["OPENLFR_BUILD_DIR"]) / "samples"
    proc = _run(run_env, "--source", str(sample / "walk-by.mp4"), "--watchlist", str(sample / "watchlist"),
                "--cohort", str(tmp_path / "none.npz"))
    assert proc.returncode == 2 and "--cohort: no cohort file" in proc.stderr and "openlfr cohort build" in proc.stderr


def test_an_unreachable_stream_is_given_up_naming_the_flag(run_env: dict[str, str], faces_dir: Path,
                                                           tmp_path: Path) -> None:
    (tmp_path / "people" / "biden").mkdir(parents=True)  # its own watchlist: runs alone too
    shutil.copy(faces_dir / "face_recognition" / "examples" / "biden.jpg", tmp_path / "people" / "biden")
    from openlfr.testing.stack import demo_cohort

    proc = _run(run_env, "--source", "rtsp://127.0.0.1:9/nothing-here", "--watchlist", str(tmp_path / "people"),
                "--cohort", str(demo_cohort()), "--max-reconnects", "1", timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "--source: stream rtsp://127.0.0.1:9/nothing-here: no frame after 1 reconnect attempt(s)" in proc.stderr
    assert "Traceback" not in proc.stderr and "VIDEOIO" not in proc.stderr
    # One reconnect announced (not a second it never makes), the reason said by ingest and the command.
    assert 'reconnect="1"' in proc.stderr and 'reconnect="2"' not in proc.stderr
    assert proc.stderr.count("no frame after 1 reconnect attempt(s)") == 2


def test_ctrl_c_stops_cleanly_with_the_summary(run_env: dict[str, str]) -> None:
    """SIGINT while a file plays in real time: exit 130 and the summary of what was done, no traceback."""
    err = _ctrl_c_after(["run", "--realtime"], run_env, "normalised threshold", settle_s=2.0)
    # ("normalised threshold": enrolled and calibrated, frames flowing next; 2 s: a few frames in)
    assert "stopped by Ctrl-C after" in err and "frame(s) processed of" in err, err
    assert "Traceback" not in err


def test_a_file_shows_a_progress_bar_of_frames_done_and_total_on_a_terminal(model_dir: Path, faces_dir: Path,
                                                                              tmp_path: Path) -> None:
    """On a terminal (stderr a pty) a file's run draws a bar of frames processed out of the frames it
    will give at --sample-fps: 30 frames at 10 fps sampled at 5 fps are 15; off a terminal, none."""
    import fcntl
    import os as _os
    import pty
    import struct
    import termios

    import cv2
    import numpy as np

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for k in range(30):
        writer.write(np.full((120, 160, 3), 3 * k, np.uint8))
    writer.release()
    people = tmp_path / "people" / "obama"
    people.mkdir(parents=True)
    shutil.copyfile(faces_dir / "face_recognition/examples/knn_examples/train/obama/obama.jpg", people / "obama.jpg")
    args = [sys.executable, "-m", "openlfr.cli", "run", "--source", str(video), "--watchlist", str(tmp_path / "people"),
            "--sample-fps", "5", "--floor", "0.9"]
    env = {**os.environ, "OPENLFR_MODEL_DIR": str(model_dir)}
    env.pop("OPENLFR_BUILD_DIR", None)  # the project's cohort, built by set-up
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=terminal, env=env, cwd=paths.REPO_ROOT)
    _os.close(terminal)
    seen = bytearray()
    while True:
        try:
            chunk = _os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _os.close(main)
    assert proc.wait(300) == 0, seen.decode(errors="replace")
    shown = seen.decode(errors="replace")
    counts = [(int(done), int(total)) for done, total in re.findall(r"openlfr run:[^\r\n]*?(\d+)/(\d+) \[", shown)]
    assert counts and {total for _, total in counts} == {15}, shown
    assert counts[0][0] == 0 and counts[-1][0] == 15 and all(done <= 15 for done, _ in counts), shown
    assert "15 frame(s) processed of" in shown, shown
    quiet = subprocess.run(args, capture_output=True, text=True, env=env, cwd=paths.REPO_ROOT, timeout=300, check=False)
    assert quiet.returncode == 0 and "/15 [" not in quiet.stderr, quiet.stderr


def test_ctrl_c_during_enrolment_ends_in_a_line_not_a_traceback(model_dir: Path, faces_dir: Path,
                                                                 tmp_path: Path) -> None:
    """SIGINT while the watchlist is being enrolled (before any frame): exit 130 and one line saying
    so; it was a KeyboardInterrupt traceback from onnxruntime."""
    watchlist = tmp_path / "watchlist"
    for k, photo in enumerate(sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[:80]):
        (watchlist / f"p{k:02d}").mkdir(parents=True)
        shutil.copyfile(photo, watchlist / f"p{k:02d}" / photo.name)
    video = _tiny_video(tmp_path / "clip.mp4")
    env = {**os.environ, "OPENLFR_MODEL_DIR": str(model_dir)}
    env.pop("OPENLFR_BUILD_DIR", None)  # the project's cohort, built by set-up
    # "enrolled subject": the first of 80 subjects, enrolment under way.
    err = _ctrl_c_after(["run", "-v", "--source", str(video), "--watchlist", str(watchlist)], env, "enrolled subject")
    assert "openlfr run: stopped by Ctrl-C during set-up" in err and "Traceback" not in err, err[-3000:]
    assert "normalised threshold" not in err  # it stopped before calibration, as the line says


def _ctrl_c_after(args: list[str], env: dict[str, str], marker: str, *, settle_s: float = 0.0) -> str:
    """Run ``openlfr ARGS``, send SIGINT once ``marker`` is on its stderr (and ``settle_s`` more),
    expect exit 130; its stderr. SIGINT is at its default in the child, as from a terminal, even
    where the test runs with it ignored (a background job of a non-interactive shell, as some CI
    runners start it)."""
    import signal
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "openlfr.cli", *args], env=env, cwd=paths.REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(300), "".join(lines)
        threading.Event().wait(settle_s)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    return "".join(lines)
