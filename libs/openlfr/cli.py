"""The ``openlfr`` command line.

Subcommands (stable; other tools build on them):
  openlfr models build [--force]                 build every ONNX model from installed packages
  openlfr faces IMAGE_OR_VIDEO... [--json]       detect, align and embed faces; print them
  openlfr run [--source S --watchlist DIR] [--json]  the whole pipeline: alerts as they happen
  openlfr service NAME                           run one pipeline service (ingest|detect|embed|match|alert)
  openlfr watchlist enroll DIR|--csv F --api URL enrol photos through the registry API (all or nothing per subject)
  openlfr watchlist list|show|suspend|resume|delete|reembed   watchlists through the registry API
  openlfr subject list WATCHLIST|show|suspend|resume|delete   subjects through the registry API
  openlfr deployment create|show|list|update|end deployments through the registry API
  openlfr alerts list|show|review                alerts and two-person review through the review API
  openlfr report DEPLOYMENT --api URL            a deployment's report (Markdown or JSON)
  openlfr openapi                                the HTTP services' OpenAPI documents, keyed by service
  openlfr evaluate --faces DIR [--labels CSV] [--attributes CSV] --out OUTDIR   accuracy, fairness, calibration
  openlfr audit verify PATH [--expect-head H:N] [--against-topic]  verify an audit log's chain and its heads
  openlfr triton serve [--variant python]        run a real Triton server over the built models

The API commands read the caller's token from $OPENLFR_TOKEN; they exit 0 when done, 1 when the
API refused (said in words) or could not be reached, 2 for a bad flag (named) or no token. The
command lines are split by area: registry/cli.py, registry/deployment_cli.py, review/cli.py,
run_cli.py, audit/cli.py, cohort/cli.py, evaluation/cli.py; this module assembles them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.api.errors import validation_message
from openlfr.audit.cli import add_audit_parser
from openlfr.cohort.cli import add_cohort_parser
from openlfr.evaluation.cli import add_evaluate_parser
from openlfr.cli_support import ALERT_API, TIME_FORMS, TOKEN_ENV, HelpFormatter, format_everywhere
from openlfr.registry.cli import add_subject_parser, add_watchlist_parser
from openlfr.registry.deployment_cli import add_deployment_parser
from openlfr.registry.reembed_cli import add_reembed_parser
from openlfr.review.cli import add_alerts_parser
from openlfr.run_cli import add_run_parser

logger = logging.getLogger("openlfr")

#: Sample inputs of the demo, relative to the shared face set beside the checkout.
DEMO_INPUTS = (
    "face_recognition/examples/two_people.jpg",
    "deepface/couple.jpg",
    "dlib/examples/faces/2008_002506.jpg",
    "facenet_pytorch/examples/video.mp4",
)


def samples_dir() -> Path:
    """The shared face set (``OPENLFR_SAMPLES_DIR`` overrides ``<repo>/../shared/data/faces``)."""
    return Path(os.environ.get("OPENLFR_SAMPLES_DIR", paths.REPO_ROOT.parent / "shared" / "data" / "faces"))


M = TypeVar("M", bound=ModelSettings)


def _settings(args: argparse.Namespace, settings_cls: type[M] = ModelSettings, **values: Any) -> M:
    """``settings_cls`` from the environment, the backend flags given and ``values``."""
    overrides: dict[str, Any] = {}
    for key in ("backend", "detector", "triton_url", "triton_protocol", "threads", "model_dir"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return settings_cls(**overrides, **values)


def cmd_models_build(args: argparse.Namespace) -> int:
    """Build every model; print one line per model."""
    from openlfr.inference.triton_repo import assemble_repository
    from openlfr.models.build import build_all
    from openlfr.models.specs import ALL_MODELS

    settings = _settings(args)
    for result in build_all(settings.model_dir, force=args.force):
        state = f"built in {result.seconds:.1f}s" if result.built else "up to date"
        print(f"{result.name:16s} {state:18s} sha256={result.sha256[:12]} {result.path}")
    repo = assemble_repository(
        "python", paths.build_dir() / "triton" / "python", settings.model_dir, list(ALL_MODELS.values())
    )
    print(f"triton repository (python backend, CPU): {repo}")
    return 0


def _iter_inputs(items: Sequence[str], sample_fps: float) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield (record header, image or exception) for every image and sampled video frame."""
    from openlfr.vision.exceptions import ImageError
    from openlfr.vision.images import load_image
    from openlfr.vision.video import is_video, iter_video_frames

    for item in items:
        path = Path(item)
        if is_video(path):
            try:
                for frame in iter_video_frames(path, sample_fps=sample_fps):
                    yield {"source": item, "frame": frame.index, "time_s": round(frame.time_s, 3)}, frame.image
            except ImageError as exc:
                yield {"source": item}, exc
            continue
        try:
            yield {"source": item}, load_image(path)
        except ImageError as exc:
            yield {"source": item}, exc


