"""Mirrored views in the embedder (``OPENLFR_EMBED_MIRROR``), on real faces of the shared set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.evaluation.embeddings import analyzer_version
from openlfr.vision.embedder import FaceEmbedder, mirror_mean
from openlfr.vision.images import load_image


@pytest.fixture(scope="module")
def chips(analyzer, faces_dir: Path) -> np.ndarray:
    """The aligned chips of a few real photos (largest face each)."""
    paths = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[:6]
    located = analyzer.locate_many([load_image(p) for p in paths], keep_chips=True)
    return np.stack([f.chips[int(np.argmax(f.boxes[:, 2] - f.boxes[:, 0]))] for f in located if len(f)])


@pytest.fixture(scope="module")
def embedders(local_backend) -> tuple[FaceEmbedder, FaceEmbedder]:
    manifest = ModelSettings().embedder_manifest()
    return (FaceEmbedder(backend=local_backend, manifest=manifest),
            FaceEmbedder(backend=local_backend, manifest=manifest, mirror=True))


def test_a_mirrored_embedding_is_the_mean_of_the_chip_and_its_flipped_copy(chips, embedders) -> None:
    single, mirrored = embedders
    want = mirror_mean(single.embed(chips), single.embed(np.ascontiguousarray(chips[:, :, ::-1])))
    got = mirrored.embed(chips)
    assert got.shape == (len(chips), single.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # It differs from the single view (the flipped face is not the same face to the network) ...
    assert np.abs(got - single.embed(chips)).max() > 1e-3
    # ... and a face and its mirror image now get the same descriptor.
    np.testing.assert_allclose(mirrored.embed(np.ascontiguousarray(chips[:, :, ::-1])), got, atol=1e-5)


def test_mirror_mean_keeps_the_length_and_takes_the_mean_direction() -> None:
    a = np.array([[3.0, 0.0], [0.0, 2.0]], np.float32)
    b = np.array([[0.0, 1.0], [0.0, 4.0]], np.float32)
    out = mirror_mean(a, b)
    np.testing.assert_allclose(out[0], np.array([1.0, 1.0]) / np.sqrt(2) * 2.0, atol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 3.0], atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        mirror_mean(a, b[:1])
    with pytest.raises(ValueError, match="zero descriptor"):
        mirror_mean(a, np.zeros_like(b))


def test_the_setting_is_on_by_default_and_reaches_the_analyzer_and_the_analysis_version(monkeypatch) -> None:
    from openlfr.vision.factory import build_analyzer

    assert ModelSettings().embed_mirror is True
    assert build_analyzer(ModelSettings()).embedder.mirror is True
    monkeypatch.setenv("OPENLFR_EMBED_MIRROR", "false")
    off = ModelSettings()
    assert off.embed_mirror is False and build_analyzer(off).embedder.mirror is False
    # Cached embeddings of one way are never served for the other.
    assert analyzer_version(off) != analyzer_version(ModelSettings(embed_mirror=True))
