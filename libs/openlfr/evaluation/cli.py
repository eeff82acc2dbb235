"""``openlfr evaluate``: accuracy, fairness and threshold calibration on a labelled face set.

Wired into the ``openlfr`` command by ``add_evaluate_parser(subparsers)``; ``cmd_evaluate``
runs it and returns the exit status: 0 when the report was written with figures, 1 when it was
written but the data allowed no 1:1 or 1:N figure, 2 when the input cannot be used at all
(no images, a missing folder, a table without its columns).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from openlfr import paths

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Measure the live face path's accuracy and its differences between groups, the way NIST's
FRVT/FRTE reports do, and set a deployment threshold from a false-alert target.

Input: --faces DIR with a folder per person, or --labels CSV (columns path,identity; paths
relative to --faces; an image_kind column, as in the shared set's labels.csv, keeps kinds
face and aligned_crop). Identities in an identity_links.csv beside the labels or under --faces
are merged. --attributes CSV: a path or identity column plus any group columns (sex,
ethnicity, ...). For the shared face set with its UTKFace demographics, write both tables with
`python -m openlfr.evaluation.dataset --faces DIR --out TABLES`.

OUTDIR receives metrics.json, report.md, report.html (self-contained), calibration.json (the
deployment threshold) and plots/*.svg. Embeddings are cached by file SHA-256 and model version.
"""