def cmd_faces(args: argparse.Namespace) -> int:
    """Print the faces of images and videos (JSON lines with --json)."""
    from openlfr.vision.factory import build_analyzer

    inputs = list(args.inputs)
    if args.demo or not inputs:
        base = samples_dir()
        inputs = [str(base / rel) for rel in DEMO_INPUTS if (base / rel).exists()]
        if not inputs:
            print(f"openlfr faces: no inputs given and no sample images under {base}", file=sys.stderr)
            return 2
    settings = _settings(args)
    analyzer = build_analyzer(settings)
    version = settings.embedder_version()
    failures = 0
    total_faces = 0
    start = time.perf_counter()
    for header, image in _iter_inputs(inputs, args.video_fps):
        if isinstance(image, Exception):
            failures += 1
            record = {**header, "error": str(image)}
            print(json.dumps(record) if args.json else f"{header['source']}: ERROR {image}")
            continue
        faces = analyzer.analyze(image)
        total_faces += len(faces)
        record = {
            **header,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "model_version": version,
            "faces": faces.to_records(),
        }
        if args.json:
            print(json.dumps(record))
        else:
            where = header["source"] + (f" frame {header['frame']}" if "frame" in header else "")
            print(f"{where}: {len(faces)} face(s) in {image.shape[1]}x{image.shape[0]}")
            for rec in record["faces"]:
                q = rec["quality"]
                print(
                    f"  box={rec['box']} score={rec['score']:.3f} inter_eye={q['inter_eye_px']:.1f}px "
                    f"blur={q['blur']:.0f} yaw={q['yaw']:+.2f} quality={q['score']:.2f} "
                    f"embedding[:4]={[round(v, 3) for v in rec['embedding'][:4]]}"
                )
    elapsed = time.perf_counter() - start
    print(
        f"openlfr faces: {total_faces} face(s), {failures} input error(s), {elapsed:.1f}s, "
        f"backend={settings.backend}, model={version}",
        file=sys.stderr,
    )
    return 1 if failures else 0


SERVICES = ("ingest", "detect", "embed", "match", "alert")

#: Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

#: The verbose flag's spellings, taken out of a service's own arguments (``openlfr service NAME -v``).
VERBOSE_FLAGS = frozenset({"-v", "--verbose"})


def cmd_service(args: argparse.Namespace) -> int:
    """Run one pipeline service (``services/<name>/main.py``) in the foreground."""
    from openlfr.service.modules import load_service_main

    try:
        module = load_service_main(args.name)
    except FileNotFoundError as exc:
        print(f"openlfr service: {exc}", file=sys.stderr)
        return 2
    # -v before or after NAME, as everywhere: a service's log level is a setting, so it sets
    # OPENLFR_LOG_LEVEL=DEBUG for this process (over the environment and --env-file).
    service_args = [a for a in args.service_args if a not in VERBOSE_FLAGS]
    if getattr(args, "verbose", False) or len(service_args) < len(args.service_args):
        os.environ["OPENLFR_LOG_LEVEL"] = "DEBUG"
    # argparse names the program after sys.argv[0]: the service's usage line and its errors then
    # read "openlfr service NAME ...", the command the user typed, not "openlfr ...".
    program = sys.argv[0] if sys.argv else ""
    if sys.argv:
        sys.argv[0] = f"openlfr service {args.name}"
    else:
        sys.argv.append(f"openlfr service {args.name}")
    try:
        return int(module.main(service_args))
    finally:
        sys.argv[0] = program


