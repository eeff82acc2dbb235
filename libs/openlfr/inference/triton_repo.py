"""Lay out a Triton model repository from the committed templates in ``deploy/triton/``.

Variants (one template directory each):

- ``onnxruntime``: the production CPU variant, Triton's ONNX Runtime backend, ``KIND_CPU``.
- ``onnxruntime-gpu``: the same on ``KIND_GPU``; ``tensorrt=True`` adds the TensorRT accelerator
  from ``deploy/triton/onnxruntime-gpu/tensorrt.pbtxt`` with optimisation profiles for batch
  sizes 1 .. ``max_batch_size``.
- ``python``: the Python backend running the same ONNX file with onnxruntime
  (``deploy/triton/python/model.py``), for the ``tritonserver`` of the nvidia-pytriton wheel,
  which has no ONNX Runtime backend (tests, benchmarks, CPU-only set-ups).

The result is ``<out>/<model>/config.pbtxt`` and ``<out>/<model>/1/model.onnx`` (a hard link to
the built file where the file system allows, else a copy), plus ``<out>/<model>/1/model.py``
for the ``python`` variant. Templates are checked against the specs first, so a repository that
Triton would serve differently from the contract is never written.
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from openlfr import paths
from openlfr.inference.exceptions import ModelMismatchError, ModelNotBuiltError
from openlfr.models.specs import ModelSpec, TensorSpec

logger = logging.getLogger(__name__)

Variant = Literal["onnxruntime", "onnxruntime-gpu", "python"]
VARIANTS: tuple[Variant, ...] = ("onnxruntime", "onnxruntime-gpu", "python")

VERSION = "1"
ONNX_NAME = "model.onnx"
PYTHON_MODEL = "model.py"
TENSORRT_SNIPPET = "tensorrt.pbtxt"


def templates_dir() -> Path:
    """The committed templates, ``<repo>/deploy/triton``."""
    return paths.REPO_ROOT / "deploy" / "triton"


def default_site_packages() -> list[Path]:
    """Site-packages of the running interpreter (its venv), for the ``python`` variant."""
    found = sysconfig.get_paths()
    unique = dict.fromkeys(Path(found[key]) for key in ("purelib", "platlib"))
    return list(unique)


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt`` (protobuf text format)."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid Triton model config: {exc}") from exc
    return config


def _tensor_differences(
    kind: str, expected: Sequence[TensorSpec], configured: Iterable[model_config_pb2.ModelInput]
) -> list[str]:
    differences = []
    by_name = {t.name: t for t in configured}
    if list(by_name) != [t.name for t in expected]:
        differences.append(f"{kind}s {list(by_name)}, expected {[t.name for t in expected]}")
    for want in expected:
        got = by_name.get(want.name)
        if got is None:
            continue
        dtype = model_config_pb2.DataType.Name(got.data_type)
        if dtype != f"TYPE_{want.dtype}":
            differences.append(
                f"{kind} {want.name!r}: data_type {dtype}, expected TYPE_{want.dtype}"
            )
        if tuple(got.dims) != want.shape:
            differences.append(
                f"{kind} {want.name!r}: dims {list(got.dims)}, expected {list(want.shape)}"
            )
    return differences


def config_differences(spec: ModelSpec, config: model_config_pb2.ModelConfig) -> list[str]:
    """Every way a model config differs from ``spec`` (empty if it matches)."""
    differences = []
    if config.name != spec.name:
        differences.append(f"name {config.name!r}, expected {spec.name!r}")
    if config.max_batch_size != spec.max_batch_size:
        differences.append(
            f"max_batch_size {config.max_batch_size}, expected {spec.max_batch_size}"
        )
    differences += _tensor_differences("input", spec.inputs, config.input)
    differences += _tensor_differences("output", spec.outputs, config.output)
    return differences


#: The template an embedder without one of its own is generated from.
GENERIC_EMBEDDER = "dlib_resnet_v1"


def embedder_config(template: model_config_pb2.ModelConfig, spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """The default embedder's config rewritten for another one-input, one-output embedder: its
    name, tensor names and dims, and batch size; batching, instances and backend parameters kept."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(template)
    config.name = spec.name
    config.max_batch_size = spec.max_batch_size
    for tensors, specs in ((config.input, spec.inputs), (config.output, spec.outputs)):
        (tensor,), (tensor_spec,) = tensors, specs
        tensor.name = tensor_spec.name
        del tensor.dims[:]
        tensor.dims.extend(tensor_spec.shape)
    preferred = [b for b in config.dynamic_batching.preferred_batch_size if b <= spec.max_batch_size]
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.preferred_batch_size.extend(preferred or [spec.max_batch_size])
    return config


def _add_tensorrt(config: model_config_pb2.ModelConfig, spec: ModelSpec, snippet: Path) -> None:
    text_format.Merge(snippet.read_text(), config)
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    tensorrt = next((a for a in accelerators if a.name == "tensorrt"), None)
    if tensorrt is None:
        raise ValueError(f"{snippet}: no gpu_execution_accelerator named 'tensorrt'")
    if any(d < 0 for t in spec.inputs for d in t.shape):
        logger.warning(
            'model="%s" has dynamic input dimensions; TensorRT profiles left out', spec.name
        )
        return
    preferred = list(config.dynamic_batching.preferred_batch_size)
    sizes = {
        "min": 1,
        "opt": max(preferred) if preferred else spec.max_batch_size,
        "max": spec.max_batch_size,
    }
    for key, batch in sizes.items():
        tensorrt.parameters[f"trt_profile_{key}_shapes"] = ",".join(
            f"{t.name}:" + "x".join(str(d) for d in (batch, *t.shape)) for t in spec.inputs
        )


