"""int8 against fp32: the kernels onnxruntime runs, speed per face and per frame, and the accuracy gates.

Speed: one onnxruntime thread, spinning off (as ``openlfr run`` on shared cores), real inputs
(what the fp32 analyzer feeds each model for six crowd scenes), fp32 and int8 interleaved
round by round; the best round and the median, in wall and CPU milliseconds. Per frame: the
whole analyzer (detect, landmarks, chips, embed) on crowd scenes scaled to 1280x720.
Accuracy: the gates of tests/unit/models/test_int8.py (openlfr.evaluation.quantization).

Usage: .venv/bin/python benchmarks/int8_models.py [--rounds 7] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.evaluation import quantization as gates
from openlfr.inference.local import LocalBackend
from openlfr.models import quantize
from openlfr.models.build import build_all
from openlfr.models.manifest import DLIB_RESNET, DLIB_RESNET_INT8
from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER, ModelSpec, int8_of
from openlfr.vision.detector import FaceDetector
from openlfr.vision.embedder import FaceEmbedder
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image

FACES = quantize.FACES_DIR


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines() if line.startswith("Model name")), "?")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    vnni = "AVX-512 VNNI" if "avx512_vnni" in flags else ("AVX-VNNI" if "avx_vnni" in flags else "no VNNI")
    return (f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores, {vnni}; onnxruntime {ort.__version__}, "
            f"Python {platform.python_version()}; {datetime.date.today().isoformat()}")


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernels(path: Path) -> dict[str, int]:
    """Operator counts of the graph onnxruntime actually runs (after its fusions)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return dict(collections.Counter(n.op_type for n in graph.node).most_common())


def timed(fn, rounds: int) -> tuple[list[float], list[float]]:  # noqa: ANN001
    wall, cpu = [], []
    for _ in range(rounds):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def model_speed(model_dir: Path, rows: dict[str, np.ndarray], rounds: int) -> None:
    print("\n| model | batch | fp32 ms/row best (median) | int8 ms/row best (median) | speed-up (best) | CPU ms/row fp32 / int8 (median) |")
    print("|---|---|---|---|---|---|")
    for spec in (BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER):
        fp32, int8 = session(model_dir / spec.onnx_file), session(model_dir / int8_of(spec).onnx_file)
        name = spec.inputs[0].name
        for batch in (1, 8):
            x = np.ascontiguousarray(rows[spec.name][:batch], np.float32)
            results: dict[str, tuple[list[float], list[float]]] = {"fp32": ([], []), "int8": ([], [])}
            for s in (fp32, int8):
                s.run(None, {name: x})  # warm-up
            for _ in range(rounds):  # interleaved, so both see the same load on shared cores
                for label, s in (("fp32", fp32), ("int8", int8)):
                    w, c = timed(lambda s=s: s.run(None, {name: x}), 3)
                    results[label][0].extend(w)
                    results[label][1].extend(c)
            f, q = (np.asarray(results[k][0]) * 1000 / batch for k in ("fp32", "int8"))
            fc, qc = (np.asarray(results[k][1]) * 1000 / batch for k in ("fp32", "int8"))
            print(f"| {spec.name} | {batch} | {f.min():.2f} ({np.median(f):.2f}) | {q.min():.2f} ({np.median(q):.2f}) | "
                  f"{f.min() / q.min():.2f}x | {np.median(fc):.2f} / {np.median(qc):.2f} |")


def frame_speed(model_dir: Path, rounds: int) -> None:
    frames = [cv2.resize(load_image(p), (1280, 720), interpolation=cv2.INTER_AREA)
              for p in quantize.calibration_images()[:31:5]]
    print("\n| detector | embedder | faces/frame | ms/frame best (median) | CPU ms/frame (median) |")
    print("|---|---|---|---|---|")
    backend = LocalBackend(model_dir, intra_op_threads=1)
    combos = [("fp32", "dlib_resnet_v1"), ("fp32", "dlib_resnet_v1_int8"), ("int8", "dlib_resnet_v1"),
              ("int8", "dlib_resnet_v1_int8")]
    analyzers = {c: build_analyzer(ModelSettings(model_dir=model_dir, detector_precision=c[0], embedder=c[1]),
                                   backend=backend) for c in combos}
    faces = {c: sum(len(a.analyze(f)) for f in frames) / len(frames) for c, a in analyzers.items()}  # and warm-up
    results: dict[tuple[str, str], tuple[list[float], list[float]]] = {c: ([], []) for c in combos}
    for _ in range(rounds):
        for c, a in analyzers.items():
            w, cpu = timed(lambda a=a: [a.analyze(f) for f in frames], 1)
            results[c][0].extend(w)
            results[c][1].extend(cpu)
    for c in combos:
        w = np.asarray(results[c][0]) * 1000 / len(frames)
        cpu = np.asarray(results[c][1]) * 1000 / len(frames)
        print(f"| {c[0]} | {c[1]} | {faces[c]:.1f} | {w.min():.1f} ({np.median(w):.1f}) | {np.median(cpu):.1f} |")


def accuracy(model_dir: Path) -> None:
    backend = LocalBackend(model_dir)
    gt = gates.ground_truth_boxes(FACES)
    print("\n| detector | recall fp32 | recall int8 | difference (points) |")
    print("|---|---|---|---|")
    for spec in (BLAZEFACE_FULL, BLAZEFACE_SHORT):
        f = gates.detector_recall(FaceDetector(backend=backend, spec=spec), FACES, gt)
        q = gates.detector_recall(FaceDetector(backend=backend, spec=int8_of(spec)), FACES, gt)
        print(f"| {spec.name} | {f.found}/{f.total} = {f.recall:.2%} | {q.found}/{q.total} = {q.recall:.2%} | "
              f"{(q.recall - f.recall) * 100:+.2f} |")
    pairs = gates.read_pairs(FACES)
    analyzer = build_analyzer(ModelSettings(model_dir=model_dir), backend=backend, keep_chips=True)
    chips = gates.largest_face_chips(analyzer, FACES, sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs}))
    agreement = gates.embedder_agreement(FaceEmbedder(backend=backend, manifest=DLIB_RESNET),
                                         FaceEmbedder(backend=backend, manifest=DLIB_RESNET_INT8), chips, pairs)
    c = agreement.cosines
    print(f"\nembedder on {len(chips)} faces, {agreement.pairs_used} pairs: EER fp32 {agreement.eer_reference:.2%}, "
          f"int8 {agreement.eer_candidate:.2%} ({(agreement.eer_candidate - agreement.eer_reference) * 100:+.2f} points); "
          f"cosine int8 to fp32 min {c.min():.4f}, 1st percentile {np.percentile(c, 1):.4f}, median {np.median(c):.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()
    model_dir = paths.model_dir()
    build_all(model_dir)
    print(f"machine: {machine()}")
    for spec in (BLAZEFACE_FULL, EMBEDDER):
        for s in (spec, int8_of(spec)):
            print(f"kernels {s.name}: {kernels(model_dir / s.onnx_file)}")
    rows = quantize.record_calibration_inputs(model_dir, quantize.calibration_images()[:6])
    model_speed(model_dir, rows, args.rounds)
    frame_speed(model_dir, args.rounds)
    if not args.no_accuracy:
        accuracy(model_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
