"""The ``openlfr`` command line.

Subcommands (stable; other tools build on them):
  openlfr models build [--force]                 build every ONNX model from installed packages
  openlfr faces IMAGE_OR_VIDEO... [--json]       detect, align and embed faces; print them
  openlfr run [--source S --watchlist DIR] [--json]  the whole pipeline: alerts as they happen
  openlfr service NAME                           run one pipeline service (ingest|detect|embed|match|alert)
  openlfr watchlist enroll DIR|--csv F --api URL enrol photos through the registry API
  openlfr deployment create|show|list|end        deployments through the registry API
  openlfr report DEPLOYMENT --api URL            a deployment's report (Markdown or JSON)
  openlfr openapi                                the HTTP services' OpenAPI documents, keyed by service
  openlfr evaluate --faces DIR [--labels CSV] [--attributes CSV] --out OUTDIR   accuracy, fairness, calibration
  openlfr audit verify PATH [--expect-head H:N] [--against-topic]  verify an audit log's chain and its heads
  openlfr triton serve [--variant python]        run a real Triton server over the built models
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
from openlfr.audit.cli import add_audit_parser
from openlfr.cohort.cli import add_cohort_parser
from openlfr.evaluation.cli import add_evaluate_parser
from openlfr.registry.reembed_cli import add_reembed_parser
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


def cmd_service(args: argparse.Namespace) -> int:
    """Run one pipeline service (``services/<name>/main.py``) in the foreground."""
    import importlib.util

    path = paths.REPO_ROOT / "services" / args.name / "main.py"
    spec = importlib.util.spec_from_file_location(f"openlfr_service_{args.name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        print(f"openlfr service: {path} not found", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the settings' annotations through it
    spec.loader.exec_module(module)
    return int(module.main(args.service_args))


TOKEN_ENV = "OPENLFR_TOKEN"


def _client(args: argparse.Namespace, what: str):  # noqa: ANN202 - RegistryClient, imported lazily
    """A registry API client from ``--api`` and the token in ``$OPENLFR_TOKEN``; None after
    printing why when either is missing."""
    from openlfr.registry.client import RegistryClient

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"openlfr {what}: set {TOKEN_ENV} to an API token (tokens are never taken as arguments)",
              file=sys.stderr)
        return None
    return RegistryClient(args.api, token)


def _api_error(what: str, exc: Exception) -> int:
    print(f"openlfr {what}: {exc}", file=sys.stderr)
    return 1


def cmd_watchlist_enroll(args: argparse.Namespace) -> int:
    """Enrol a folder tree or a CSV of photos on a watchlist through the registry API."""
    from datetime import UTC, datetime, timedelta

    from openlfr.registry.bulk import SubjectDefaults, bulk_enrol
    from openlfr.registry.client import RegistryApiError, RegistryUnreachable
    from openlfr.registry.models import WatchlistCreate

    what = "watchlist enroll"
    if (args.folder is None) == (args.csv is None):
        print(f"openlfr {what}: give a folder or --csv, not both", file=sys.stderr)
        return 2
    if args.folder is not None and not args.folder.is_dir():
        print(f"openlfr {what}: {args.folder} is not a directory", file=sys.stderr)
        return 2
    client = _client(args, what)
    if client is None:
        return 2
    try:
        try:
            client.get_watchlist(args.watchlist_id)
        except RegistryApiError as exc:
            if exc.status_code != 404:
                raise
            client.create_watchlist(WatchlistCreate(id=args.watchlist_id, name=args.watchlist_name or args.watchlist_id))
            print(f"watchlist {args.watchlist_id} created", file=sys.stderr)
        defaults = SubjectDefaults(
            category=args.category,
            reason=args.reason,
            legal_basis=args.legal_basis,
            expires_at=datetime.now(UTC) + timedelta(days=args.expires_days),
            source=args.source_note,
        )
        report = bulk_enrol(client, watchlist_id=args.watchlist_id, defaults=defaults, folder=args.folder,
                            csv_path=args.csv, progress=not args.no_progress)
    except (RegistryApiError, RegistryUnreachable) as exc:
        return _api_error(what, exc)
    finally:
        client.close()
    print(report.summary())
    return 0 if report.images_enrolled else 1


def _when(text: str, *, flag: str = "time") -> str:
    """An ISO time, or ``now`` / ``now+2h`` / ``now-5m`` / ``now+1d``, as ISO 8601 (UTC).

    Raises:
        ValueError: neither (the message names ``flag``).
    """
    import re
    from datetime import UTC, datetime, timedelta

    match = re.fullmatch(r"now(?:([+-])(\d+(?:\.\d+)?)([smhd]))?", text.strip())
    if not match:
        try:
            return datetime.fromisoformat(text).isoformat()
        except ValueError as exc:
            raise ValueError(f"{flag} {text!r}: not an ISO 8601 time or now[+-N{{s,m,h,d}}]") from exc
    delta = timedelta()
    if match.group(1):
        seconds = float(match.group(2)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(3)]
        delta = timedelta(seconds=seconds if match.group(1) == "+" else -seconds)
    return (datetime.now(UTC) + delta).isoformat()


#: Where a deployment request's fields come from on ``openlfr deployment create``.
_DEPLOYMENT_FLAGS = {
    "purpose": "--purpose",
    "authorised_by": "--authorised-by",
    "camera_ids": "--cameras",
    "watchlist_ids": "--watchlists",
    "start_at": "--start",
    "end_at": "--end",
    "target_fpir": "--target-fpir",
    "accept_fpir": "--accept-fpir",
    "calibrated_for": "--calibration",
    "id": "--id",
}


def cmd_deployment(args: argparse.Namespace) -> int:
    """Create, show, list or end deployments through the registry API."""
    from openlfr.registry.client import RegistryApiError, RegistryUnreachable

    what = f"deployment {args.deployment_command}"
    body, calibration, threshold_flag = None, None, "--threshold"
    if args.deployment_command == "create":
        try:
            body, calibration, threshold_flag = _deployment_body(args)
        except ValueError as exc:
            print(f"openlfr {what}: {exc}", file=sys.stderr)
            return 2
    client = _client(args, what)
    if client is None:
        return 2
    try:
        if body is not None:
            result: Any = client.create_deployment(body)
            print(_operating_point_line(result), file=sys.stderr)
            if calibration is not None:
                _check_calibration(calibration, result)
        elif args.deployment_command == "show":
            result = client.get_deployment(args.deployment_id)
            print(_operating_point_line(result), file=sys.stderr)
        elif args.deployment_command == "list":
            result = client.list_deployments()
        else:
            result = client.end_deployment(args.deployment_id, reason=args.reason)
    except RegistryApiError as exc:
        if body is not None and exc.status_code == 422:
            print(f"openlfr {what}: refused (HTTP 422): {_flag_message(exc, threshold_flag)}", file=sys.stderr)
            return 1
        return _api_error(what, exc)
    except RegistryUnreachable as exc:
        return _api_error(what, exc)
    finally:
        client.close()
    print(result.model_dump_json(indent=2))
    return 0


def _deployment_body(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None, str]:
    """The ``DeploymentCreate`` of ``openlfr deployment create``'s flags, the calibration file
    read (if any) and the flag that gave ``threshold``. Raises ValueError naming the flag at fault."""
    from openlfr.cohort.policy import parse_rate
    from openlfr.registry.models import DeploymentCreate

    if args.global_threshold is not None and args.calibration is not None:
        raise ValueError("--global-threshold and --calibration both name the one threshold: give one")
    calibration = _read_calibration(args.calibration) if args.calibration else None
    global_threshold = float(calibration["threshold"]) if calibration is not None else args.global_threshold
    global_flag = "--calibration" if calibration is not None else "--global-threshold"
    if global_threshold is not None and args.threshold is not None:
        raise ValueError(f"--threshold is the floor of per-subject thresholds; with {global_flag} there is one "
                         "threshold for everyone: give one of them")
    if args.accept_fpir is not None and global_threshold is None:
        raise ValueError("--accept-fpir applies to --global-threshold or --calibration; per-subject thresholds "
                         "always meet --target-fpir")
    target_text = args.target_fpir
    if target_text is None and calibration is not None and calibration.get("target_fpir") is not None:
        target_text = str(calibration["target_fpir"])  # what the file's threshold was calibrated for
    target = parse_rate(target_text, name="--target-fpir") if target_text is not None else None
    accept = parse_rate(args.accept_fpir, name="--accept-fpir") if args.accept_fpir is not None else None
    values: dict[str, Any] = {
        **({"id": args.id} if args.id else {}),
        "purpose": args.purpose,
        "authorised_by": args.authorised_by,
        "camera_ids": args.cameras,
        "start_at": _when(args.start, flag="--start"),
        "end_at": _when(args.end, flag="--end"),
        "watchlist_ids": args.watchlists,
        "threshold_mode": "per_subject" if global_threshold is None else "global",
    }
    threshold = global_threshold if global_threshold is not None else args.threshold
    if threshold is not None:
        values["threshold"] = threshold
    if target is not None:
        values["target_fpir"] = target
    if accept is not None:
        values["accept_fpir"] = accept
    if calibration is not None and calibration.get("model_version"):
        values["calibrated_for"] = calibration["model_version"]  # the registry refuses another model's
    threshold_flag = "--threshold" if global_threshold is None else global_flag
    try:
        return DeploymentCreate.model_validate(values), calibration, threshold_flag
    except ValidationError as exc:
        flags = {**_DEPLOYMENT_FLAGS, "threshold": threshold_flag}
        raise ValueError("; ".join(
            f"{flags.get(str(err['loc'][0]), str(err['loc'][0])) if err['loc'] else 'request'}: {err['msg']}"
            for err in exc.errors()
        )) from exc


def _flag_message(exc: Any, threshold_flag: str) -> str:
    """A 422 of the registry in terms of the command's flags (``threshold`` came from ``threshold_flag``)."""
    flags = {**_DEPLOYMENT_FLAGS, "threshold": threshold_flag}
    if not isinstance(exc.detail, list):
        return str(exc.message)
    parts = []
    for item in exc.detail:
        loc = item.get("loc", []) if isinstance(item, dict) else []
        field = str(loc[-1]) if loc else ""
        message = str(item.get("msg", item)) if isinstance(item, dict) else str(item)
        for name in ("accept_fpir", "target_fpir"):
            message = message.replace(name, flags[name])
        message = message.replace("Use threshold_mode per_subject", "Leave --global-threshold out")
        parts.append(f"{flags.get(field, field)}: {message}" if field else message)
    return "; ".join(parts)


