"""The embedding cache: hits, misses, version keys, bad entries; files that cannot be read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.evaluation.embeddings import (
    AnalysisVersion,
    EmbeddingCache,
    analyse_files,
    faces_from_npz,
    faces_to_npz,
    sha256_bytes,
)
from openlfr.vision.faces import EMBEDDING_DIM, FaceQuality, Faces


def _faces(x: float) -> Faces:
    embedding = np.zeros((1, EMBEDDING_DIM), np.float32)
    embedding[0, 0] = x
    one = np.ones(1, np.float32)
    return Faces(
        boxes=np.array([[0, 0, 8, 8]], np.float32), scores=one * 0.9, landmarks=np.zeros((1, 5, 2), np.float32),
        quality=FaceQuality(one * 8, one * 50, one * 100, one * 0, one * 0, one * 0.9, one * 0.9),
        embeddings=embedding,
    )


class CountingAnalyzer:
    """Embeds an image as its first pixel's red value; counts the images it was asked for."""

    def __init__(self) -> None:
        self.seen = 0

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[Faces]:
        self.seen += len(images)
        return [_faces(float(img[0, 0, 0])) for img in images]


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))
    return path


def test_npz_round_trip_keeps_every_array() -> None:
    faces = _faces(0.5)
    back = faces_from_npz(faces_to_npz(faces))
    for name in ("boxes", "scores", "landmarks", "embeddings"):
        np.testing.assert_array_equal(getattr(back, name), getattr(faces, name))
    assert back.quality.row(0) == faces.quality.row(0)
    assert len(faces_from_npz(faces_to_npz(Faces.empty()))) == 0


def test_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    files = [_png(tmp_path / "img" / f"{i}.png", i) for i in (10, 20, 30)]
    version = AnalysisVersion.of({"model": "m@1"})
    analyzer = CountingAnalyzer()

    first_cache = EmbeddingCache(tmp_path / "cache", version)
    first = analyse_files(files, analyzer=analyzer, cache=first_cache, batch_size=2)
    second_cache = EmbeddingCache(tmp_path / "cache", version)
    second = analyse_files(files, analyzer=None, cache=second_cache)

    assert analyzer.seen == 3
    assert (first_cache.hits, first_cache.misses) == (0, 3)
    assert (second_cache.hits, second_cache.misses) == (3, 0)
    assert [r.cached for r in second] == [True, True, True]
    assert [float(r.faces.embeddings[0, 0]) for r in second] == [10.0, 20.0, 30.0]
    assert [r.sha256 for r in first] == [sha256_bytes(f.read_bytes()) for f in files]
    assert (tmp_path / "cache" / version.key / "version.json").is_file()


def test_another_model_version_or_changed_content_is_a_miss(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", 10)
    analyzer = CountingAnalyzer()
    analyse_files([path], analyzer=analyzer, cache=EmbeddingCache(tmp_path / "c", AnalysisVersion.of({"m": "1"})))
    analyse_files([path], analyzer=analyzer, cache=EmbeddingCache(tmp_path / "c", AnalysisVersion.of({"m": "2"})))
    _png(path, 11)
    analyse_files([path], analyzer=analyzer, cache=EmbeddingCache(tmp_path / "c", AnalysisVersion.of({"m": "1"})))
    assert analyzer.seen == 3


def test_a_damaged_cache_entry_is_recomputed(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", 10)
    version = AnalysisVersion.of({"m": "1"})
    analyse_files([path], analyzer=CountingAnalyzer(), cache=EmbeddingCache(tmp_path / "c", version))
    entry = next((tmp_path / "c" / version.key).rglob("*.npz"))
    entry.write_bytes(b"not an npz")
    analyzer = CountingAnalyzer()
    cache = EmbeddingCache(tmp_path / "c", version)
    (result,) = analyse_files([path], analyzer=analyzer, cache=cache)
    assert analyzer.seen == 1 and cache.misses == 1
    assert float(result.faces.embeddings[0, 0]) == 10.0


def test_unreadable_and_corrupt_files_are_reported_not_raised(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", 10)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"

    results = analyse_files([good, corrupt, empty, missing], analyzer=CountingAnalyzer(), cache=None)

    assert results[0].faces is not None and results[0].error == ""
    for result in results[1:]:
        assert result.faces is None and result.error
    assert "empty file" in results[2].error
    assert "cannot read file" in results[3].error


def test_an_uncached_image_without_an_analyzer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the cache and no analyzer"):
        analyse_files([_png(tmp_path / "a.png", 1)], analyzer=None, cache=None)
