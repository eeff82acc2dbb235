"""Reading frames from video files with OpenCV, sampled to a target rate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from openlfr.vision.exceptions import ImageError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})


def is_video(path: Path) -> bool:
    """Whether a path names a video file (by its suffix)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One decoded frame: its index in the stream, its time (s) and RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


def iter_video_frames(path: Path, *, sample_fps: float | None = None) -> Iterator[VideoFrame]:
    """Yield frames of a video file, keeping about ``sample_fps`` per second (all if None).

    Raises:
        ImageError: the file cannot be opened as a video.
        ValueError: ``sample_fps`` is not positive.
    """
    if sample_fps is not None and sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: cannot open as a video")
    try:
        native_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        step = 1.0 if sample_fps is None else max(native_fps / sample_fps, 1.0)
        next_keep = 0.0
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index + 1e-9 >= next_keep:
                next_keep += step
                yield VideoFrame(index, index / native_fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
