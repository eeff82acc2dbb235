"""Verification on the shared set's pairs: the dlib ResNet beside embedders converted from npm.

Every image goes through the project's detection (BlazeFace, tiled, with the close-up crop)
and dlib's 5-point landmarks, as in ``benchmarks/verify_pairs.py``; the largest face is used
and an image without a face is a failure to enrol (its pairs are left out). Each embedder then
gets its own crop:

* ``dlib_resnet_v1``: dlib's 150x150 face chip (``openlfr.vision.align``), the pipeline's path;
* ``faceres_v1`` (HSE FaceRes, 1024-d, ``openlfr models build``; BGR minus ImageNet means as
  its authors feed it): 224x224 chips of the ArcFace template (``openlfr.vision.align_arcface``)
  with a margin, upright, fitted on each point set; and variants of margin and of input
  convention (RGB 0..255 as the ``human`` library feeds it);
* ``mobilefacenet`` (192-d) as shipped and with its PReLUs restored, and ``mobileface``
  (becauseofAI MobileFace, 256-d, L2-normalised here): 112x112 ArcFace chips, converted here.

Distances are Euclidean, scores ``1 - d / 2``. The Glint360k subset is 112x112 ArcFace-aligned
already, so every figure is given with and without pairs touching it.

Usage: .venv/bin/python benchmarks/compare_embedders.py [--pairs PATH] [--no-cache] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench_models import timeit
from verify_pairs import FACES

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.evaluation.verification import equal_error_rate, fnmr_at_fmr, roc
from openlfr.inference.local import LocalBackend
from openlfr.models import sources
from openlfr.models.build import build_all, model_version
from openlfr.models.human_models import (
    FACERES_CHIP_MARGIN,
    FACERES_DESCRIPTOR,
    MOBILEFACE_OUTPUT,
    convert_mobilefacenet,
)
from openlfr.models.specs import EMBEDDER, FACERES
from openlfr.models.tfjs_graph import TfjsGraph, read_tfjs_graph
from openlfr.models.tfjs_onnx import convert_tfjs_graph
from openlfr.vision.align import face_chips
from openlfr.vision.align_arcface import POINT_SETS, PointSet, arcface_chips, estimate_points, template
from openlfr.vision.analyzer import CHIP_PADDING, predictor_boxes
from openlfr.vision.embedder import FaceEmbedder
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image

GLINT = "glint360k_celebs/"
CACHE = paths.build_dir() / "compare-embedders"


@dataclass(frozen=True, slots=True)
class Located:
    """The largest face of an image: BlazeFace keypoints and dlib landmarks (rounded and not)."""

    keypoints: np.ndarray  # (6, 2)
    landmarks: np.ndarray  # (5, 2), whole pixels, as the pipeline uses them
    landmarks_subpixel: np.ndarray  # (5, 2)


def locate_all(image_paths: list[str], *, use_cache: bool) -> dict[str, Located | None]:
    """Detection and landmarks of every image, cached under build/ by the models' versions."""
    model_dir = paths.model_dir()
    key = "_".join(model_version(model_dir, m).replace("@", "-") for m in ("blazeface_full",)) + "_sp5"
    cache = CACHE / f"located_{key}.npz"
    if use_cache and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        found = dict(zip(data["paths"].tolist(), data["found"].tolist()))
        if set(image_paths) <= set(found):
            idx = {p: i for i, p in enumerate(data["paths"].tolist())}
            return {
                p: (
                    Located(data["keypoints"][idx[p]], data["landmarks"][idx[p]], data["subpixel"][idx[p]])
                    if found[p]
                    else None
                )
                for p in image_paths
            }
    analyzer = build_analyzer(ModelSettings(), backend=LocalBackend(model_dir))
    out: dict[str, Located | None] = {}
    started = time.perf_counter()
    for i, rel in enumerate(image_paths):
        img = load_image(FACES / rel)
        det = analyzer.detector.detect_many([img])[0]
        keep = det.widths >= analyzer.min_face_px
        det = det.select(keep)
        if not len(det):
            out[rel] = None
            continue
        j = int(np.argmax(det.widths))
        box = predictor_boxes(det.boxes[j : j + 1])
        out[rel] = Located(
            keypoints=det.keypoints[j].astype(np.float64),
            landmarks=analyzer.predictor.predict_many(img, box)[0],
            landmarks_subpixel=analyzer.predictor.predict_many(img, box, subpixel=True)[0],
        )
        if (i + 1) % 200 == 0:
            print(
                f"  located {i + 1}/{len(image_paths)} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
    CACHE.mkdir(parents=True, exist_ok=True)
    zeros = np.zeros((6, 2)), np.zeros((5, 2))
    np.savez(
        cache,
        paths=np.array(image_paths),
        found=np.array([out[p] is not None for p in image_paths]),
        keypoints=np.stack([out[p].keypoints if out[p] else zeros[0] for p in image_paths]),
        landmarks=np.stack([out[p].landmarks if out[p] else zeros[1] for p in image_paths]),
        subpixel=np.stack([out[p].landmarks_subpixel if out[p] else zeros[1] for p in image_paths]),
    )
    return out


# --- embedders -------------------------------------------------------------------------------

Crop = Callable[[np.ndarray, Located], np.ndarray]
Embed = Callable[[np.ndarray], np.ndarray]


def dlib_crop(img: np.ndarray, loc: Located) -> np.ndarray:
    return face_chips(img, loc.landmarks[None].astype(np.float32), size=150, padding=CHIP_PADDING)[0]


def arcface_crop(points: PointSet, *, size: int = 112, margin: float = 1.0, antialias: bool = True) -> Crop:
    target = template(points, size=size, margin=margin)

    def crop(img: np.ndarray, loc: Located) -> np.ndarray:
        src = estimate_points(points, landmarks5=loc.landmarks_subpixel[None], keypoints6=loc.keypoints[None])
        return arcface_chips(img, src, target, size=size, antialias=antialias)[0]

    return crop


def session_embed(model_bytes: bytes, *, normalise: bool, channels: str = "rgb") -> Embed:
    options = ort.SessionOptions()
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0].name

    def embed(chips: np.ndarray) -> np.ndarray:
        x = chips[..., ::-1] if channels == "bgr" else chips
        y = session.run(None, {inp: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return y / np.linalg.norm(y, axis=1, keepdims=True) if normalise else y

    return embed


def project_embed(spec_name: str) -> Embed:
    spec = {EMBEDDER.name: EMBEDDER, FACERES.name: FACERES}[spec_name]
    embedder = FaceEmbedder(backend=LocalBackend(paths.model_dir()), spec=spec)
    return embedder.embed


def tfjs_embed(
    graph: TfjsGraph,
    output: str,
    *,
    scale: float | None,
    shift: float | None,
    normalise: bool,
    channels: str = "rgb",
) -> Embed:
    model = convert_tfjs_graph(graph, outputs={"out": output}, input_scale=scale, input_shift=shift)
    return session_embed(model.SerializeToString(), normalise=normalise, channels=channels)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    model: str  # which network, for timing
    crop: Crop
    embed: Embed


def variants() -> list[Variant]:
    """Every embedder and crop compared (the benchmark-only models are converted here)."""
    mfn = read_tfjs_graph(sources.human_models_path("models/mobilefacenet.json"))
    faceres = read_tfjs_graph(sources.human_models_path("models/faceres.json"))
    mobileface = read_tfjs_graph(sources.human_models_path("models/mobileface.json"))
    enm: PointSet = "eyes_nose_mouth"

    out = [
        Variant("dlib_resnet_v1 (dlib chip 150)", "dlib_resnet_v1", dlib_crop, project_embed(EMBEDDER.name))
    ]
    built = project_embed(FACERES.name)
    for ps in POINT_SETS:
        out.append(
            Variant(
                f"faceres_v1, {ps}, margin {FACERES_CHIP_MARGIN}",
                "faceres",
                arcface_crop(ps, size=224, margin=FACERES_CHIP_MARGIN),
                built,
            )
        )
    for margin in (1.25, 1.5):
        out.append(
            Variant(
                f"faceres_v1, {enm}, margin {margin}",
                "faceres",
                arcface_crop(enm, size=224, margin=margin),
                built,
            )
        )
    # As the human library feeds it: RGB 0..255, no mean subtraction (its crop is close to margin 1.5).
    human = tfjs_embed(faceres, FACERES_DESCRIPTOR, scale=None, shift=None, normalise=True)
    for margin in (1.0, 1.5):
        out.append(
            Variant(
                f"faceres as human feeds it (RGB 0..255), {enm}, margin {margin}",
                "faceres",
                arcface_crop(enm, size=224, margin=margin),
                human,
            )
        )
    out.append(
        Variant(
            f"faceres_v1, {enm}, margin {FACERES_CHIP_MARGIN}, no antialias",
            "faceres",
            arcface_crop(enm, size=224, margin=FACERES_CHIP_MARGIN, antialias=False),
            built,
        )
    )
    mf = tfjs_embed(mobileface, MOBILEFACE_OUTPUT, scale=None, shift=None, normalise=True)
    for ps in POINT_SETS:
        out.append(Variant(f"mobileface, {ps}", "mobileface", arcface_crop(ps), mf))
    for restore in (False, True):
        model = convert_mobilefacenet(mfn, restore_prelu=restore)
        embed = session_embed(model.SerializeToString(), normalise=False)
        label = "PReLU restored" if restore else "as shipped"
        for ps in POINT_SETS:
            out.append(
                Variant(f"mobilefacenet {label}, {ps}", f"mobilefacenet {label}", arcface_crop(ps), embed)
            )
    return out


# --- scoring ---------------------------------------------------------------------------------


def figures(pairs: list[dict[str, str]], emb: dict[str, np.ndarray | None]) -> dict[str, float]:
    gen, imp = [], []
    for p in pairs:
        a, b = emb[p["path_a"]], emb[p["path_b"]]
        if a is not None and b is not None:
            (gen if p["same"] == "1" else imp).append(float(np.linalg.norm(a - b)))
    out: dict[str, float] = {"genuine": len(gen), "impostor": len(imp)}
    if gen and imp:
        curve = roc(np.array(gen), np.array(imp))
        out["eer"], out["eer_distance"] = equal_error_rate(curve)
        out["fnmr_at_fmr_1e-3"], out["fmr_1e-3_distance"] = fnmr_at_fmr(curve, 1e-3)
    return out


def pair_sets(pairs: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    def glint(p: dict[str, str]) -> bool:
        return p["path_a"].startswith(GLINT) or p["path_b"].startswith(GLINT)

    sets = {
        "all": pairs,
        "without Glint": [p for p in pairs if not glint(p)],
        "Glint only": [p for p in pairs if p["subset"] == "glint360k_celebs"],
    }
    for subset in sorted({p["subset"] for p in pairs} - {"glint360k_celebs"}):
        sets[subset] = [p for p in pairs if p["subset"] == subset and not glint(p)]
    return sets


def timing(crop_chips: dict[str, np.ndarray], embed: Embed) -> dict[str, float]:
    """Milliseconds per face of the embedding alone, at batch 1 and batch 16."""
    chips = np.stack(list(crop_chips.values())[:16])
    one = chips[:1]
    return {
        "ms_per_face_b1": 1000 * timeit(lambda: embed(one), min_s=3.0),
        "ms_per_face_b16": 1000 * timeit(lambda: embed(chips), min_s=3.0) / len(chips),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=FACES / "pairs.csv")
    parser.add_argument("--no-cache", action="store_true", help="detect and place landmarks again")
    parser.add_argument("--json", type=Path, default=CACHE / "results.json")
    args = parser.parse_args()
    build_all(paths.model_dir())
    with args.pairs.open(newline="") as fh:
        pairs = list(csv.DictReader(fh))
    image_paths = sorted({p["path_a"] for p in pairs} | {p["path_b"] for p in pairs})
    located = locate_all(image_paths, use_cache=not args.no_cache)
    images = {p: load_image(FACES / p) for p in image_paths if located[p] is not None}
    fte = sum(v is None for v in located.values()) / len(located)
    sets = pair_sets(pairs)

    results: dict[str, dict[str, object]] = {}
    timed: set[str] = set()
    for v in variants():
        started = time.perf_counter()
        chips = {p: v.crop(img, located[p]) for p, img in images.items()}  # type: ignore[arg-type]
        keys = list(chips)
        vectors = np.concatenate(
            [v.embed(np.stack([chips[k] for k in keys[i : i + 32]])) for i in range(0, len(keys), 32)]
        )
        emb: dict[str, np.ndarray | None] = {p: None for p in image_paths}
        emb.update(zip(keys, vectors))
        entry: dict[str, object] = {
            "failure_to_enrol": fte,
            "sets": {k: figures(s, emb) for k, s in sets.items()},
        }
        if v.model not in timed:
            entry["timing"] = timing(chips, v.embed)
            timed.add(v.model)
        results[v.name] = entry
        s = entry["sets"]
        print(
            f"{v.name}: EER all {s['all']['eer']:.2%}, without Glint {s['without Glint']['eer']:.2%}, "
            f"Glint {s['Glint only']['eer']:.2%} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )

    print_tables(results, sets)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "models": {
            m: model_version(paths.model_dir(), m) for m in ("dlib_resnet_v1", "faceres_v1", "blazeface_full")
        },
        "pairs": str(args.pairs),
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\n(results in {args.json})", file=sys.stderr)
    return 0


def print_tables(results: dict[str, dict[str, object]], sets: dict[str, list[dict[str, str]]]) -> None:
    def cell(f: dict[str, float], key: str) -> str:
        return f"{f[key]:.2%}" if key in f else "n/a"

    print(
        "| embedder, crop | EER all | FNMR@FMR1e-3 all | EER without Glint | FNMR@FMR1e-3 without Glint "
        "| EER Glint only | FNMR@FMR1e-3 Glint only | ms/face b1 | ms/face b16 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        s = r["sets"]  # type: ignore[index]
        t = r.get("timing", {})
        tcells = [f"{t['ms_per_face_b1']:.2f}", f"{t['ms_per_face_b16']:.2f}"] if t else ["", ""]
        print(
            f"| {name} | "
            + " | ".join(
                cell(s[k], m)
                for k in ("all", "without Glint", "Glint only")
                for m in ("eer", "fnmr_at_fmr_1e-3")
            )
            + " | "
            + " | ".join(tcells)
            + " |"
        )
    first = next(iter(results.values()))["sets"]  # type: ignore[index]
    print(
        "\nPairs scored (genuine/impostor): "
        + ", ".join(f"{k} {first[k]['genuine']}/{first[k]['impostor']}" for k in sets)
    )
    print(
        f"Failure to enrol (no face found): {next(iter(results.values()))['failure_to_enrol']:.1%} of images"
    )
    subsets = [k for k in sets if k not in ("all", "without Glint", "Glint only")]
    print("\nEER per subset (pairs touching Glint left out; n/a: the subset has one kind of pair only)\n")
    print("| embedder, crop | " + " | ".join(subsets) + " |")
    print("| --- |" + " ---: |" * len(subsets))
    for name, r in results.items():
        s = r["sets"]  # type: ignore[index]
        print(f"| {name} | " + " | ".join(cell(s[k], "eer") for k in subsets) + " |")


if __name__ == "__main__":
    sys.exit(main())