def _operating_point_line(deployment: Any) -> str:
    """What the registry expects of a deployment's threshold, in one line for an operator."""
    point = deployment.operating_point
    if point is None:
        return (f"deployment {deployment.id}: one threshold {deployment.threshold:g} for everyone, authorised "
                "before per-subject thresholds: no expected rates recorded")
    miss = ("unknown (the cohort has nobody with two images)" if point.expected_fnmr is None
            else f"{point.expected_fnmr:.1%}")
    if deployment.threshold_mode == "per_subject":
        how = (f"per-subject thresholds (normalised {point.normalised_threshold:.3f}, floor "
               f"{deployment.threshold:g})")
    else:
        how = f"one threshold {deployment.threshold:g} for everyone"
    return (f"deployment {deployment.id}: {how} on {point.watchlist_size} subject(s), {point.cohort}: expected "
            f"{point.expected_false_alerts_per_10000:.2f} false alert(s) per 10,000 passers-by (FPIR "
            f"{point.expected_fpir:.2e}, target {point.target_fpir:.3g}), expected miss rate {miss}")


def _read_calibration(path: Path) -> dict[str, Any]:
    """A ``calibration.json`` of ``openlfr evaluate`` (ValueError when it is not one)."""
    try:
        data = json.loads(path.read_text())
        float(data["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--calibration {path}: not a calibration file of openlfr evaluate ({exc})") from exc
    return data


def _check_calibration(calibration: dict[str, Any], deployment: Any) -> None:
    """Warn where the deployment is not what the threshold was calibrated for (another model is
    refused by the registry: ``calibrated_for``)."""
    if not calibration.get("model_version"):
        print("warning: the calibration file names no model version, so the registry could not check it was "
              "calibrated for the model it matches with", file=sys.stderr)
    size = calibration.get("gallery_size")
    subjects = deployment.snapshot.active_subjects
    if isinstance(size, int) and subjects > size:
        print(f"warning: the threshold was calibrated for a watchlist of {size}; this deployment searches "
              f"{subjects} subjects, so its false-alert rate will be higher than the target "
              f"{calibration.get('target_fpir')}", file=sys.stderr)


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
        print(f"openlfr report: HTTP {response.status_code}: {response.text}", file=sys.stderr)
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
    parser = argparse.ArgumentParser(prog="openlfr", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def backend_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=["local", "triton"], help="inference backend (OPENLFR_BACKEND)")
        p.add_argument("--triton-url", dest="triton_url", help="Triton address host:port (OPENLFR_TRITON_URL)")
        p.add_argument("--protocol", dest="triton_protocol", choices=["grpc", "http"], help="Triton protocol")
        p.add_argument("--detector", choices=["full", "short"], help="BlazeFace model (OPENLFR_DETECTOR)")
        p.add_argument("--threads", type=int, help="onnxruntime threads for the local backend")
        p.add_argument("--model-dir", dest="model_dir", type=Path, help="built models (OPENLFR_MODEL_DIR)")

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    build = models.add_parser("build", help="build every model from the installed packages (idempotent)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--model-dir", dest="model_dir", type=Path)
    build.set_defaults(func=cmd_models_build)

    faces = sub.add_parser("faces", help="detect, align and embed the faces of images or videos")
    faces.add_argument("inputs", nargs="*", help="image or video files")
    faces.add_argument("--json", action="store_true", help="one JSON object per image or frame")
    faces.add_argument("--video-fps", dest="video_fps", type=float, default=2.0, help="frames per second sampled")
    faces.add_argument("--demo", action="store_true", help="run on the shared sample images and video")
    backend_args(faces)
    faces.set_defaults(func=cmd_faces)

    add_run_parser(sub, backend_args)

    service = sub.add_parser("service", help="run one pipeline service (settings from OPENLFR_* variables)")
    service.add_argument("name", choices=SERVICES)
    service.add_argument("service_args", nargs=argparse.REMAINDER, help="passed to the service")
    service.set_defaults(func=cmd_service)

    watchlist = sub.add_parser("watchlist", help="watchlists").add_subparsers(dest="watchlist_command", required=True)
    enroll = watchlist.add_parser(
        "enroll", help="enrol photos through the registry API (token in $OPENLFR_TOKEN)",
        description="Enrol a folder (one folder of photos per subject) or a CSV (path,subject_id[,display_name,"
                    "category,reason,legal_basis,expires_at,source]) on a watchlist through the match service's "
                    "registry API. Every image is checked (one face, size, sharpness); refusals are listed.")
    enroll.add_argument("folder", type=Path, nargs="?")
    enroll.add_argument("--csv", type=Path, help="a CSV of images instead of a folder")
    enroll.add_argument("--api", default="http://127.0.0.1:8080", help="the match service's base URL")
    enroll.add_argument("--watchlist-id", dest="watchlist_id", default="default",
                        help="created if missing")
    enroll.add_argument("--watchlist-name", dest="watchlist_name")
    enroll.add_argument("--category", default="wanted",
                        choices=["wanted", "suspect", "missing_person", "vulnerable_person", "risk_to_self_or_others"])
    enroll.add_argument("--reason", required=True, help="why these people are on the watchlist")
    enroll.add_argument("--legal-basis", dest="legal_basis", required=True, help="the law or warrant it rests on")
    enroll.add_argument("--expires-days", dest="expires_days", type=float, default=30.0,
                        help="subjects come off the list after this many days")
    enroll.add_argument("--source", dest="source_note", required=True, help="where the photos came from")
    enroll.add_argument("--no-progress", dest="no_progress", action="store_true")
    enroll.set_defaults(func=cmd_watchlist_enroll)
    add_reembed_parser(watchlist)

    deployment = sub.add_parser("deployment", help="deployments (token in $OPENLFR_TOKEN)").add_subparsers(
        dest="deployment_command", required=True)
    create = deployment.add_parser(
        "create", help="authorise matching on cameras, in a window, against watchlists",
        description="Authorise matching. By default every subject gets a threshold of its own, which the registry "
                    "calibrates on its background cohort to --target-fpir for the watchlists' size at this moment; "
                    "the expected false alerts per 10,000 passers-by and the expected miss rate are printed.")
    create.add_argument("--id")
    create.add_argument("--purpose", required=True)
    create.add_argument("--authorised-by", dest="authorised_by", required=True)
    create.add_argument("--cameras", nargs="+", required=True)
    create.add_argument("--watchlists", nargs="+", required=True)
    create.add_argument("--start", default="now", help="ISO 8601 time or now[+-N{s,m,h,d}] (default now)")
    create.add_argument("--end", default="now+8h", help="ISO 8601 time or now+N{s,m,h,d} (default now+8h)")
    create.add_argument("--target-fpir", dest="target_fpir", default=None,
                        help="false alerts per stranger aimed at: 0.001, 1e-3 or 1/6000 (default 1/6000); the "
                             "registry calibrates each subject's threshold to it for the watchlists' size")
    create.add_argument("--threshold", type=float, default=None,
                        help="raw score 0..1 no subject's own threshold goes below (default: the registry's floor)")
    create.add_argument("--global-threshold", dest="global_threshold", type=float, default=None,
                        help="one raw score 0..1 for every subject instead of per-subject thresholds; refused when "
                             "its expected FPIR on these watchlists exceeds --target-fpir unless --accept-fpir "
                             "covers it")
    create.add_argument("--accept-fpir", dest="accept_fpir", default=None,
                        help="the FPIR you accept for a --global-threshold (or --calibration) above the target")
    create.add_argument("--calibration", type=Path,
                        help="a global threshold from openlfr evaluate's calibration.json (checked like "
                             "--global-threshold; its target_fpir unless --target-fpir is given; warns on a model "
                             "or watchlist-size mismatch)")
    for name in ("show", "end"):
        one = deployment.add_parser(name, help=f"{name} one deployment")
        one.add_argument("deployment_id")
        if name == "end":
            one.add_argument("--reason")
    listing = deployment.add_parser("list", help="list deployments")
    for p in (create, listing, *(deployment.choices[n] for n in ("show", "end"))):
        p.add_argument("--api", default="http://127.0.0.1:8080", help="the match service's base URL")
        p.set_defaults(func=cmd_deployment)

    report = sub.add_parser("report", help="a deployment's report from the alert service (token in $OPENLFR_TOKEN)")
    report.add_argument("deployment_id")
    report.add_argument("--api", default="http://127.0.0.1:8081", help="the alert service's base URL")
    report.add_argument("--format", choices=["markdown", "json"], default="markdown")
    report.add_argument("--out", type=Path, help="write to this file instead of stdout")
    report.set_defaults(func=cmd_report)

    add_evaluate_parser(sub)
    add_cohort_parser(sub, backend_args)

    openapi = sub.add_parser("openapi", help="print the HTTP services' OpenAPI documents as one JSON object")
    openapi.add_argument("--indent", action="store_true")
    openapi.set_defaults(func=cmd_openapi)

    add_audit_parser(sub)

    triton = sub.add_parser("triton", help="Triton server").add_subparsers(dest="triton_command", required=True)
    serve = triton.add_parser("serve", help="serve the built models with a real Triton server")
    serve.add_argument("--variant", choices=["python", "onnxruntime", "onnxruntime-gpu"], default="python")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--model-dir", dest="model_dir", type=Path)
    serve.set_defaults(func=cmd_triton_serve)
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
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPENLFR_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"openlfr: bad setting {name}: {err['msg']}", file=sys.stderr)
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
