"""``openlfr cohort build|show``: the background cohort that per-subject thresholds rest on.

Wired into the ``openlfr`` command by ``add_cohort_parser(subparsers)``. Exit status: 0 done,
2 unusable input (the message names the argument), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openlfr import paths

DESCRIPTION = """\
Build the background cohort: faces of people on NO watchlist, embedded by the current model.
Each watchlist reference is scored against it at enrolment so that every subject gets a
threshold of its own (a subject among many look-alikes needs a higher score to alert), and a
held-out half of it calibrates thresholds to a false-alert target for any watchlist size.

Use faces like those your cameras will see, of people who will not be on your watchlists, and
that you are licensed to use; a few thousand people is a good size. DIR holds a folder per
person (people with two or more images also let the cohort estimate the miss rate), or use
--one-per-person for a flat set in which every image is a different person, or --labels CSV
(columns path,identity as `openlfr evaluate` takes).
"""

DEFAULT_COHORT = "cohort/default.npz"


def default_cohort_path(embedder: str = "dlib_resnet_v1", *, embed_mirror: bool = True) -> Path:
    """Where the demo's cohort for an embedder lives: ``build/cohort/default.npz`` for the default
    embedder (set-up builds it from the shared set), ``build/cohort/default-<name>.npz`` for another;
    ``-single`` before ``.npz`` for one embedded without mirrored views (``OPENLFR_EMBED_MIRROR=false``),
    so each setting keeps its own."""
    name = embedder.split("@", 1)[0]
    path = paths.build_dir() / (DEFAULT_COHORT if name == "dlib_resnet_v1" else f"cohort/default-{name}.npz")
    return path if embed_mirror else path.with_name(path.stem + "-single.npz")


def add_cohort_parser(sub: argparse._SubParsersAction, backend_args) -> None:  # noqa: ANN001 - argparse internals
    """Add ``cohort build`` and ``cohort show`` to the ``openlfr`` subcommands."""
    cohort = sub.add_parser("cohort", help="the background cohort behind per-subject thresholds")
    commands = cohort.add_subparsers(dest="cohort_command", required=True)
    build = commands.add_parser("build", help="embed a cohort from images", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("faces", type=Path, metavar="DIR", nargs="?", help="images: a folder per person (see --one-per-person)")
    build.add_argument("--sample", action="store_true",
                       help="build the demo's cohort from the shared face set (every labelled person but the "
                            "sample's, and the UTKFace crops) at build/cohort/default.npz")
    build.add_argument("--out", type=Path, default=None,
                       help=f"cohort file to write (default build/{DEFAULT_COHORT})")
    build.add_argument("--one-per-person", dest="one_per_person", action="store_true",
                       help="every image under DIR is a different person")
    build.add_argument("--labels", type=Path, help="CSV with path,identity (paths relative to DIR)")
    build.add_argument("--exclude-identity", dest="exclude", action="append", default=[], metavar="ID",
                       help="leave out this person (repeatable), e.g. anyone on a watchlist")
    build.add_argument("--top-fraction", dest="top_fraction", type=float, default=None,
                       help="share of the stats half a face's statistics are taken over (default 0.1)")
    build.add_argument("--cache", type=Path, help="embedding cache folder (default build/eval-cache)")
    build.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    backend_args(build)
    build.set_defaults(func=cmd_cohort_build)
    show = commands.add_parser("show", help="a cohort's provenance and the thresholds it gives")
    show.add_argument("path", type=Path, nargs="?", help=f"cohort file (default build/{DEFAULT_COHORT})")
    show.add_argument("--target-fpir", dest="target_fpir", default="1/6000",
                      help="false alerts per stranger aimed at (default 1/6000)")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=cmd_cohort_show)


def cmd_cohort_build(args: argparse.Namespace) -> int:
    """Embed the images, split, calibrate and write the cohort file."""
    from tqdm import tqdm

    from openlfr.cli import _settings
    from openlfr.cohort.build import CohortInput, embed_cohort, folder_inputs
    from openlfr.cohort.exceptions import CohortError
    from openlfr.cohort.norm import DEFAULT_TOP_FRACTION
    from openlfr.evaluation.dataset import DatasetError, load_dataset
    from openlfr.evaluation.embeddings import EmbeddingCache, analyzer_version
    from openlfr.vision.factory import build_analyzer

    settings = _settings_of(args)
    out = args.out or default_cohort_path(settings.embedder_manifest().name, embed_mirror=settings.embed_mirror)
    if args.sample:
        return _build_sample(args, out)
    if args.faces is None:
        print("openlfr cohort build: give DIR (or --sample for the demo's cohort)", file=sys.stderr)
        return 2
    try:
        if args.labels is not None:
            if args.one_per_person:
                raise CohortError("--one-per-person and --labels: give one of them")
            dataset = load_dataset(args.faces, labels=args.labels)
            inputs = [CohortInput(image.path, image.identity) for image in dataset.images]
        else:
            inputs = folder_inputs(args.faces, one_per_person=args.one_per_person)
    except (CohortError, DatasetError) as exc:
        print(f"openlfr cohort build: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    analyzer = build_analyzer(settings)
    version = analyzer_version(settings)
    cache = EmbeddingCache(args.cache or paths.build_dir() / "eval-cache", version)
    embedder = settings.embedder_version()
    print(f"openlfr cohort build: {len(inputs)} image(s) from {args.faces}; model {embedder}", file=sys.stderr)
    bar = tqdm(total=len(inputs), desc="cohort", unit="img", file=sys.stderr, disable=args.no_progress, leave=False)
    try:
        built = embed_cohort(
            inputs,
            analyzer=analyzer,
            cache=cache,
            model_version=embedder,
            embed_mirror=settings.embed_mirror,
            top_fraction=args.top_fraction or DEFAULT_TOP_FRACTION,
            exclude_identities=args.exclude,
            progress=bar.update,
            meta={"source": str(args.faces), "labels": str(args.labels) if args.labels else None},
        )
    except CohortError as exc:
        print(f"openlfr cohort build: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openlfr cohort build: interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        bar.close()
    built.cohort.save(out)
    meta = built.cohort.meta
    print(
        f"openlfr cohort build: wrote {out} ({built.cohort.short_id}): {meta['people']} people, "
        f"{built.cohort.vectors.shape[0]} faces ({meta['stats_faces']} stats, {meta['calibration_faces']} "
        f"calibration), {meta['impostor_pairs']} impostor and {meta['genuine_pairs']} genuine pairs; "
        f"refused {len(built.refused)}",
        file=sys.stderr,
    )
    for path, reason in built.refused[:20]:
        print(f"  refused {path}: {reason}", file=sys.stderr)
    if len(built.refused) > 20:
        print(f"  ... and {len(built.refused) - 20} more", file=sys.stderr)
    return 0


def _settings_of(args: argparse.Namespace):  # noqa: ANN202 - ModelSettings, imported lazily
    from openlfr.cli import _settings

    return _settings(args)


def _build_sample(args: argparse.Namespace, out: Path) -> int:
    from openlfr.cli import _settings, samples_dir
    from openlfr.cohort.cohort import Cohort
    from openlfr.pipeline.samples import build_sample_cohort
    from openlfr.vision.factory import build_analyzer

    if args.faces is not None or args.labels is not None or args.one_per_person or args.exclude:
        print("openlfr cohort build: --sample takes no DIR, --labels, --one-per-person or --exclude-identity",
              file=sys.stderr)
        return 2
    settings = _settings(args)
    try:
        path = build_sample_cohort(samples_dir(), out, analyzer=build_analyzer(settings), settings=settings,
                                   model_version=settings.embedder_version())
    except FileNotFoundError as exc:
        print(f"openlfr cohort build: {exc}", file=sys.stderr)
        return 2
    cohort = Cohort.load(path)
    print(f"openlfr cohort build: {path} ({cohort.short_id}): {cohort.meta['people']} people, "
          f"{cohort.vectors.shape[0]} faces", file=sys.stderr)
    return 0


def cmd_cohort_show(args: argparse.Namespace) -> int:
    """Print a cohort's header and its operating points for a few watchlist sizes."""
    from openlfr.cohort.cohort import Cohort
    from openlfr.cohort.exceptions import CohortError
    from openlfr.cohort.policy import operating_point, parse_rate

    try:
        target = parse_rate(args.target_fpir, name="--target-fpir")
        settings = _settings_of(args)
        cohort = Cohort.load(args.path or default_cohort_path(settings.embedder_manifest().name,
                                                              embed_mirror=settings.embed_mirror), setting="PATH")
    except (CohortError, ValueError) as exc:
        print(f"openlfr cohort show: {exc}", file=sys.stderr)
        return 2
    points = [operating_point(cohort.calibration, watchlist_size=n, target_fpir=target) for n in (10, 100, 1000, 10000)]
    if args.json:
        print(json.dumps({
            "cohort": cohort.short_id,
            "header": cohort.meta,
            "operating_points": [
                {"watchlist_size": p.watchlist_size, "threshold": p.threshold, "method": p.method,
                 "expected_fpir": p.expected_fpir, "expected_fnmr": p.expected_fnmr} for p in points
            ],
        }, sort_keys=True))
        return 0
    print(f"{cohort.short_id}: model {cohort.model_version}, {cohort.meta.get('people')} people, "
          f"{cohort.vectors.shape[0]} faces, source {cohort.meta.get('source')}, made {cohort.meta.get('created_at')}")
    for point in points:
        print("  " + point.describe())
    return 0
