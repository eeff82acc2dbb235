"""Triton Python-backend model that runs an ONNX file with onnxruntime on the CPU.

One generic file for every model of the ``python`` repository variant; everything
model-specific comes from the model's ``config.pbtxt``:

- ``input`` / ``output``: tensor names and data types (shapes are checked by Triton);
- ``parameters.site_packages``: the virtualenv site-packages directories (``os.pathsep``
  separated) holding numpy < 2 and onnxruntime; the backend stub runs Python isolated, so
  ``PYTHONPATH`` does not reach it and this file adds them to ``sys.path`` itself;
- ``parameters.onnx_file``: the ONNX file, relative to the version directory (default
  ``model.onnx``) or absolute;
- ``parameters.intra_op_threads`` / ``parameters.inter_op_threads``: onnxruntime threads per
  instance (default 0: onnxruntime's choice).

With dynamic batching Triton hands ``execute`` several requests at once; their inputs are joined
along the batch dimension, run as one batch (at most ``max_batch_size`` rows, which the batcher
guarantees) and split back per request.

This file is copied into ``<repository>/<model>/1/model.py`` by
``openlfr.inference.triton_repo.assemble_repository``; it depends on nothing from ``openlfr``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _parameter(config: dict[str, Any], key: str, default: str = "") -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def _add_site_packages(config: dict[str, Any]) -> None:
    for directory in reversed(_parameter(config, "site_packages").split(os.pathsep)):
        if directory and directory not in sys.path:
            sys.path.insert(0, directory)


class TritonPythonModel:
    """Triton's entry point: ``initialize`` once per instance, ``execute`` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        _add_site_packages(config)

        # Imported only now: they live in the site-packages just added.
        import numpy as np
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(
                f"numpy {np.__version__} from {np.__file__}: the Triton Python backend stub "
                "returns empty outputs with numpy 2; install numpy<2 in the site-packages given"
            )
        self._np = np
        self._pb_utils = pb_utils

        name = config["name"]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        onnx_path = version_dir / _parameter(config, "onnx_file", "model.onnx")
        if not onnx_path.is_file():
            raise FileNotFoundError(f"model {name!r}: ONNX file {onnx_path} is missing")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_threads", "0"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_threads", "0"))
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [t["name"] for t in config["input"]]
        self._outputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["output"]
        ]
        served = {n.name for n in self._session.get_inputs()} | {
            n.name for n in self._session.get_outputs()
        }
        missing = [n for n in self._inputs + [o for o, _ in self._outputs] if n not in served]
        if missing:
            raise ValueError(f"model {name!r}: {onnx_path} has no tensor(s) {missing}")
        self._name = name

    def execute(self, requests: list[Any]) -> list[Any]:
        np, pb_utils = self._np, self._pb_utils
        try:
            per_request = [
                {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self._inputs}
                for r in requests
            ]
            sizes = [batch[self._inputs[0]].shape[0] for batch in per_request]
            feed = {
                n: np.ascontiguousarray(np.concatenate([b[n] for b in per_request], axis=0))
                if len(per_request) > 1
                else per_request[0][n]
                for n in self._inputs
            }
            values = self._session.run([n for n, _ in self._outputs], feed)
        except Exception as exc:  # every request must get an answer, not a dead instance
            error = pb_utils.TritonError(f"model {self._name!r}: {type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(
                    name, np.ascontiguousarray(value[start : start + size], dtype=dtype)
                )
                for (name, dtype), value in zip(self._outputs, values, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self._session = None
