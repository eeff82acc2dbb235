"""Verification accuracy on the shared set's pairs: OpenLFR's face path beside dlib's own.

OpenLFR: BlazeFace (tiled) -> dlib 5-point landmarks (numpy) -> dlib chip -> ResNet (ONNX).
dlib:    dlib's HOG detector (1 upsample) -> dlib's predictor -> dlib's chip -> dlib's ResNet.
The largest face of each image is used; an image with no face is a failure to enrol and its
pairs are left out (reported).

Usage: .venv/bin/python benchmarks/verify_pairs.py [--pairs PATH]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.evaluation.verification import equal_error_rate, fnmr_at_fmr, roc
from openlfr.inference.local import LocalBackend
from openlfr.models.build import build_all
from openlfr.models.sources import dlib_model_path
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"


def openlfr_embedder() -> Callable[[np.ndarray], np.ndarray | None]:
    build_all(paths.model_dir())
    analyzer = build_analyzer(ModelSettings(), backend=LocalBackend(paths.model_dir()))

    def embed(img: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(img)
        if not len(faces):
            return None
        return faces.embeddings[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    return embed


def dlib_embedder() -> Callable[[np.ndarray], np.ndarray | None]:
    import dlib

    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5")))
    net = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))

    def embed(img: np.ndarray) -> np.ndarray | None:
        dets = hog(img, 1)
        if not dets:
            return None
        rect = max(dets, key=lambda r: r.width())
        return np.asarray(net.compute_face_descriptor(img, sp(img, rect)), np.float32)

    return embed


def evaluate(name: str, embed: Callable[[np.ndarray], np.ndarray | None], pairs: list[dict[str, str]]) -> str:
    paths_ = sorted({p["path_a"] for p in pairs} | {p["path_b"] for p in pairs})
    emb = {p: embed(load_image(FACES / p)) for p in paths_}
    fte = sum(e is None for e in emb.values()) / len(emb)
    gen, imp = [], []
    for p in pairs:
        a, b = emb[p["path_a"]], emb[p["path_b"]]
        if a is not None and b is not None:
            (gen if p["same"] == "1" else imp).append(float(np.linalg.norm(a - b)))
    curve = roc(np.array(gen), np.array(imp))
    eer, thr = equal_error_rate(curve)
    fnmr3, _ = fnmr_at_fmr(curve, 1e-3)
    g, i = np.array(gen), np.array(imp)
    return (f"| {name} | {fte:.1%} | {len(gen)}/{len(imp)} | {eer:.2%} ({thr:.3f}) | {fnmr3:.2%} | "
            f"{np.mean(i <= 0.6):.2%} / {np.mean(g > 0.6):.2%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=FACES / "pairs.csv")
    args = parser.parse_args()
    with args.pairs.open(newline="") as fh:
        pairs = list(csv.DictReader(fh))
    print("| pipeline | failure to enrol | genuine/impostor pairs scored | EER (distance) | FNMR @ FMR 1e-3 | FMR / FNMR at 0.6 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(evaluate("OpenLFR (BlazeFace + ONNX)", openlfr_embedder(), pairs), flush=True)
    print(evaluate("dlib (HOG + dlib C++)", dlib_embedder(), pairs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
