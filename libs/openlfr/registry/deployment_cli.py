"""``openlfr deployment create|show|list|update|end``: deployments through the match service's
registry API (token in ``$OPENLFR_TOKEN``).

``create``, ``show``, ``update`` and ``end`` print the deployment as JSON on stdout and what the
registry expects of its threshold on stderr; ``list`` prints the API's page. Bad flags exit 2
naming the flag before any call; a refusal of the registry exits 1, a 422 in terms of the flags.
Times take the forms of :data:`openlfr.cli_support.TIME_FORMS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from openlfr.api.errors import validation_message
from openlfr.cli_support import EXIT_USAGE, MATCH_API, TIME_FORMS, fail, iso_time, refused
from openlfr.registry.cli import client_for
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable

#: Where a deployment request's fields come from on ``openlfr deployment create`` and ``update``.
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
    """Create, show, list, update or end deployments through the registry API."""
    what = f"deployment {args.deployment_command}"
    body: Any = None
    calibration, threshold_flag = None, "--threshold"
    try:
        if args.deployment_command == "create":
            body, calibration, threshold_flag = _deployment_body(args)
        elif args.deployment_command == "update":
            body = _update_body(args)
    except ValueError as exc:
        return fail(what, str(exc), code=EXIT_USAGE)
    client = client_for(args)
    if client is None:
        return EXIT_USAGE
    try:
        if args.deployment_command == "create":
            result: Any = client.create_deployment(body)
            print(_operating_point_line(result), file=sys.stderr)
            if calibration is not None:
                _check_calibration(calibration, result)
        elif args.deployment_command == "update":
            result = client.update_deployment(args.deployment_id, body)
            print(f"deployment {result.id} updated: {', '.join(sorted(body.model_fields_set))}", file=sys.stderr)
            print(_operating_point_line(result), file=sys.stderr)
        elif args.deployment_command == "show":
            result = client.get_deployment(args.deployment_id)
            print(_operating_point_line(result), file=sys.stderr)
        elif args.deployment_command == "list":
            result = client.list_deployments(status=args.status)
        else:
            result = client.end_deployment(args.deployment_id, reason=args.reason)
            print(f"deployment {result.id} ended: matching on {', '.join(result.camera_ids)} has stopped",
                  file=sys.stderr)
    except RegistryApiError as exc:
        if body is not None and exc.status_code == 422:
            return refused(what, exc, message=_flag_message(exc, threshold_flag))
        return refused(what, exc)
    except RegistryUnreachable as exc:
        return refused(what, exc)
    finally:
        client.close()
    print(result.model_dump_json(indent=2))
    return 0


def _update_body(args: argparse.Namespace) -> Any:  # noqa: ANN401 - DeploymentUpdate
    """The ``DeploymentUpdate`` of ``openlfr deployment update``'s flags (ValueError naming the flag)."""
    from openlfr.cohort.policy import parse_rate
    from openlfr.registry.models import DeploymentUpdate

    values: dict[str, Any] = {}
    if args.purpose is not None:
        values["purpose"] = args.purpose
    if args.end is not None:
        values["end_at"] = iso_time(args.end, flag="--end")
    if args.cameras is not None:
        values["camera_ids"] = args.cameras
    if args.threshold is not None:
        values["threshold"] = args.threshold
    if args.target_fpir is not None:
        values["target_fpir"] = parse_rate(args.target_fpir, name="--target-fpir")
    if args.accept_fpir is not None:
        values["accept_fpir"] = parse_rate(args.accept_fpir, name="--accept-fpir")
    if not values:
        raise ValueError("nothing to change: give at least one of --purpose, --end, --cameras, --threshold, "
                         "--target-fpir, --accept-fpir")
    try:
        return DeploymentUpdate.model_validate(values)
    except ValidationError as exc:
        flags = {**_DEPLOYMENT_FLAGS, "threshold": "--threshold"}
        raise ValueError("; ".join(
            f"{flags.get(str(err['loc'][0]), str(err['loc'][0])) if err['loc'] else 'request'}: {validation_message(err)}"
            for err in exc.errors()
        )) from exc


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
        "start_at": iso_time(args.start, flag="--start"),
        "end_at": iso_time(args.end, flag="--end"),
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
            f"{flags.get(str(err['loc'][0]), str(err['loc'][0])) if err['loc'] else 'request'}: {validation_message(err)}"
            for err in exc.errors()
        )) from exc


