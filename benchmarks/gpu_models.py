#!/usr/bin/env python3
"""GPU speed of the face models: the project's ONNX graphs run through PyTorch (onnx2torch).

onnxruntime-gpu cannot be used on the lent GPU machine (its wheels need CUDA 12 libraries), so the
ONNX graphs that ``openlfr models build`` writes are converted to PyTorch with ``onnx2torch`` and
run there with CUDA. The script:

  * converts each model (dlib ResNet embedder; BlazeFace full- and short-range detectors), first
    rewriting what onnx2torch cannot take (``auto_pad=SAME_*`` on MaxPool) into explicit pads, then
    freezing the constant-input Pad/Resize/Reshape modules so that no forward call copies a tensor
    back to the host (each such copy would stall the GPU stream and block CUDA graphs);
  * checks the converted model against onnxruntime on real inputs (max abs diff), on the CPU and
    on the GPU, and checks fp16 against fp32 (embeddings: max abs diff, min cosine, max L2 gap;
    detectors: max abs diff of raw outputs and of sigmoid scores, anchors over 0.5 that agree);
  * times ms per batch and items/s on the GPU (inputs already on the device) in fp32 (TF32 off),
    TF32, fp16 autocast, fp16 weights (``.half()``) and fp16 weights replayed as a CUDA graph,
    for batch 1, 8, 32, 128, 512 (detectors 1, 8, 32, 128); plus the pinned host-to-device copy
    of a float32 batch, and onnxruntime on the machine's CPU at batch 1 and 32 for comparison.

Usage:
  prepare here (project venv, needs the built models and shared/ data; writes .gpu-models/):
      .venv/bin/python benchmarks/gpu_models.py --prepare
  on the GPU machine (needs torch, onnx, onnxruntime, numpy, onnx2torch):
      python3 benchmarks/gpu_models.py --models-dir .gpu-models [--quick]
  on a CPU-only machine, conversion and accuracy checks only:
      python benchmarks/gpu_models.py --cpu-only

Writes $OUT/gpu_models.json and $OUT/gpu_models.md (current directory when OUT is unset, or
--out-dir), and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Model:
    name: str
    onnx_file: str
    input_name: str
    hwc: tuple[int, int, int]
    inputs_key: str  # array in inputs.npz
    unit: str
    batches: tuple[int, ...]
    kind: str  # "embedder" | "detector"


MODELS = (
    Model("dlib_resnet_v1", "dlib_resnet_v1.onnx", "chips", (150, 150, 3), "chips", "faces/s",
          (1, 8, 32, 128, 512), "embedder"),
    Model("blazeface_full", "blazeface_full.onnx", "images", (192, 192, 3), "frames192", "crops/s",
          (1, 8, 32, 128), "detector"),
    Model("blazeface_short", "blazeface_short.onnx", "images", (128, 128, 3), "frames128", "crops/s",
          (1, 8, 32, 128), "detector"),
)
CPU_BATCHES = (1, 32)


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# --prepare: copy the models and real inputs into a folder that can travel (no torch needed)
# --------------------------------------------------------------------------------------------

def prepare(models_dir: Path, source_dir: Path, shared: Path) -> None:
    import cv2

    models_dir.mkdir(parents=True, exist_ok=True)
    for m in MODELS:
        shutil.copy2(source_dir / m.onnx_file, models_dir / m.onnx_file)
    faces = shared / "data" / "faces"
    chips = []
    for f in sorted((faces / "dlib/examples/johns").rglob("*.jpg")):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is not None and img.shape == (150, 150, 3):
            chips.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if len(chips) == 32:
            break
    if not chips:
        raise SystemExit(f"no 150x150 chips under {faces / 'dlib/examples/johns'}")
    scenes = []
    for f in sorted((faces / "crowd_scenes").glob("*.jpg"))[:8]:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is not None:
            scenes.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not scenes:
        raise SystemExit(f"no images under {faces / 'crowd_scenes'}")

    def letterbox(img: np.ndarray, size: int) -> np.ndarray:  # as openlfr.vision.detector does
        h, w = img.shape[:2]
        s = size / max(h, w)
        rw, rh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out = np.zeros((size, size, 3), np.uint8)
        y, x = (size - rh) // 2, (size - rw) // 2
        out[y:y + rh, x:x + rw] = cv2.resize(img, (rw, rh), interpolation=interp)
        return out

    np.savez_compressed(
        models_dir / "inputs.npz",
        chips=np.stack(chips),
        frames192=np.stack([letterbox(s, 192) for s in scenes]),
        frames128=np.stack([letterbox(s, 128) for s in scenes]),
    )
    total = sum(p.stat().st_size for p in models_dir.iterdir())
    log(f"wrote {models_dir}: {len(chips)} chips, {len(scenes)} scenes, {total / 2**20:.1f} MiB in all")


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------

def import_onnx2torch() -> tuple[Any, str]:
    """onnx2torch imports torchvision only for its NMS/RoiAlign converters, which these graphs do
    not use; where torchvision is missing or broken (version skew with torch), stub it."""
    try:
        import torchvision

        note = getattr(torchvision, "_stub_note", f"torchvision {getattr(torchvision, '__version__', '?')}")
    except Exception as exc:  # ImportError, or RuntimeError from a torch/torchvision mismatch
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def _missing(*_a: object, **_k: object) -> None:
            raise RuntimeError("torchvision is stubbed out by benchmarks/gpu_models.py")

        ops.roi_align = ops.nms = ops.box_convert = _missing  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        note = f"torchvision stubbed ({type(exc).__name__})"
        tv._stub_note = note  # type: ignore[attr-defined]
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.ops"] = ops
    import onnx2torch

    return onnx2torch, note


def explicit_auto_pad(model: Any) -> list[str]:
    """Rewrite ``auto_pad=SAME_UPPER/SAME_LOWER`` (onnx2torch: NotImplementedError) as pads."""
    import onnx
    from onnx import helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    changed = []
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        auto = attrs.get("auto_pad")
        if auto is None or auto.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        spatial = shapes.get(node.input[0], [None])[2:]
        if not spatial or any(s is None for s in spatial):
            raise RuntimeError(f"{node.op_type} {node.name!r}: auto_pad with unknown input shape")
        if "kernel_shape" in attrs:
            kernel = list(attrs["kernel_shape"].ints)
        else:  # Conv without kernel_shape: from the weight initializer
            w = next(t for t in model.graph.initializer if t.name == node.input[1])
            kernel = list(w.dims[2:])
        n = len(kernel)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * n
        dil = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * n
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dil):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            lo = total // 2 if auto.s == b"SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        node.attribute.remove(auto)
        if "pads" in attrs:
            node.attribute.remove(attrs["pads"])
        node.attribute.append(helper.make_attribute("pads", begin + end))
        changed.append(f"{node.op_type}:{auto.s.decode()}->pads{begin + end}")
    onnx.checker.check_model(model)
    return changed


def freeze_constant_inputs(gm: Any) -> dict[str, int]:
    """Replace onnx2torch's Pad/Resize/Reshape modules whose shape-like inputs are graph constants
    by static modules: the originals call ``.tolist()``/``torch.any`` on those tensors in every
    forward, a device-to-host copy per call once the model is on the GPU."""
    import torch
    import torch.nn.functional as F
    from onnx2torch.node_converters.pad import (OnnxPadDynamic, _onnx_padding_to_torch,
                                                _torch_padding_to_mode_format)
    from onnx2torch.node_converters.reshape import OnnxReshape
    from onnx2torch.node_converters.resize import OnnxResize, _onnx_mode_to_torch_mode
    from torch import nn

    class StaticPad(nn.Module):
        def __init__(self, pads: list[int], mode: str, value: float) -> None:
            super().__init__()
            self.pads, self.mode, self.value = pads, mode, value

        def forward(self, x: torch.Tensor, *_unused: object) -> torch.Tensor:
            if self.mode == "constant":
                return F.pad(x, self.pads, mode="constant", value=self.value)
            return F.pad(x, self.pads, mode=self.mode)

    class StaticReshape(nn.Module):
        def __init__(self, shape: list[int]) -> None:
            super().__init__()
            self.shape = shape

        def forward(self, x: torch.Tensor, *_unused: object) -> torch.Tensor:
            return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)])

    class StaticResize(nn.Module):
        def __init__(self, onnx_mode: str, align_corners: bool | None, scales: list[float] | None,
                     sizes: list[int] | None) -> None:
            super().__init__()
            self.onnx_mode, self.align_corners, self.scales, self.sizes = onnx_mode, align_corners, scales, sizes

        def forward(self, x: torch.Tensor, *_unused: object) -> torch.Tensor:
            mode = _onnx_mode_to_torch_mode(self.onnx_mode, x.dim() - 2)
            return F.interpolate(x, size=self.sizes, scale_factor=self.scales, mode=mode,
                                 align_corners=self.align_corners)

    def fetch(target: str) -> torch.Tensor:
        obj: Any = gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def const(arg: object) -> torch.Tensor | None:
        if getattr(arg, "op", None) == "get_attr":
            return fetch(arg.target).detach().cpu()  # type: ignore[attr-defined]
        return None

    counts = {"frozen": 0, "left_dynamic": 0}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, (OnnxPadDynamic, OnnxReshape, OnnxResize)):
            continue
        rest = list(node.args[1:])
        consts = [const(a) for a in rest]
        if node.kwargs or any(c is None and a is not None for c, a in zip(consts, rest)):
            counts["left_dynamic"] += 1
            continue
        new: nn.Module
        if isinstance(mod, OnnxPadDynamic):
            pads = [int(v) for v in consts[0].tolist()]
            torch_pads = _torch_padding_to_mode_format(_onnx_padding_to_torch(pads), mod.mode)
            value = float(consts[1].item()) if len(consts) > 1 and consts[1] is not None and consts[1].numel() else 0.0
            new = StaticPad(torch_pads, mod.mode, value)
        elif isinstance(mod, OnnxReshape):
            new = StaticReshape([int(v) for v in consts[0].tolist()])
        else:
            roi = consts[0] if consts else None
            if roi is not None and roi.numel() and not mod.ignore_roi:
                counts["left_dynamic"] += 1
                continue
            scales = consts[1] if len(consts) > 1 else None
            sizes = consts[2] if len(consts) > 2 else None
            sc = [float(v) for v in scales.tolist()] if scales is not None and scales.numel() else None
            sz = [int(v) for v in sizes.tolist()] if sizes is not None and sizes.numel() else None
            if sc is not None and sc[:2] != [1.0, 1.0]:
                raise RuntimeError(f"Resize {node.target}: scales batch/channel {sc[:2]}")
            new = StaticResize(mod.onnx_mode, mod.align_corners, sc[2:] if sc else None, sz[2:] if sz else None)
        # fx's generated code looks modules up by attribute name at call time.
        parent_name, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent_name) if parent_name else gm, leaf, new)
        counts["frozen"] += 1
    gm.recompile()
    return counts


def convert(model: Model, models_dir: Path) -> tuple[Any, dict]:
    import onnx
    import torch

    onnx2torch, tv_note = import_onnx2torch()
    path = models_dir / model.onnx_file
    proto = onnx.load(str(path))
    inp = proto.graph.input[0]
    dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])
    if inp.name != model.input_name or dims != model.hwc or inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise RuntimeError(f"{path}: input {inp.name} {dims} elem {inp.type.tensor_type.elem_type}, "
                           f"expected {model.input_name} {model.hwc} float32")
    rewrites = explicit_auto_pad(proto)
    try:
        gm = onnx2torch.convert(proto)
    except Exception as exc:  # report the op onnx2torch refused, and go on with the other models
        raise RuntimeError(f"onnx2torch.convert failed: {type(exc).__name__}: {exc}") from exc
    frozen = freeze_constant_inputs(gm)
    gm.eval().requires_grad_(False)
    info = {
        "onnx_file": model.onnx_file,
        "onnx_bytes": path.stat().st_size,
        "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "outputs": [o.name for o in proto.graph.output],
        "auto_pad_rewrites": rewrites,
        "constant_modules": frozen,
        "params": int(sum(p.numel() for p in gm.parameters()) + sum(b.numel() for b in gm.buffers())),
        "torchvision": tv_note,
        "torch_dtype": str(torch.get_default_dtype()),
    }
    return gm, info


# --------------------------------------------------------------------------------------------
# Inputs, references, comparisons
# --------------------------------------------------------------------------------------------

def load_inputs(models_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    path = models_dir / "inputs.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k].astype(np.float32) for k in z.files}, f"real ({path.name})"
    rng = np.random.default_rng(0)
    log(f"WARNING: {path} missing; using random images")
    return {m.inputs_key: rng.integers(0, 256, (8, *m.hwc)).astype(np.float32) for m in MODELS}, "random"


def tile_batch(x: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


def as_list(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def ort_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def compare(model: Model, ref: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> dict:
    """max abs diff per output, plus what matters for each kind of model."""
    res: dict[str, Any] = {}
    for name, r, g in zip(names, ref, got):
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        res[f"max_abs_{name}"] = float(np.abs(r64 - g64).max())
        res[f"max_ref_{name}"] = float(np.abs(r64).max())
    if model.kind == "embedder":
        r, g = ref[0].astype(np.float64), got[0].astype(np.float64)
        cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))
        res["min_cosine"] = float(cos.min())
        res["max_l2_gap"] = float(np.linalg.norm(r - g, axis=1).max())  # vs dlib's 0.6 threshold
    else:
        idx = names.index("classificators")
        sr = 1 / (1 + np.exp(-np.clip(ref[idx].astype(np.float64), -100, 100)))
        sg = 1 / (1 + np.exp(-np.clip(got[idx].astype(np.float64), -100, 100)))
        res["max_abs_score"] = float(np.abs(sr - sg).max())
        res["anchors_over_0.5_ref"] = int((sr > 0.5).sum())
        res["anchors_over_0.5_disagree"] = int(((sr > 0.5) != (sg > 0.5)).sum())
    return res


def summarize_check(c: dict) -> str:
    parts = [f"{k.removeprefix('max_abs_')} {v:.2e}" for k, v in c.items() if k.startswith("max_abs_")]
    if "min_cosine" in c:
        parts.append(f"min cos {c['min_cosine']:.7f}")
        parts.append(f"max L2 gap {c['max_l2_gap']:.2e}")
    if "anchors_over_0.5_ref" in c:
        parts.append(f">0.5 anchors {c['anchors_over_0.5_ref']}, disagree {c['anchors_over_0.5_disagree']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def time_calls(fn: Callable[[], object], sync: Callable[[], None], *, repeats: int, repeat_s: float,
               warmup: int = 3) -> dict:
    """Median seconds per call: warm-up, then ``repeats`` timed runs of k calls each, the GPU
    synchronised before and after each run; k sized so that one run lasts about ``repeat_s``."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    est = max(time.perf_counter() - t0, 1e-6)
    k = max(1, min(500, round(repeat_s / est)))
    per_call = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        sync()
        per_call.append((time.perf_counter() - t0) / k)
    return {"sec": statistics.median(per_call), "min_sec": min(per_call), "calls_per_repeat": k,
            "repeats": repeats}