def _rate(text: str) -> float:
    """A rate given as ``0.001``, ``1e-3`` or ``1/6000``."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/", 1)
            value = float(numerator) / float(denominator)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (use 0.001, 1e-3 or 1/6000)") from exc
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a rate must be in (0, 1), got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


#: Flags recorded in the outputs' command line (backend flags are recorded as the model version).
_RECORDED = (
    ("faces", "--faces"), ("labels", "--labels"), ("attributes", "--attributes"),
    ("identity_links", "--identity-links"), ("out", "--out"), ("gallery_size", "--gallery-size"),
    ("enrol_images", "--enrol-images"), ("target_fpir", "--target-fpir"), ("watchlist_size", "--watchlist-size"),
    ("prevalence", "--prevalence"), ("group_fmr", "--group-fmr"), ("group_threshold", "--group-threshold"),
    ("seed", "--seed"),
    ("track_length", "--track-length"), ("min_votes", "--min-votes"), ("bootstrap", "--bootstrap"),
    ("cohort", "--cohort"),
)


def command_line(args: argparse.Namespace) -> str:
    """The parsed arguments as one ``openlfr evaluate`` command line (every figure-changing flag spelled out)."""
    words = ["openlfr", "evaluate"]
    for name, flag in _RECORDED:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("target_fpir", "prevalence", "group_fmr"):
            from openlfr.evaluation.run import rate_key

            value = rate_key(value)
        words += [flag, str(value)]
    if getattr(args, "apply_enrolment_policy", False):
        words.append("--apply-enrolment-policy")
    return " ".join(shlex.quote(w) for w in words)


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to an ``add_subparsers()`` object and return its parser."""
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy and fairness evaluation and threshold calibration on a labelled face set",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--faces", type=Path, required=True, help="folder of face images (a folder per person, or see --labels)")
    p.add_argument("--labels", type=Path, help="CSV with columns path,identity (paths relative to --faces)")
    p.add_argument("--attributes", type=Path, help="CSV with a path or identity column plus group columns")
    p.add_argument("--identity-links", dest="identity_links", type=Path,
                   help="CSV identity_a,identity_b of identities that are one person "
                        "(default: identity_links.csv beside --labels or under --faces, if present)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--gallery-size", dest="gallery_size", type=_positive_int,
                   help="identities enrolled in the 1:N gallery (default: half of those with 2+ usable images)")
    p.add_argument("--enrol-images", dest="enrol_images", type=_positive_int, default=1,
                   help="reference images per enrolled identity (default 1, as NIST enrols)")
    p.add_argument("--target-fpir", dest="target_fpir", type=_rate, default=1 / 6000,
                   help="false alert rate per stranger searched that the threshold is calibrated for (default 1/6000)")
    p.add_argument("--watchlist-size", dest="watchlist_size", type=_positive_int,
                   help="watchlist size the threshold is calibrated for (default: the evaluation gallery size)")
    p.add_argument("--prevalence", type=_rate, default=1e-4,
                   help="assumed share of faces passing the camera that are on the watchlist (default 1/10000)")
    p.add_argument("--group-fmr", dest="group_fmr", type=_rate, default=1e-3,
                   help="overall FMR whose threshold the per-group 1:1 figures are read at (default 0.001)")
    p.add_argument("--group-threshold", dest="group_threshold", type=float,
                   help="read the per-group 1:1 figures at this score instead (e.g. the deployment's threshold)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--track-length", dest="track_length", type=_positive_int, default=5,
                   help="images per synthetic track (default 5)")
    p.add_argument("--min-votes", dest="min_votes", type=_positive_int, default=3,
                   help="frames of a track that must agree (the match stage's min_votes; default 3)")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples per interval (default 1000)")
    p.add_argument("--apply-enrolment-policy", dest="apply_enrolment_policy", action="store_true",
                   help="only images the registry's enrolment checks accept may be gallery references")
    p.add_argument("--cohort", type=Path,
                   help="background cohort (openlfr cohort build) of the same model: also measure per-subject "
                        "(cohort-normalised) scores and the threshold a deployment would take from it")
    p.add_argument("--cache", type=Path, help="embedding cache folder (default build/eval-cache)")
    p.add_argument("--no-cache", dest="no_cache", action="store_true", help="analyse every image, cache nothing")
    p.add_argument("--calibration-out", dest="calibration_out", type=Path,
                   help="where the deployment threshold JSON goes (default OUTDIR/calibration.json)")
    p.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8, help="images per analyzer call")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=["local", "triton"], help="inference backend (OPENLFR_BACKEND)")
    p.add_argument("--triton-url", dest="triton_url", help="Triton address host:port (OPENLFR_TRITON_URL)")
    p.add_argument("--protocol", dest="triton_protocol", choices=["grpc", "http"], help="Triton protocol")
    p.add_argument("--detector", choices=["full", "short"], help="BlazeFace model (OPENLFR_DETECTOR)")
    p.add_argument("--threads", type=int, help="onnxruntime threads for the local backend")
    p.add_argument("--model-dir", dest="model_dir", type=Path, help="built models (OPENLFR_MODEL_DIR)")
    p.set_defaults(func=cmd_evaluate)
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation; print where the files are and the headline figures."""
    from openlfr.cli import _settings
    from openlfr.evaluation.dataset import DatasetError, load_dataset
    from openlfr.evaluation.embeddings import EmbeddingCache, analyzer_version
    from openlfr.evaluation.run import EvaluationConfig, rate_key, run_evaluation
    from openlfr.vision.factory import build_analyzer

    try:
        dataset = load_dataset(args.faces, labels=args.labels, attributes=args.attributes,
                               identity_links=args.identity_links)
    except DatasetError as exc:
        print(f"openlfr evaluate: {exc}", file=sys.stderr)
        return 2
    try:
        config = EvaluationConfig(
            gallery_size=args.gallery_size,
            enrol_images=args.enrol_images,
            target_fpir=args.target_fpir,
            fpir_targets=tuple(sorted({0.01, 0.001, 1 / 6000, args.target_fpir}, reverse=True)),
            watchlist_size=args.watchlist_size,
            prevalence=args.prevalence,
            group_fmr=args.group_fmr,
            group_threshold=args.group_threshold,
            seed=args.seed,
            track_length=args.track_length,
            min_votes=args.min_votes,
            n_boot=args.bootstrap,
            apply_enrolment_policy=args.apply_enrolment_policy,
        )
    except ValueError as exc:
        print(f"openlfr evaluate: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    cohort = None
    if args.cohort is not None:
        from openlfr.cohort.cohort import Cohort
        from openlfr.cohort.exceptions import CohortError

        try:
            cohort = Cohort.load(args.cohort)
            cohort.check_model(settings.embedder_version(), embed_mirror=settings.embed_mirror)
        except CohortError as exc:
            print(f"openlfr evaluate: {exc}", file=sys.stderr)
            return 2
    analyzer = build_analyzer(settings)
    version = analyzer_version(settings)
    cache = None if args.no_cache else EmbeddingCache(args.cache or paths.build_dir() / "eval-cache", version)
    command = command_line(args)
    print(f"openlfr evaluate: {len(dataset.images)} labelled images, {len(dataset.by_identity())} identities "
          f"({dataset.layout}); model {settings.embedder_version()}", file=sys.stderr)
    output = run_evaluation(
        dataset,
        out_dir=args.out,
        analyzer=analyzer,
        cache=cache,
        version=version,
        config=config,
        model_version=settings.embedder_version(),
        command=command,
        calibration_out=args.calibration_out,
        progress=not args.no_progress,
        cohort=cohort,
    )
    m = output.metrics
    lines = [f"openlfr evaluate: wrote {output.metrics_path}, {output.report_md}, {output.report_html}"
             + (f", {output.calibration_path}" if output.calibration_path else "")]
    inputs = m["inputs"]
    failed = ", ".join(f"{k} {v}" for k, v in inputs["failed"].items()) or "none"
    lines.append(f"  images used {inputs['used']} of {inputs['listed']} listed; not used: {failed}")
    if m["verification"].get("available"):
        fnmr = ", ".join(f"FNMR@FMR={k} {p['fnmr']:.4f}" if p["fnmr"] is not None else f"FNMR@FMR={k} n/a"
                         for k, p in m["fnmr_at_fmr"].items())
        lines.append(f"  1:1 EER {m['eer']:.4f} at {m['eer_threshold']:.4f}; {fnmr}")
    if m["identification"].get("available"):
        fnir = ", ".join(f"FNIR@FPIR={k} {p['fnir']:.4f}" if p["fnir"] is not None else f"FNIR@FPIR={k} n/a"
                         for k, p in m["fnir_at_fpir"].items())
        lines.append(f"  1:N gallery {m['gallery_size']}: rank-1 {m['rank1']:.4f}; {fnir}")
    cal = m["calibration"]
    if cal.get("available"):
        lines.append(f"  threshold for FPIR {rate_key(cal['target_fpir'])} at N={cal['gallery_size']}: "
                     f"{cal['threshold']:.4f} ({cal['method']}), expected TPIR {cal['expected_tpir']:.4f}, "
                     f"wrong alerts at prevalence {cal['prevalence']:g}: {cal['wrong_alert_share']:.1%}")
    normalised = m.get("normalised") or {}
    if normalised.get("available"):
        from openlfr.evaluation.normalised import disparity_line

        op = normalised["operating_point"]
        ident_n = normalised.get("identification", {})
        fnir_n = ", ".join(f"FNIR@FPIR={k} {p['fnir']:.4f}" for k, p in ident_n.get("fnir_at_fpir", {}).items()
                           if p.get("fnir") is not None)
        lines.append(f"  per-subject ({normalised['cohort']}): {fnir_n}")
        measured = (f"; measured here FPIR {op['measured_fpir']:.4f}, FNIR {op['measured_fnir']:.4f}"
                    if op.get("measured_fpir") is not None else "")
        lines.append(f"  per-subject threshold for FPIR {rate_key(op['target_fpir'])} at N={op['watchlist_size']}: "
                     f"{op['threshold']:.4f} ({op['method']}), expected FPIR {op['expected_fpir']:.2e}{measured}")
        disparity = disparity_line(normalised.get("groups", {}))
        if disparity:
            lines.append(f"  per-subject FMR worst/best by group: {disparity}")
    print("\n".join(lines), file=sys.stderr)
    if not (m["verification"].get("available") or m["identification"].get("available")):
        print("openlfr evaluate: the data allowed no 1:1 or 1:N figure (see the report's inputs)", file=sys.stderr)
        return 1
    return 0