def _write_if_changed(path: Path, text: str) -> None:
    # Unchanged files keep their mtime, so a server polling the repository sees no change.
    if path.is_file() and path.read_text() == text:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _place_file(source: Path, target: Path, *, link: bool) -> None:
    if target.exists():
        if os.path.samefile(source, target):
            return
        src, dst = source.stat(), target.stat()
        if not link and src.st_size == dst.st_size and src.st_mtime_ns == dst.st_mtime_ns:
            return
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)
    if link:
        try:
            os.link(source, temporary)
        except OSError as exc:  # another file system, or links not permitted: copy instead
            logger.debug('hard link failed source="%s" error="%s"; copying', source, exc)
            shutil.copy2(source, temporary)
    else:
        shutil.copy2(source, temporary)
    os.replace(temporary, target)


def assemble_repository(
    variant: Variant,
    out_dir: Path,
    model_dir: Path,
    specs: Iterable[ModelSpec],
    *,
    tensorrt: bool = False,
    site_packages: Sequence[Path] | None = None,
    link: bool = True,
    templates: Path | None = None,
    generic_embedder: bool = True,
) -> Path:
    """Write (or bring up to date) a Triton model repository for ``specs``.

    Idempotent: running it again changes only what differs. Other models already in
    ``out_dir`` are left alone.

    Args:
        variant: Which template set to use (see the module docstring).
        out_dir: The repository root; created if missing.
        model_dir: Where the built ONNX files are (``<model_dir>/<spec.onnx_file>``).
        specs: The models to include.
        tensorrt: ``onnxruntime-gpu`` only: add the TensorRT accelerator.
        site_packages: ``python`` only: directories the backend stub must import numpy and
            onnxruntime from; defaults to the running interpreter's site-packages.
        link: Hard-link the ONNX files where possible (``False``: always copy).
        templates: Template root; defaults to ``<repo>/deploy/triton``.
        generic_embedder: a one-input, one-output model without a template of its own (an
            embedder registered by a manifest, ``openlfr.models.manifest``) gets the default
            embedder's template with its own name, tensors and batch size (``embedder_config``).

    Returns:
        ``out_dir``.

    Raises:
        ModelNotBuiltError: An ONNX file is missing from ``model_dir``.
        ModelMismatchError: A template's name, tensors or max_batch_size differ from its spec.
        ValueError: Unknown variant, ``tensorrt`` with a CPU variant, or a missing template.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}, expected one of {VARIANTS}")
    if tensorrt and variant != "onnxruntime-gpu":
        raise ValueError(f"tensorrt=True needs variant 'onnxruntime-gpu', got {variant!r}")
    root = (templates or templates_dir()) / variant
    out_dir = Path(out_dir)
    specs = list(specs)

    prepared: list[tuple[ModelSpec, Path, str]] = []
    for spec in specs:
        template = root / spec.name / "config.pbtxt"
        if template.is_file():
            config = load_config(template)
        elif generic_embedder and len(spec.inputs) == 1 and len(spec.outputs) == 1:
            template = root / GENERIC_EMBEDDER / "config.pbtxt"
            config = embedder_config(load_config(template), spec)
        else:
            raise ValueError(
                f"no {variant} template for model {spec.name!r}: {template} is missing"
            )
        differences = config_differences(spec, config)
        if differences:
            raise ModelMismatchError(
                f"template {template} does not match the spec of {spec.name!r}: "
                + "; ".join(differences)
            )
        onnx_file = Path(model_dir) / spec.onnx_file
        if not onnx_file.is_file():
            raise ModelNotBuiltError(
                f"model {spec.name!r} is not built: {onnx_file} is missing; "
                "run `openlfr models build`"
            )
        if variant == "python":
            directories = site_packages if site_packages is not None else default_site_packages()
            config.parameters["site_packages"].string_value = os.pathsep.join(
                str(d) for d in directories
            )
        if tensorrt:
            _add_tensorrt(config, spec, root / TENSORRT_SNIPPET)
        text = (
            f"# Generated by openlfr.inference.triton_repo from {template}; edit the template.\n"
            + text_format.MessageToString(config)
        )
        prepared.append((spec, onnx_file, text))

    for spec, onnx_file, text in prepared:
        model_root = out_dir / spec.name
        version_dir = model_root / VERSION
        version_dir.mkdir(parents=True, exist_ok=True)
        _place_file(onnx_file, version_dir / ONNX_NAME, link=link)
        python_model = version_dir / PYTHON_MODEL
        if variant == "python":
            _write_if_changed(python_model, (root / PYTHON_MODEL).read_text())
        else:
            python_model.unlink(missing_ok=True)  # left over from an earlier python variant
        # The config last: a polling server sees a complete model directory.
        _write_if_changed(model_root / "config.pbtxt", text)
        logger.info(
            'assembled model="%s" variant="%s" repository="%s"', spec.name, variant, out_dir
        )
    return out_dir