def _flag_message(exc: Any, threshold_flag: str) -> str:
    """A 422 of the registry in terms of the command's flags (``threshold`` came from ``threshold_flag``)."""
    flags = {**_DEPLOYMENT_FLAGS, "threshold": threshold_flag}
    if isinstance(exc.detail, str):
        text = exc.detail
        for field, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
            if text.startswith(f"{field}:"):
                return flag + text[len(field):]
        return text
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


def add_deployment_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """``openlfr deployment ...``."""
    deployment = sub.add_parser("deployment", help="deployments through the registry API (token in $OPENLFR_TOKEN)")
    commands = deployment.add_subparsers(dest="deployment_command", required=True)
    create = commands.add_parser(
        "create", help="authorise matching on cameras, in a window, against watchlists",
        description="Authorise matching. By default every subject gets a threshold of its own, which the registry "
                    "calibrates on its background cohort to --target-fpir for the watchlists' size at this moment; "
                    "the expected false alerts per 10,000 passers-by and the expected miss rate are printed. "
                    f"Times: {TIME_FORMS}.")
    create.add_argument("--id", help="the deployment's id (a slug); assigned by the registry when left out")
    create.add_argument("--purpose", required=True, help="why matching is authorised (published in the report)")
    create.add_argument("--authorised-by", dest="authorised_by", required=True,
                        help="the person who authorised it")
    create.add_argument("--cameras", nargs="+", required=True, help="the camera ids it matches on")
    create.add_argument("--watchlists", nargs="+", required=True, help="the watchlist ids it searches")
    create.add_argument("--start", default="now", help="when matching starts: ISO 8601 time or now[+-N{s,m,h,d}]")
    create.add_argument("--end", default="now+8h", help="when it ends: ISO 8601 time or now+N{s,m,h,d}")
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

    show = commands.add_parser("show", help="one deployment, with what its threshold is expected to do")
    update = commands.add_parser(
        "update", help="change a running deployment's purpose, end, cameras, threshold or target",
        description="Change a running deployment (its watchlists and snapshot are fixed; an ended one cannot be "
                    "changed: create a new one). A threshold or target change is audited on its own and "
                    f"re-computes the expected rates. Times: {TIME_FORMS}.")
    end = commands.add_parser("end", help="end a deployment now (matching on its cameras stops at once)")
    for p in (show, update, end):
        p.add_argument("deployment_id", help="the deployment's id")
    update.add_argument("--purpose", help="the new purpose")
    update.add_argument("--end", help="the new end: ISO 8601 time or now+N{s,m,h,d} (in the future)")
    update.add_argument("--cameras", nargs="+", help="the new camera ids (replacing the old)")
    update.add_argument("--threshold", type=float,
                        help="per-subject: the new raw floor; global: the new one threshold (0..1)")
    update.add_argument("--target-fpir", dest="target_fpir", help="the new target: 0.001, 1e-3 or 1/6000")
    update.add_argument("--accept-fpir", dest="accept_fpir",
                        help="global only: the FPIR you accept for a threshold above the target")
    end.add_argument("--reason", help="why it ends early (audited)")
    listing = commands.add_parser("list", help="list deployments, newest first (the API's page as JSON)")
    listing.add_argument("--status", choices=["active", "ended"], help="only active or only ended ones")
    for p in (create, listing, show, update, end):
        p.add_argument("--api", default=MATCH_API, help="the match service's base URL (it serves the registry)")
        p.set_defaults(func=cmd_deployment)