def cmd_report(args: argparse.Namespace) -> int:
    """Fetch a deployment's report from the alert service (JSON or Markdown)."""
    import httpx

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"openlfr report: set {TOKEN_ENV} to an API token", file=sys.stderr)
        return 2
    url = f"{args.api.rstrip('/')}/v1/deployments/{args.deployment_id}/report"
    try:
        response = httpx.get(url, params={"format": args.format}, headers={"Authorization": f"Bearer {token}"},
                             timeout=30.0)
    except httpx.HTTPError as exc:
        print(f"openlfr report: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        from openlfr.api.errors import detail_words

        try:
            words = detail_words(response.json().get("detail", response.text))
        except (ValueError, AttributeError):
            words = response.text
        print(f"openlfr report: refused (HTTP {response.status_code}): {words}", file=sys.stderr)
        return 1
    text = response.text
    if args.out:
        args.out.write_text(text)
        print(f"report written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI documents of the HTTP services, keyed by service."""
    from openlfr.service.openapi import openapi_documents

    print(json.dumps(openapi_documents(), indent=2 if args.indent else None, sort_keys=True))
    return 0


def cmd_triton_serve(args: argparse.Namespace) -> int:
    """Run a Triton server in the foreground until interrupted."""
    from openlfr.inference.triton_repo import assemble_repository
    from openlfr.inference.triton_server import TritonServer
    from openlfr.models.specs import ALL_MODELS

    settings = _settings(args)
    repo = assemble_repository(
        args.variant, paths.build_dir() / "triton" / args.variant, settings.model_dir, list(ALL_MODELS.values())
    )
    with TritonServer(
        model_repository=repo,
        work_dir=paths.build_dir() / "triton-work",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    ) as server:
        print(
            f"triton ready: grpc={server.grpc_url} http={server.http_url} metrics={server.metrics_url}",
            flush=True,
        )
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="openlfr", description=__doc__.split("\n")[0], formatter_class=HelpFormatter,
        epilog=f"API commands take the token from ${TOKEN_ENV}. Time flags take {TIME_FORMS}. "
               "Exit status: 0 done, 1 refused or failed (said in words), 2 a bad flag or setting (named).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def backend_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=["local", "triton"], help="inference backend (OPENLFR_BACKEND)")
        p.add_argument("--triton-url", dest="triton_url", help="Triton address host:port (OPENLFR_TRITON_URL)")
        p.add_argument("--protocol", dest="triton_protocol", choices=["grpc", "http"], help="Triton protocol")
        p.add_argument("--detector", choices=["full", "short"], help="BlazeFace model (OPENLFR_DETECTOR)")
        p.add_argument("--threads", type=int,
                       help="onnxruntime threads a stage, local backend (OPENLFR_THREADS; run on a file: 1 unless set)")
        p.add_argument("--model-dir", dest="model_dir", type=Path, help="built models (OPENLFR_MODEL_DIR)")

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    build = models.add_parser("build", help="build every model from the installed packages (idempotent)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--model-dir", dest="model_dir", type=Path, help="where to build them (OPENLFR_MODEL_DIR)")
    build.set_defaults(func=cmd_models_build)

    faces = sub.add_parser("faces", help="detect, align and embed the faces of images or videos")
    faces.add_argument("inputs", nargs="*", help="image or video files")
    faces.add_argument("--json", action="store_true", help="one JSON object per image or frame")
    faces.add_argument("--video-fps", dest="video_fps", type=float, default=2.0, help="frames per second sampled")
    faces.add_argument("--demo", action="store_true", help="run on the shared sample images and video")
    backend_args(faces)
    faces.set_defaults(func=cmd_faces)

    add_run_parser(sub, backend_args)

    service = sub.add_parser(
        "service", help="run one pipeline service (settings from OPENLFR_* variables)",
        description="Run one pipeline service in the foreground. openlfr service NAME --help lists its options "
                    "and every setting it reads with its default; --check-config validates them all and exits; "
                    "-v, before or after NAME, logs at DEBUG (OPENLFR_LOG_LEVEL=DEBUG).")
    service.add_argument("name", choices=SERVICES, help="the service")
    service.add_argument("service_args", nargs=argparse.REMAINDER,
                         help="the service's own options: --help, --check-config, --env-file FILE")
    service.set_defaults(func=cmd_service)

    watchlist = add_watchlist_parser(sub)
    add_reembed_parser(watchlist)
    add_subject_parser(sub)
    add_deployment_parser(sub)
    add_alerts_parser(sub)

    report = sub.add_parser("report", help="a deployment's report from the alert service (token in $OPENLFR_TOKEN)")
    report.add_argument("deployment_id", help="the deployment's id")
    report.add_argument("--api", default=ALERT_API, help="the alert service's base URL")
    report.add_argument("--format", choices=["markdown", "json"], default="markdown", help="the report's form")
    report.add_argument("--out", type=Path, help="write to this file instead of stdout")
    report.set_defaults(func=cmd_report)

    add_evaluate_parser(sub)
    add_cohort_parser(sub, backend_args)

    openapi = sub.add_parser("openapi", help="print the HTTP services' OpenAPI documents as one JSON object")
    openapi.add_argument("--indent", action="store_true", help="indent the JSON for reading")
    openapi.set_defaults(func=cmd_openapi)

    add_audit_parser(sub)

    triton = sub.add_parser("triton", help="Triton server").add_subparsers(dest="triton_command", required=True)
    serve = triton.add_parser("serve", help="serve the built models with a real Triton server")
    serve.add_argument("--variant", choices=["python", "onnxruntime", "onnxruntime-gpu"], default="python",
                       help="the model repository's backend")
    serve.add_argument("--http-port", type=int, default=8000, help="Triton's HTTP port")
    serve.add_argument("--grpc-port", type=int, default=8001, help="Triton's gRPC port")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Triton's metrics port")
    serve.add_argument("--model-dir", dest="model_dir", type=Path, help="the built models (OPENLFR_MODEL_DIR)")
    serve.set_defaults(func=cmd_triton_serve)
    format_everywhere(parser)
    return parser


def _version() -> str:
    """``openlfr <package version> (embedder <model version>)``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("openlfr")
    except PackageNotFoundError:
        package = "unknown"
    try:
        from openlfr.config import ModelSettings

        model = ModelSettings().embedder_version()
    except Exception as exc:  # noqa: BLE001 - a bad setting must not hide the version
        model = f"unknown ({type(exc).__name__})"
    return f"openlfr {package} (embedder {model})"


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` after any subcommand too (``openlfr run -v``), not only before it."""
    for action in parser._actions:  # noqa: SLF001 - argparse exposes subparsers no other way
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                if not any("--verbose" in a.option_strings for a in sub._actions):  # noqa: SLF001
                    sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                     help="log at DEBUG level")
                _verbose_everywhere(sub)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``openlfr`` console script."""
    parser = build_parser()
    _verbose_everywhere(parser)
    args = parser.parse_args(argv)
    if args.command == "service":  # a service configures its own logging from its settings
        return int(args.func(args))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # A command's own Ctrl-C handling (openlfr run's summary once frames flow) comes first;
        # one that reaches here stopped it in set-up or between steps: a line, not a traceback.
        logger.debug("command=%s stopped by Ctrl-C", args.command)
        where = ""
        if args.command == "run":
            where = " during set-up (models, enrolment, calibration), before any frame was read"
        print(f"openlfr {args.command}: stopped by Ctrl-C{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPENLFR_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"openlfr: bad setting {name}: {validation_message(err)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a command-line tool reports, it does not dump a traceback
        from openlfr.inference.exceptions import InferenceError
        from openlfr.models.exceptions import ModelFormatError

        if isinstance(exc, (InferenceError, ModelFormatError, ValueError, OSError)):
            logger.debug("command failed", exc_info=True)
            print(f"openlfr: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