def set_tf32(on: bool) -> None:
    import torch

    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None:  # torch >= 2.9 API; do not mix with the legacy flags
        torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cuda.matmul.allow_tf32 = on


# --------------------------------------------------------------------------------------------
# Per model
# --------------------------------------------------------------------------------------------

class Budget:
    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def bench_model(model: Model, models_dir: Path, inputs: dict[str, np.ndarray], args: argparse.Namespace,
                budget: Budget, rows: list[dict], checks: list[dict]) -> dict:
    import torch

    log(f"\n== {model.name}")
    t0 = time.perf_counter()
    gm, info = convert(model, models_dir)
    info["convert_s"] = round(time.perf_counter() - t0, 2)
    log(f"   converted in {info['convert_s']} s; ops {info['ops']}; auto_pad rewrites "
        f"{len(info['auto_pad_rewrites'])}; constant modules {info['constant_modules']}; {info['torchvision']}")
    x_real = inputs[model.inputs_key]
    sess = ort_session(models_dir / model.onnx_file)
    names = [o.name for o in sess.get_outputs()]
    ref = sess.run(None, {model.input_name: x_real})

    def check(where: str, got: list[np.ndarray], against: str, reference: list[np.ndarray]) -> dict:
        c = {"model": model.name, "check": where, "against": against, "n": int(len(x_real)),
             **compare(model, reference, got, names)}
        checks.append(c)
        log(f"   check {where} vs {against}: {summarize_check(c)}")
        return c

    with torch.inference_mode():
        cpu_out = [o.numpy() for o in as_list(gm(torch.from_numpy(x_real)))]
    check("torch CPU fp32", cpu_out, "onnxruntime CPU", ref)

    # onnxruntime on this machine's CPU, for comparison
    for b in CPU_BATCHES:
        if budget.left() < 20:
            log("   time budget: skipping CPU timings")
            break
        xb = tile_batch(x_real, b)
        t = time_calls(lambda xb=xb: sess.run(None, {model.input_name: xb}), lambda: None,
                       repeats=3 if args.quick else 5, repeat_s=0.05 if args.quick else 0.15, warmup=2)
        add_row(rows, model, f"onnxruntime CPU ({os.cpu_count()} threads)", "fp32", b, t)

    if args.cpu_only or not torch.cuda.is_available():
        return info

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    gm32 = gm.to(dev)
    gm16 = None
    try:
        import copy

        gm16 = copy.deepcopy(gm32).half()
    except Exception as exc:
        log(f"   fp16 copy failed: {exc}")
    xr = torch.from_numpy(x_real).to(dev)

    # host syncs left in one forward (should be 0 after freezing constants)
    try:
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            gm32(xr)
        torch.cuda.set_sync_debug_mode("default")
        info["host_syncs_per_forward"] = sum("synchroniz" in str(w.message) for w in caught)
        log(f"   host syncs in one forward: {info['host_syncs_per_forward']}")
    except Exception as exc:
        torch.cuda.set_sync_debug_mode("default")
        info["host_syncs_per_forward"] = f"n/a ({exc})"

    def run(mode: str, x: torch.Tensor) -> list[torch.Tensor]:
        if mode == "fp16-autocast":
            with torch.autocast("cuda", dtype=torch.float16):
                return as_list(gm32(x))
        if mode == "fp16":
            return as_list(gm16(x.half()))
        return as_list(gm32(x))

    def to_np(outs: list[torch.Tensor]) -> list[np.ndarray]:
        return [o.float().cpu().numpy() for o in outs]

    with torch.inference_mode():
        set_tf32(False)
        gpu32 = to_np(run("fp32", xr))
        check("CUDA fp32 (TF32 off)", gpu32, "onnxruntime CPU", ref)
        set_tf32(True)
        check("CUDA TF32", to_np(run("tf32", xr)), "onnxruntime CPU", ref)
        check("CUDA fp16 autocast", to_np(run("fp16-autocast", xr)), "CUDA fp32", gpu32)
        if gm16 is not None:
            check("CUDA fp16 weights", to_np(run("fp16", xr)), "CUDA fp32", gpu32)

    # pinned host-to-device copy of a float32 batch (timings below start on the device)
    for b in model.batches:
        try:
            host = torch.from_numpy(tile_batch(x_real, b)).pin_memory()
            t = time_calls(lambda host=host: host.to(dev, non_blocking=True), torch.cuda.synchronize,
                           repeats=3, repeat_s=0.01, warmup=2)
            add_row(rows, model, "H2D copy (pinned, float32 NHWC)", "-", b, t)
        except Exception as exc:
            log(f"   H2D b={b}: {type(exc).__name__}: {exc}")

    modes = ["fp32", "tf32", "fp16-autocast"] + (["fp16", "fp16+cudagraph"] if gm16 is not None else [])
    repeats, repeat_s = (3, 0.03) if args.quick else (5, 0.06)
    for mode in modes:
        set_tf32(mode != "fp32")
        for b in model.batches:
            if budget.left() < 15:
                log(f"   time budget: skipping {mode} b={b}")
                rows.append({"model": model.name, "backend": "torch CUDA", "precision": mode, "batch": b,
                             "error": "skipped: time budget"})
                continue
            try:
                xb = torch.from_numpy(tile_batch(x_real, b)).to(dev)
                torch.cuda.reset_peak_memory_stats()
                with torch.inference_mode():
                    if mode == "fp16+cudagraph":
                        fn, extra = cuda_graph(gm16, xb.half())
                    else:
                        fn, extra = (lambda m=mode, x=xb: run(m, x)), {}
                    t = time_calls(fn, torch.cuda.synchronize, repeats=repeats, repeat_s=repeat_s)
                t["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                t.update(extra)
                add_row(rows, model, "torch CUDA", mode, b, t)
            except Exception as exc:  # OOM, capture failure: record and go on
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                log(f"   {mode} b={b}: {type(exc).__name__}: {first}")
                rows.append({"model": model.name, "backend": "torch CUDA", "precision": mode, "batch": b,
                             "error": f"{type(exc).__name__}: {first}"})
            finally:
                fn = None  # drop the CUDA graph and its memory pool
                torch.cuda.empty_cache()
    set_tf32(True)
    return info


def cuda_graph(gm16: Any, x: Any) -> tuple[Callable[[], object], dict]:
    import torch

    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            eager = as_list(gm16(static_x))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = as_list(gm16(static_x))
    graph.replay()
    torch.cuda.synchronize()
    diff = max(float((a.float() - e.float()).abs().max()) for a, e in zip(static_out, eager))
    return graph.replay, {"graph_vs_eager_max_abs": diff}


def add_row(rows: list[dict], model: Model, backend: str, precision: str, batch: int, t: dict) -> None:
    unit = "batches/s" if backend.startswith("H2D") else model.unit
    row = {"model": model.name, "backend": backend, "precision": precision, "batch": batch,
           "ms_per_batch": t["sec"] * 1e3, "items_per_s": batch / t["sec"], "unit": unit,
           **{k: v for k, v in t.items() if k != "sec"}}
    rows.append(row)
    log(f"   {backend:<32} {precision:<15} b={batch:<4} {row['ms_per_batch']:9.3f} ms  "
        f"{row['items_per_s']:12.1f} {unit}")


# --------------------------------------------------------------------------------------------
# Machine description and report
# --------------------------------------------------------------------------------------------

def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return f"? ({type(exc).__name__})"


def machine_meta(cpu_only: bool) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    meta: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": f"{platform.machine()} {os.cpu_count()} logical cores",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": _safe(lambda: torch.backends.cudnn.version()),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
    try:
        import onnx2torch  # noqa: F401 - already imported once, stub included
        from importlib.metadata import version

        meta["onnx2torch"] = version("onnx2torch")
    except Exception:
        meta["onnx2torch"] = "?"
    try:
        cpu_name = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                         if ln.startswith("model name")), None)
        if cpu_name:
            meta["cpu"] += f", {cpu_name}"
    except OSError:
        pass
    if not cpu_only and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["gpu_capability"] = f"{p.major}.{p.minor}"
        meta["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,clocks.max.sm,power.limit",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False)
            meta["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
            meta["driver"] = q.stdout.split(",")[0].strip() if q.returncode == 0 else None
            h = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False)
            cuda_line = next((ln for ln in h.stdout.splitlines() if "CUDA Version" in ln), "")
            meta["driver_cuda"] = cuda_line.split("CUDA Version:")[-1].strip(" |") if cuda_line else None
        except Exception as exc:
            meta["nvidia_smi"] = f"unavailable ({type(exc).__name__})"
        if not meta.get("driver"):
            try:  # the driver's CUDA version straight from libcuda
                import ctypes

                v = ctypes.c_int()
                ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v))
                meta["driver_cuda"] = f"{v.value // 1000}.{(v.value % 1000) // 10}"
            except Exception:
                pass
    else:
        meta["gpu"] = None
    return meta


