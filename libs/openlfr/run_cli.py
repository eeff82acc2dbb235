"""``openlfr run``: the whole pipeline in one process on a video or camera and a watchlist folder.

The threshold is never a bare default. With a background cohort (``openlfr cohort build``;
set-up builds one from the shared face set for the sample) every enrolled reference gets its
statistics against the cohort, and the run decides on normalised scores at the threshold that
the cohort's held-out pairs give for the target FPIR (``--target-fpir``, default 1/6000) at this
watchlist's size: each subject's own threshold, never below the floor (``--floor``). A threshold
named with ``--threshold`` (one raw score for everyone) is checked against the same cohort and
refused when its expected FPIR at this size exceeds the target, unless ``--accept-fpir`` covers
it. Either way the run prints the expected false alerts per 10,000 passers-by and the expected
miss rate before any frame is read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openlfr import paths

if TYPE_CHECKING:
    from openlfr.pipeline.detect_settings import DetectSettings

#: ``openlfr run``'s frame-age limit of the later stages on live sources (the embed service's default).
EMBED_MAX_FRAME_AGE_S = 5.0

#: The floor no subject's threshold goes below, as the registry's (``OPENLFR_REGISTRY_THRESHOLD_FLOOR``).
DEFAULT_FLOOR = 0.70


def add_run_parser(sub: argparse._SubParsersAction, backend_args) -> None:  # noqa: ANN001 - argparse internals
    """Add ``openlfr run``."""
    run = sub.add_parser("run", help="the whole pipeline on a video or camera and a watchlist folder",
                         description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--source", help="video file, image folder or camera URL (default: built sample)")
    run.add_argument("--watchlist", type=Path, help="folder with one folder of photos per subject")
    run.add_argument("--camera-id", dest="camera_id", default="cam-1", help="camera id of the source (default cam-1)")
    run.add_argument("--watchlist-id", dest="watchlist_id", default="default", help="watchlist id (default 'default')")
    run.add_argument("--json", action="store_true", help="one JSON line per alert on stdout")
    run.add_argument("--bus", choices=["embedded", "kafka"], default="embedded",
                     help="embedded: all stages in this process; kafka: feed the separate services")
    run.add_argument("--bootstrap", help="Kafka bootstrap servers with --bus kafka")
    run.add_argument("--sample-fps", dest="sample_fps", type=float, default=5.0, help="frames per second read (default 5)")
    run.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="frames per batch (default 8)")
    run.add_argument("--cohort", type=Path,
                     help="background cohort file (default build/cohort/default.npz; the sample builds its own)")
    run.add_argument("--target-fpir", dest="target_fpir", default="1/6000",
                     help="false alerts per stranger aimed at: 0.001, 1e-3 or 1/6000 (default 1/6000)")
    run.add_argument("--threshold", type=float, default=None,
                     help="one raw similarity score for every subject instead of per-subject thresholds; "
                          "refused when its expected FPIR exceeds --target-fpir unless --accept-fpir covers it")
    run.add_argument("--max-distance", dest="max_distance", type=float,
                     help="--threshold as a descriptor distance (score = 1 - distance/2)")
    run.add_argument("--accept-fpir", dest="accept_fpir", default=None,
                     help="the FPIR you accept for a --threshold above the target (0.01, 1/500, ...)")
    run.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                     help=f"raw score no subject's own threshold goes below (default {DEFAULT_FLOOR})")
    run.add_argument("--min-votes", dest="min_votes", type=int, help="frames of a track that must agree (default 3)")
    run.add_argument("--max-frame-age-s", dest="max_frame_age_s", type=float, default=None,
                     help="live sources: frames older than this are dropped (default: detect as the detect "
                          f"service, OPENLFR_MAX_FRAME_AGE_S or 1 s; embed {EMBED_MAX_FRAME_AGE_S:g} s)")
    run.add_argument("--realtime", action="store_true", help="pace video files at their frame rate")
    run.add_argument("--max-reconnects", dest="max_reconnects", type=int, default=5,
                     help="live sources: give up (exit 1) after so many reconnect attempts without a frame "
                          "(default 5; -1: for ever)")
    run.add_argument("--no-progress", dest="no_progress", action="store_true",
                     help="no progress bar for files (it shows only on a terminal anyway)")
    run.add_argument("--timeout-s", dest="timeout_s", type=float, default=600.0,
                     help="with --bus kafka: stop waiting for alerts after this long")
    run.add_argument("--settle-s", dest="settle_s", type=float, default=20.0,
                     help="with --bus kafka: end once the source has ended and no alert came for this long")
    backend_args(run)
    run.set_defaults(func=cmd_run)


def alert_line(alert: Any, *, as_json: bool) -> str:
    """One alert as a line: JSON with ``as_json``, else a readable summary."""
    if as_json:
        record = {
            "alert_id": alert.alert_id,
            "subject_id": alert.subject_id,
            "watchlist_id": alert.watchlist_id,
            "camera_id": alert.camera_id,
            "track_id": alert.track_id,
            "score": round(alert.score, 4),
            "margin": round(alert.margin, 4),
            "threshold": round(alert.threshold, 4),
            "capture_ts": alert.capture_ts,
            "frame_id": alert.frame_id,
            "trace_id": alert.trace_id,
            "embedder_model": alert.embedder_model,
        }
        if getattr(alert, "normalised_score", None) is not None:
            record["normalised_score"] = round(alert.normalised_score, 4)
            record["normalised_threshold"] = round(alert.normalised_threshold, 4)
            record["cohort"] = alert.cohort
        return json.dumps(record)
    when = time.strftime("%H:%M:%S", time.gmtime(alert.capture_ts))
    normalised = ""
    if getattr(alert, "normalised_score", None) is not None:
        normalised = f" normalised={alert.normalised_score:.2f}/{alert.normalised_threshold:.2f}"
    return (
        f"ALERT {alert.alert_id[:12]} subject={alert.subject_id} camera={alert.camera_id} "
        f"score={alert.score:.3f}{normalised} margin={alert.margin:.3f} captured={when}Z track={alert.track_id}"
    )


def largest_face(analyzer: Any) -> Any:
    """A ``locate`` function: the box of the largest face the analyzer finds in a photo."""
    import numpy as np

    def locate(image: Any) -> Any:
        faces = analyzer.analyze(image)
        if not len(faces):
            raise ValueError("no face in a sample photo")
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    return locate


#: onnxruntime intra-op threads per stage in ``openlfr run`` on a file unless ``--threads`` or
#: ``OPENLFR_THREADS`` says otherwise (per-stage ``OPENLFR_*_INTRA_OP_THREADS`` still win).
RUN_THREADS = 1


def is_live(source: str | None) -> bool:
    """Whether ``--source`` is a camera (a stream URL or a device number), not a file or the sample."""
    return source is not None and ("://" in source or source.strip().isdigit())


def run_settings(args: argparse.Namespace) -> DetectSettings:
    """The settings ``openlfr run`` builds its models and detect stage from: the detect service's
    (:class:`~openlfr.pipeline.detect_settings.DetectSettings`, from ``OPENLFR_*``) with the
    command's backend flags and ``--max-frame-age-s`` over them, and, on a file, :data:`RUN_THREADS`
    onnxruntime threads a stage unless the threads are set.

    Raises:
        pydantic.ValidationError: a bad setting.
    """
    from openlfr.cli import _settings
    from openlfr.pipeline.detect_settings import DetectSettings

    values: dict[str, Any] = {"max_frame_age_s": args.max_frame_age_s} if args.max_frame_age_s is not None else {}
    if args.threads is None and "OPENLFR_THREADS" not in os.environ and not is_live(args.source):
        # A file: the four stages share this process and its cores, one onnxruntime thread a
        # stage (8-10% less CPU than a pool per stage, about 12% more wall time,
        # docs/benchmarks.md). A live source keeps onnxruntime's default, as the services do:
        # there keeping up with the camera comes first.
        values["threads"] = RUN_THREADS
    return _settings(args, DetectSettings, **values)


def source_problem(source: str) -> str | None:
    """Why ``--source`` cannot give a frame, found before any model is loaded, or None.

    A camera (stream URL or device) is only checked for its scheme here: whether it answers is
    known once frames are read (``--max-reconnects``). An image folder must hold an image, and
    a file must be a video whose first frame decodes.
    """
    import cv2

    from openlfr.pipeline.sources import IMAGE_SUFFIXES, open_source

    try:
        open_source(source, realtime_files=False)  # the scheme or the file's kind; opens nothing
    except ValueError as exc:
        reason = str(exc)
        for said in (source.strip(), str(Path(source.strip()).expanduser())):
            reason = reason.removeprefix(f"{said}: ")
        return f"--source {source}: {reason}"
    if is_live(source):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            return f"--source {source}: an image folder with no image in it ({', '.join(sorted(IMAGE_SUFFIXES))})"
        return None
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # the refusal is ours to word, not FFmpeg's
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened() or not capture.grab():
            return f"--source {source}: cannot be read as a video (no frame decodes)"
    finally:
        capture.release()
    return None


def watchlist_problem(folder: Path) -> str | None:
    """Why the ``--watchlist`` folder cannot enrol anyone, by its layout alone (before any model is
    loaded), or None (:func:`openlfr.cli_support.folder_layout_problem`)."""
    from openlfr.cli_support import folder_layout_problem

    problem = folder_layout_problem(folder)
    return None if problem is None else f"--watchlist {folder}: {problem}"


def _fail(message: str, *, code: int = 2) -> int:
    print(f"openlfr run: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912, PLR0915 - one linear command
    """Run the whole pipeline in one process on a video or stream and a watchlist folder."""
    from pydantic import ValidationError

    from openlfr.cohort.cli import default_cohort_path
    from openlfr.cohort.cohort import Cohort
    from openlfr.cohort.exceptions import CohortError, ThresholdRefused
    from openlfr.cohort.policy import check_threshold, global_threshold_point, operating_point, parse_rate
    from openlfr.messages.signing import MatchSigner
    from openlfr.pipeline.alert import AlertSettings, AlertStage
    from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
    from openlfr.pipeline.detect_settings import build_detect_stage
    from openlfr.pipeline.embed import EmbedStage
    from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
    from openlfr.pipeline.embedded import EmbeddedPipeline
    from openlfr.pipeline.event_time import DEFAULT_MAX_CLOCK_SKEW_S
    from openlfr.pipeline.ingest import SourceUnreachable, open_source
    from openlfr.pipeline.match import MatchSettings, MatchStage
    from openlfr.pipeline.match_trust import StaticAuthority
    from openlfr.pipeline.samples import build_sample_cohort, build_samples
    from openlfr.service.settings import settings_error_lines
    from openlfr.vision.factory import build_analyzer
    from openlfr.watchlist.loader import enroll_folder
    from openlfr.watchlist.edge_store import EdgeStore
    from openlfr.watchlist.store import distance_to_score

    if args.bus == "kafka":
        from openlfr.pipeline.drive import drive_kafka

        return drive_kafka(args)
    # Every flag is checked before any model is loaded or frame read.
    source, watchlist = args.source, args.watchlist
    if (source is None) != (watchlist is None):
        return _fail("give both --source and --watchlist, or neither for the sample input")
    try:
        target = parse_rate(args.target_fpir, name="--target-fpir")
        accept = parse_rate(args.accept_fpir, name="--accept-fpir") if args.accept_fpir is not None else None
    except ValueError as exc:
        return _fail(str(exc))
    if args.threshold is not None and args.max_distance is not None:
        return _fail("--threshold and --max-distance name the same thing: give one")
    threshold = distance_to_score(args.max_distance) if args.max_distance is not None else args.threshold
    if args.max_distance is not None and not 0.0 < args.max_distance < 2.0:
        return _fail(f"--max-distance {args.max_distance:g}: must be in (0, 2)")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        return _fail(f"--threshold {threshold:g}: must be a similarity score in (0, 1]")
    if accept is not None and threshold is None:
        return _fail("--accept-fpir applies to a named --threshold; per-subject thresholds always meet --target-fpir")
    if not 0.0 < args.floor <= 1.0:
        return _fail(f"--floor {args.floor:g}: must be a similarity score in (0, 1]")
    if args.min_votes is not None and args.min_votes < 1:
        return _fail(f"--min-votes {args.min_votes}: must be at least 1")
    if watchlist is not None and not Path(watchlist).is_dir():
        return _fail(f"--watchlist {watchlist}: not a folder")
    if args.max_reconnects < -1:
        return _fail(f"--max-reconnects {args.max_reconnects}: must be -1 (for ever) or more")
    if not args.sample_fps > 0:
        return _fail(f"--sample-fps {args.sample_fps:g}: must be positive")
    if args.batch_size < 1:
        return _fail(f"--batch-size {args.batch_size}: must be at least 1")
    if source is not None and not is_live(source) and not Path(source).exists():
        return _fail(f"--source {source}: no such file or folder")
    problem = (source_problem(source) if source is not None else None) or (
        watchlist_problem(Path(watchlist)) if watchlist is not None else None)
    if problem is None and args.cohort is not None and not Path(args.cohort).is_file():
        problem = (f"--cohort: no cohort file at {args.cohort}; "
                   f"build one with `openlfr cohort build DIR --out {args.cohort}`")
    if problem is not None:
        return _fail(problem)

    try:
        settings = run_settings(args)
    except ValidationError as exc:
        for line in settings_error_lines(exc):
            print(f"openlfr run: {line}", file=sys.stderr)
        return 2
    analyzer = build_analyzer(settings)
    embedder = settings.embedder_version()
    cohort_path = args.cohort
    if source is None:
        from openlfr.cli import samples_dir

        samples = build_samples(samples_dir(), paths.build_dir() / "samples", locate=largest_face(analyzer))
        source, watchlist = str(samples.video), samples.watchlist
        if cohort_path is None:
            cohort_path = build_sample_cohort(samples_dir(), default_cohort_path(embedder, embed_mirror=settings.embed_mirror),
                                              analyzer=analyzer, settings=settings, model_version=embedder)
        print(f"openlfr run: sample input {source} with watchlist {watchlist} "
              f"(expect alerts for {', '.join(samples.expected_subjects)})", file=sys.stderr)
    try:
        cohort = Cohort.load(cohort_path or default_cohort_path(embedder, embed_mirror=settings.embed_mirror))
        cohort.check_model(embedder, embed_mirror=analyzer.embedder.mirror)
    except CohortError as exc:
        return _fail(str(exc))
    norm = cohort.norm()
    # Qdrant Edge in the process, as the services' default store: qdrant-client's local mode
    # searched the same few vectors but cost ~0.7 CPU s of imports at every start.
    store = EdgeStore(dim=analyzer.embedder.dim, model_version=embedder)
    try:
        report = enroll_folder(Path(watchlist), analyzer=analyzer, store=store, watchlist_id=args.watchlist_id, norm=norm)
        print(
            f"openlfr run: enrolled {len(report.enrolled)} subject(s), {report.images_enrolled} image(s); "
            f"refused {len(report.refused)}: {report.refused_by_reason() or '-'}",
            file=sys.stderr,
        )
        for subject, images in sorted(report.enrolled.items()):
            print(f"  {subject:<32} {images} reference image(s)", file=sys.stderr)
        if report.refused:
            width = max(len(str(r.path)) for r in report.refused)
            print(f"  {'refused file':<{width}}  reason", file=sys.stderr)
            for refused in report.refused:
                print(f"  {str(refused.path):<{width}}  {refused.reason}: {refused.detail}", file=sys.stderr)
        if not report.enrolled:
            return _fail(f"--watchlist {watchlist}: no subject could be enrolled, so nobody could be matched")
        size = len(report.enrolled)
        try:
            if threshold is None:
                point = operating_point(cohort.calibration, watchlist_size=size, target_fpir=target)
                deployment = ActiveDeployment(deployment_id="cli-run", watchlist_ids=(args.watchlist_id,),
                                              threshold=args.floor, snapshot_ts=time.time(), norm_threshold=point.threshold)
            else:
                point = global_threshold_point(cohort.calibration, threshold=threshold, watchlist_size=size)
                check_threshold(point, target_fpir=target, accept_fpir=accept,
                                flag="--max-distance" if args.max_distance is not None else "--threshold")
                deployment = ActiveDeployment(deployment_id="cli-run", watchlist_ids=(args.watchlist_id,),
                                              threshold=threshold, snapshot_ts=time.time())
        except ThresholdRefused as exc:
            return _fail(str(exc))
        print(f"openlfr run: {cohort.short_id} ({cohort.meta.get('people')} people); " + point.describe()
              + (f"; floor {args.floor:g}" if threshold is None else ""), file=sys.stderr)
        match_settings = MatchSettings(**({"min_votes": args.min_votes} if args.min_votes is not None else {}))
        try:  # OPENLFR_EMBED_SKIP_*: embed only the faces that can change a track's decision
            skip = EmbedSkip.from_settings(EmbedSkipSettings.for_match(match_settings))
        except ValidationError as exc:
            return _fail("; ".join(settings_error_lines(exc, prefix="OPENLFR_EMBED_SKIP_")))
        is_file = Path(source).exists()
        embed_max_age = args.max_frame_age_s if args.max_frame_age_s is not None else EMBED_MAX_FRAME_AGE_S
        # The stages share this process: a key of its own signs and verifies its matches, and the
        # alert stage checks them against the one deployment and the subjects just enrolled.
        signer = MatchSigner.ephemeral()
        authority = StaticAuthority.for_run(deployment, camera_ids=[args.camera_id],
                                            subjects={s: args.watchlist_id for s in report.enrolled})
        # Files are read faster than real time: their capture times run ahead of the clock.
        skew = None if is_file else DEFAULT_MAX_CLOCK_SKEW_S
        pipeline = EmbeddedPipeline(
            # The detect service's stage, gate included, from the same settings. Files are read as
            # fast as they can be processed, so their frames are never "stale".
            detect=build_detect_stage(settings, analyzer=analyzer, live=not is_file),
            embed=EmbedStage(analyzer.embedder, embedder_model=embedder,
                             max_frame_age_s=None if is_file else embed_max_age, skip=skip),
            match=MatchStage(match_settings, store=store, gate=StaticGate(deployment), norm=norm, signer=signer,
                             max_clock_skew_s=skew),
            alert=AlertStage(AlertSettings(), signer=signer, authority=authority, max_clock_skew_s=skew),
            batch_size=args.batch_size,
        )
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # a lost stream is reported by us, not FFmpeg
        import cv2

        cv2.setLogLevel(2)  # OpenCV's own log: errors only (2 = LOG_LEVEL_ERROR)
        frame_source = open_source(source, realtime_files=args.realtime,
                                   max_reconnects=None if args.max_reconnects < 0 else args.max_reconnects)
        bar = _progress_bar(source, sample_fps=args.sample_fps, disabled=args.no_progress or not is_file)
        try:
            summary = pipeline.run(
                [(args.camera_id, frame_source)],
                sample_fps=args.sample_fps,
                on_alert=lambda alert: (bar.write(alert_line(alert, as_json=args.json), file=sys.stdout)
                                        if bar is not None else print(alert_line(alert, as_json=args.json), flush=True)),
                progress=(lambda s: bar.update(s.frames_processed - bar.n)) if bar is not None else None,
            )
        except SourceUnreachable as exc:
            return _fail(f"--source: {exc}", code=1)
        finally:
            if bar is not None:
                bar.close()
        if args.json:
            print("openlfr run summary: " + json.dumps(summary.as_dict()), file=sys.stderr)
        else:
            print(f"openlfr run: {summary.describe()}", file=sys.stderr)
        return 130 if summary.interrupted else 0
    finally:
        store.close()  # removes its temporary folder


def _progress_bar(source: str, *, sample_fps: float, disabled: bool) -> Any:
    """A bar of frames processed out of the frames a video file will give at ``sample_fps`` (None
    for live sources and folders, or when ``disabled``; tqdm hides it off a terminal)."""
    if disabled or Path(source).is_dir():
        return None
    import cv2
    from tqdm import tqdm

    capture = cv2.VideoCapture(source)
    try:
        frames, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if not frames > 0 or not fps > 0:
        return None
    total = math.ceil(frames * min(1.0, sample_fps / fps))
    return tqdm(total=total, unit="frame", desc="openlfr run", file=sys.stderr, disable=None, leave=False)
