"""The ``triton`` backend: models served by a Triton Inference Server, over gRPC or HTTP.

At :meth:`TritonBackend.load` the server's model metadata and config are compared with the
spec, and a model served with another name, dtype, shape or a smaller ``max_batch_size`` is
refused before any frame is sent (as the tritonclient examples do). Every call carries
``timeout_s``: gRPC as the per-call deadline (``client_timeout``), HTTP as the client's
connection and network timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import gevent
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from openlfr.inference.base import InferenceBackend
from openlfr.inference.exceptions import InferenceError, ModelMismatchError
from openlfr.inference.validation import (
    ServedTensor,
    batch_slices,
    concatenate,
    empty_outputs,
    io_differences,
    validate_inputs,
    validate_outputs,
)
from openlfr.models.specs import ModelSpec

logger = logging.getLogger(__name__)

TritonProtocol = Literal["grpc", "http"]
T = TypeVar("T")

# What a call over the network can raise besides tritonclient's own exception: the HTTP client
# (geventhttpclient) lets socket errors and gevent timeouts through; gevent.Timeout derives from
# BaseException, so it must be named.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    InferenceServerException,
    OSError,
    gevent.Timeout,
)


def _served_tensors(entries: list[dict[str, Any]], *, batched: bool) -> list[ServedTensor]:
    # gRPC metadata as JSON carries int64 dims as strings; HTTP as numbers.
    tensors = []
    for entry in entries:
        dims = tuple(int(d) for d in entry.get("shape", []))
        tensors.append(
            ServedTensor(
                name=entry["name"], dtype=entry["datatype"], shape=dims[1:] if batched else dims
            )
        )
    return tensors


class TritonBackend(InferenceBackend):
    """Runs models on a Triton server; thread-safe.

    gRPC uses one client shared by all threads (its channel is thread-safe). The HTTP client is
    not, so each thread gets its own.
    """

    type = "triton"

    def __init__(
        self,
        *,
        url: str,
        protocol: TritonProtocol = "grpc",
        timeout_s: float = 10.0,
        ready_timeout_s: float = 30.0,
        model_version: str = "",
    ) -> None:
        """Create the backend; nothing is contacted until :meth:`load` or :meth:`infer`.

        Args:
            url: ``host:port`` of the server's gRPC or HTTP endpoint, without a scheme.
            protocol: ``"grpc"`` or ``"http"``.
            timeout_s: Limit of every single call to the server.
            ready_timeout_s: How long :meth:`load` waits for the server and model to be ready.
            model_version: Version to use; empty for the server's choice (the latest).
        """
        if "://" in url:
            raise ValueError(f"url={url!r}: give host:port without a scheme")
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol={protocol!r}, expected 'grpc' or 'http'")
        if timeout_s <= 0 or ready_timeout_s <= 0:
            raise ValueError(
                f"timeout_s={timeout_s}, ready_timeout_s={ready_timeout_s}: expected > 0"
            )
        self.url = url
        self.protocol: TritonProtocol = protocol
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.model_version = model_version
        self._lock = threading.Lock()
        self._grpc_client: Any = None
        self._local = threading.local()
        self._http_clients: list[Any] = []
        self._loaded: dict[ModelSpec, int] = {}  # spec -> server max_batch_size

    # -- clients -------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self.protocol == "grpc":
            with self._lock:
                if self._grpc_client is None:
                    self._grpc_client = grpcclient.InferenceServerClient(url=self.url)
                return self._grpc_client
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpclient.InferenceServerClient(
                url=self.url,
                connection_timeout=self.timeout_s,
                network_timeout=self.timeout_s,
                concurrency=1,
            )
            self._local.client = client
            with self._lock:
                self._http_clients.append(client)
        return client

    def _timeout_kwargs(self) -> dict[str, float]:
        # HTTP has its timeouts on the client; gRPC takes a deadline per call.
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _call(self, what: str, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one client call with the per-call timeout, mapping transport errors."""
        try:
            return call(*args, **kwargs, **self._timeout_kwargs())
        except _TRANSPORT_ERRORS as exc:
            raise InferenceError(
                f"Triton {self.protocol}://{self.url}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _json(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """Like :meth:`_call` for the metadata calls, asking gRPC for JSON as HTTP gives it."""
        if self.protocol == "grpc":
            return self._call(what, call, *args, as_json=True)
        return self._call(what, call, *args)

    # -- interface -----------------------------------------------------------------------------

    def _wait_ready(self, spec: ModelSpec) -> None:
        client = self._client()
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer yet"
        while True:
            try:
                if not self._call("server readiness", client.is_server_ready):
                    last = "server not ready"
                elif self._call(
                    "model readiness", client.is_model_ready, spec.name, self.model_version
                ):
                    return
                else:
                    last = self._model_state(client, spec)
            except ModelMismatchError:
                raise
            except InferenceError as exc:  # not up yet: retried until the deadline
                cause = exc.__cause__
                last = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            if time.monotonic() >= deadline:
                raise InferenceError(
                    f"Triton {self.protocol}://{self.url}: model {spec.name!r} not ready after "
                    f"{self.ready_timeout_s:.0f}s: {last}"
                )
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def ready(self, spec: ModelSpec) -> tuple[bool, str]:
        """One readiness probe of the server and the model, bounded by ``timeout_s``."""
        client = self._client()
        try:
            if not self._call("server readiness", client.is_server_ready):
                return False, f"Triton {self.url}: server not ready"
            if not self._call("model readiness", client.is_model_ready, spec.name, self.model_version):
                return False, f"Triton {self.url}: model {spec.name} not ready"
        except InferenceError as exc:
            return False, str(exc)
        return True, "ok"

    def _model_state(self, client: Any, spec: ModelSpec) -> str:
        """Why a model is not ready; a model the repository does not hold is a mismatch."""
        index = self._json("repository index", client.get_model_repository_index)
        entries = index.get("models", []) if isinstance(index, dict) else index
        states = [e for e in entries if e.get("name") == spec.name]
        if not states:
            raise ModelMismatchError(
                f"Triton {self.protocol}://{self.url} serves no model {spec.name!r} "
                f"(repository holds {sorted(e.get('name') for e in entries)})"
            )
        return "; ".join(
            f"version {e.get('version', '?')} {e.get('state', 'UNKNOWN')}"
            + (f": {e['reason']}" if e.get("reason") else "")
            for e in states
        )

    def load(self, spec: ModelSpec) -> None:
        """Wait (at most ``ready_timeout_s``) for the model, then check it against ``spec``.

        Raises:
            ModelMismatchError: The server does not hold the model, or its tensors' names,
                dtypes or shapes differ, or its ``max_batch_size`` is below the spec's.
            InferenceError: The server or model was not ready in time.
        """
        if spec in self._loaded:
            return
        self._wait_ready(spec)
        client = self._client()
        metadata = self._json(
            "model metadata", client.get_model_metadata, spec.name, self.model_version
        )
        config = self._json("model config", client.get_model_config, spec.name, self.model_version)
        config = config.get("config", config)  # gRPC wraps the config, HTTP does not
        max_batch_size = int(config.get("max_batch_size", 0))  # proto3 JSON omits zeros
        batched = max_batch_size > 0

        differences = []
        if metadata.get("name") != spec.name:
            differences.append(f"name {metadata.get('name')!r}, expected {spec.name!r}")
        if not batched:
            differences.append(
                "batching disabled (max_batch_size 0); the spec needs a batch dimension"
            )
        elif max_batch_size < spec.max_batch_size:
            differences.append(
                f"max_batch_size {max_batch_size}, expected at least {spec.max_batch_size}"
            )
        differences += io_differences(
            spec,
            inputs=_served_tensors(metadata.get("inputs", []), batched=batched),
            outputs=_served_tensors(metadata.get("outputs", []), batched=batched),
        )
        if differences:
            raise ModelMismatchError(
                f"model {spec.name!r} on Triton {self.protocol}://{self.url} "
                "does not match its spec: " + "; ".join(differences)
            )
        with self._lock:
            self._loaded[spec] = max_batch_size
        logger.info(
            'loaded model="%s" backend="triton" protocol="%s" url="%s" max_batch_size=%d',
            spec.name,
            self.protocol,
            self.url,
            max_batch_size,
        )

    def infer(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch of any size, in requests of at most ``spec.max_batch_size`` rows.

        Raises:
            ValueError: The inputs do not match the spec (names, dtypes, shapes).
            InferenceError: The server failed, timed out, could not be reached or answered with
                something other than the spec.
        """
        batch_size = validate_inputs(spec, inputs)
        if batch_size == 0:
            return empty_outputs(spec)
        if spec not in self._loaded:
            self.load(spec)
        module: Any = grpcclient if self.protocol == "grpc" else httpclient
        client = self._client()
        output_names = [t.name for t in spec.outputs]
        parts = []
        for rows in batch_slices(batch_size, spec.max_batch_size):
            request = []
            for tensor in spec.inputs:
                array = np.ascontiguousarray(inputs[tensor.name][rows])
                infer_input = module.InferInput(tensor.name, list(array.shape), tensor.dtype)
                infer_input.set_data_from_numpy(array)
                request.append(infer_input)
            requested = [module.InferRequestedOutput(name) for name in output_names]
            result = self._call(
                f"inference of {spec.name!r}",
                client.infer,
                spec.name,
                request,
                model_version=self.model_version,
                outputs=requested,
            )
            values = {}
            for name in output_names:
                value = result.as_numpy(name)
                if value is None:
                    raise InferenceError(f"Triton returned no output {name!r} for {spec.name!r}")
                values[name] = value
            parts.append(values)
        outputs = concatenate(parts, spec)
        validate_outputs(spec, outputs, batch_size)
        return outputs

    def close(self) -> None:
        """Close the clients; a later call opens new ones."""
        with self._lock:
            grpc_client, self._grpc_client = self._grpc_client, None
            http_clients, self._http_clients = self._http_clients, []
            self._loaded.clear()
        self._local = threading.local()
        for client in ([grpc_client] if grpc_client is not None else []) + http_clients:
            try:
                client.close()
            except Exception as exc:  # closing must not hide why we are shutting down
                logger.warning('closing Triton client failed url="%s" error="%s"', self.url, exc)