def render(meta: dict, infos: dict, rows: list[dict], checks: list[dict]) -> str:
    gpu = meta.get("gpu") or "no GPU (CPU-only run)"
    lines = [
        f"GPU: **{gpu}**" + (f" ({meta.get('gpu_memory_gib')} GiB, sm {meta.get('gpu_capability')})"
                             if meta.get("gpu") else ""),
        f"driver {meta.get('driver', '-')} (CUDA {meta.get('driver_cuda', '-')}); torch {meta['torch']} "
        f"(CUDA {meta['torch_cuda']}, cuDNN {meta['cudnn']}); onnx2torch {meta.get('onnx2torch')}; "
        f"onnxruntime {meta['onnxruntime']} (CPU); CPU {meta['cpu']}; Python {meta['python']}; {meta['date']}",
        "",
        "GPU rows: inputs already on the device, float32 NHWC 0..255 (fp16: cast on the device), median ms per "
        "batch over timed runs after warm-up with torch.cuda.synchronize; cudnn.benchmark on. fp32 = TF32 off; "
        "tf32 = TF32 convs/matmuls; fp16-autocast = torch.autocast; fp16 = .half() weights; "
        "fp16+cudagraph = the fp16 model replayed as a CUDA graph.",
        "",
        "| model | backend | precision | batch | ms per batch | throughput |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | - | {r['error'][:80]} |")
        else:
            lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | "
                         f"{r['ms_per_batch']:.3f} | {r['items_per_s']:,.0f} {r['unit']} |")
    lines += ["", "Accuracy (real inputs):", "", "| model | check | against | result |", "| --- | --- | --- | --- |"]
    for c in checks:
        lines.append(f"| {c['model']} | {c['check']} | {c['against']} | {summarize_check(c)} |")
    errors = {k: v["error"] for k, v in infos.items() if "error" in v}
    if errors:
        lines += ["", "Models that failed:", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path(".gpu-models"),
                        help="folder with the three .onnx files and inputs.npz (default .gpu-models)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter timed runs")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA: conversion, accuracy, CPU timings")
    parser.add_argument("--only", action="append", choices=[m.name for m in MODELS], help="model(s) to run")
    parser.add_argument("--max-seconds", type=float, default=200.0,
                        help="time budget; GPU timings left when it runs out are skipped (default 200)")
    parser.add_argument("--out-dir", type=Path, help="where to write gpu_models.json/.md (default $OUT or .)")
    parser.add_argument("--prepare", action="store_true",
                        help="copy build/models/*.onnx and real inputs from shared/ into --models-dir, then exit")
    parser.add_argument("--source-dir", type=Path, default=REPO_ROOT / "build" / "models",
                        help="with --prepare: where `openlfr models build` wrote the models")
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared",
                        help="with --prepare: the shared/ folder holding data/faces")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.models_dir, args.source_dir, args.shared)
        return 0

    budget = Budget(args.max_seconds)
    import torch

    torch.set_grad_enabled(False)
    import_onnx2torch()
    meta = machine_meta(args.cpu_only)
    log(f"GPU: {meta.get('gpu')}; driver {meta.get('driver')} (CUDA {meta.get('driver_cuda')}); torch "
        f"{meta['torch']} (CUDA {meta['torch_cuda']}, cuDNN {meta['cudnn']}); onnxruntime {meta['onnxruntime']}")
    inputs, source = load_inputs(args.models_dir)
    meta["inputs"] = source
    rows: list[dict] = []
    checks: list[dict] = []
    infos: dict[str, dict] = {}
    for model in MODELS:
        if args.only and model.name not in args.only:
            continue
        try:
            infos[model.name] = bench_model(model, args.models_dir, inputs, args, budget, rows, checks)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            infos[model.name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"   FAILED {model.name}: {type(exc).__name__}: {exc}")
    meta["elapsed_s"] = round(time.perf_counter() - budget.start, 1)
    table = render(meta, infos, rows, checks)
    out_dir = args.out_dir or Path(os.environ.get("OUT") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_models.json").write_text(
        json.dumps({"meta": meta, "models": infos, "rows": rows, "checks": checks}, indent=2) + "\n")
    (out_dir / "gpu_models.md").write_text(table)
    log("\n" + table)
    log(f"wrote {out_dir / 'gpu_models.json'} and {out_dir / 'gpu_models.md'} in {meta['elapsed_s']} s")
    return 1 if any("error" in v for v in infos.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
