"""A container's Triton: ``python -m openlfr.inference.triton_exec`` becomes ``tritonserver``.

The entry point of the CPU Triton image (Dockerfile target ``triton-cpu``): it lays out what the
``nvidia-pytriton`` wheel's server needs with :class:`~openlfr.inference.triton_server.TritonServer`
(the backend directory with the Python backend stub, ``LD_LIBRARY_PATH`` with libpython first,
``PATH`` with the virtualenv's ``bin`` first: that module's docstring says why), then replaces
itself with ``tritonserver`` (``os.execve``), so the server is the container's main process: it
gets the container's SIGTERM, and its exit status is the container's.

``--prepare-only`` stops after the layout (the image build runs it, so the backend directory is
in a layer and a read-only root file system is enough at run time; run again, the layout is left
as it is). Arguments after ``--`` go to ``tritonserver`` last.

Imports nothing outside the standard library but :mod:`openlfr.inference.triton_server`, so the
image's virtualenv holds the wheel, onnxruntime and numpy, and ``openlfr`` without its
dependencies.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from openlfr.inference.triton_server import TritonServer, TritonServerError

#: Triton's usual ports (HTTP, gRPC, metrics), which the compose file and probes name.
DEFAULT_PORTS = (8000, 8001, 8002)


def _backend_setting(value: str) -> tuple[str, str, str]:
    backend, _, setting = value.partition(",")
    key, equals, setting_value = setting.partition("=")
    if not backend or not key or not equals:
        raise argparse.ArgumentTypeError(f"{value!r}: expected BACKEND,KEY=VALUE")
    return backend, key, setting_value


def parser() -> argparse.ArgumentParser:
    """The command line (``--help`` lists it)."""
    p = argparse.ArgumentParser(
        prog="python -m openlfr.inference.triton_exec",
        description="Run the nvidia-pytriton wheel's tritonserver in this process (exec).",
    )
    p.add_argument("--model-repository", type=Path, required=True, help="the repository to serve")
    p.add_argument("--work-dir", type=Path, required=True,
                   help="where the backend directory is laid out (prepared at image build time)")
    p.add_argument("--host", default="0.0.0.0", help="address of all three endpoints")
    p.add_argument("--http-port", type=int, default=DEFAULT_PORTS[0])
    p.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS[1])
    p.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS[2])
    p.add_argument("--exit-timeout", type=int, default=5, metavar="SECONDS",
                   help="how long a stopping server waits for requests in flight")
    p.add_argument("--backend-config", type=_backend_setting, action="append", default=[],
                   metavar="BACKEND,KEY=VALUE", help="a --backend-config setting (repeatable)")
    p.add_argument("--prepare-only", action="store_true",
                   help="lay out the backend directory, print the command, do not run it")
    p.add_argument("extra", nargs="*", help="after --: further tritonserver arguments")
    return p


def server(args: argparse.Namespace) -> TritonServer:
    """The server the arguments describe (nothing started)."""
    backend_config: dict[str, dict[str, str]] = {}
    for backend, key, value in args.backend_config:
        backend_config.setdefault(backend, {})[key] = value
    return TritonServer(
        model_repository=args.model_repository,
        work_dir=args.work_dir,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_s=args.exit_timeout,
        backend_config=backend_config,
        extra_args=args.extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, then exec ``tritonserver`` (returns only with ``--prepare-only`` or an error)."""
    args = parser().parse_args(argv)
    try:
        command, environment = server(args).prepare()
    except (TritonServerError, ValueError) as exc:
        print(f"triton_exec: {exc}", file=sys.stderr)
        return 2
    if args.prepare_only:
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    os.execve(command[0], command, environment)
    return 1  # not reached: execve returns only by raising


if __name__ == "__main__":
    sys.exit(main())
