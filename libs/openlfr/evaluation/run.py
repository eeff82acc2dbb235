"""One evaluation run: images -> live-path embeddings -> 1:1, 1:N, groups, tracks, calibration -> files.

The figures come from :mod:`openlfr.evaluation.metrics`, ``identification``, ``groups``,
``tracks`` and ``calibration``; the run decides which images play which part, counts what
could not be used, and writes ``metrics.json``, ``report.md``, ``report.html``,
``calibration.json`` and ``plots/*.svg`` into the output folder. It is split by section:

* ``run_common``: the run's choices (``EvaluationConfig``), the usable image (``Sample``) and
  the JSON and curve helpers every part shares (``rate_key``, ``clean_json``, ``thin_curve``);
* ``run_pairs``: the 1:1 pair scores and the ``verification`` figures;
* ``run_gallery``: the 1:N gallery and searches, ``identification`` and FPIR against gallery size;
* ``run_groups``: the figures by group;
* this module: the samples and what happened to every input, tracks, calibration, the run
  itself and its plots. ``EvaluationConfig`` and ``rate_key`` are importable from here too.

Who plays which part (all draws seeded by ``EvaluationConfig.seed``):

* Every usable image is one face: the largest the analyzer found (an identity-labelled image
  shows one person; a second, smaller face is a bystander or a false detection). Images that
  cannot be read or decoded, images with no face, and byte-identical copies of an earlier
  image are counted in ``inputs`` with the reason and left out.
* 1:1 verification: every pair of usable images; same identity = genuine, else impostor
  (linked identities were merged by the dataset loader). Above ``MAX_IMPOSTOR_PAIRS`` a
  seeded uniform sample of impostor pairs is kept (the figures say so).
* 1:N open-set identification: a gallery of ``gallery_size`` identities (default: half of those
  with more images than ``enrol_images``). Each enrolled identity's first ``enrol_images``
  images by path are its references; its other images are mated searches; every image of a
  non-enrolled identity is a non-mated search. Identities with too few images to leave a
  mated search are enrolled only when the gallery needs more than half of the others.
* FPIR against gallery size: the non-mated searches against random sub-galleries of the
  evaluation gallery (``identification.fpir_vs_gallery_size``), beside the independence model
  ``1 - (1 - FMR) ** N``, which alone extrapolates to larger watchlists.
* Groups: per attribute column, FMR and FNMR at one shared threshold (the 1:1 threshold of
  ``group_fmr`` over all impostor pairs, or ``group_threshold``), impostors within the group as NIST counts them, and
  FPIR/FNIR of the 1:N searches at the ``fpir_targets[0]`` threshold, with identity-resampled
  bootstrap intervals and the worst-to-best ratios.
* Tracks: the mated searches of each enrolled identity cut into sequences of ``track_length``
  images, and likewise the images of non-enrolled identities, scored by the match stage's vote.
* Calibration: the threshold for ``target_fpir`` on a watchlist of ``watchlist_size``
  identities (``calibration.calibrate``) and the share of alerts that would be wrong at the
  assumed ``prevalence``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from openlfr.evaluation import calibration as cal_mod
from openlfr.evaluation import identification as ident
from openlfr.evaluation import metrics as met
from openlfr.evaluation import plots
from openlfr.evaluation import tracks as tracks_mod
from openlfr.evaluation.dataset import Dataset
from openlfr.evaluation.embeddings import AnalysisVersion, EmbeddingCache, ImageAnalyzer, analyse_files
from openlfr.evaluation.run_common import EvaluationConfig, Sample, clean_json, rate_key, thin_curve
from openlfr.evaluation.run_gallery import choose_gallery, gallery_size_sweep, identification_figures
from openlfr.evaluation.run_groups import draw_group_plots, group_figures
from openlfr.evaluation.run_pairs import Pairs, pair_scores, verification_figures

__all__ = [
    "EvaluationConfig", "Inputs", "RunOutput", "Sample", "collect_samples", "data_fingerprint", "rate_key",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

SCHEMA = "openlfr.evaluation/1"

#: File type of the plots: ``svg`` (sharp at any zoom, small) or ``png``.
PLOT_FORMAT = "svg"
#: Problems listed one by one in ``metrics.json`` (all are counted).
MAX_LISTED_PROBLEMS = 1000
#: Prevalences the wrong-alert table shows besides the configured one.
PREVALENCE_TABLE = (1e-2, 1e-3, 1e-4, 1e-5)
#: Watchlist sizes the threshold is also calibrated for, besides the configured one.
CALIBRATION_SIZES = (100, 1000, 10_000)


@dataclass(slots=True)
class Inputs:
    """What happened to every input entry."""

    listed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)
    multiple_faces: int = 0
    policy_refusals: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)
    every_failure: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, key: str, reason: str, detail: str, *, count: bool = True) -> None:
        """Record an entry that was not used (``count``: a failure, not a skipped entry)."""
        if count:
            self.failed[reason] += 1
        self.every_failure.append((key, reason))
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append({"path": key, "reason": reason, "detail": detail})


def _largest(faces: Any) -> int:
    return int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunOutput:
    """Where a run wrote its files, and its metrics."""

    out_dir: Path
    metrics: dict[str, Any]
    metrics_path: Path
    report_md: Path
    report_html: Path
    calibration_path: Path | None


def collect_samples(
    dataset: Dataset,
    *,
    analyzer: ImageAnalyzer | None,
    cache: EmbeddingCache | None,
    apply_policy_checks: bool = True,
    progress: bool = True,
    batch_size: int = 8,
) -> tuple[list[Sample], Inputs]:
    """Analyse every image of ``dataset`` (cached) and sort it into usable samples and problems."""
    from openlfr.watchlist.loader import ReferencePolicy

    inputs = Inputs(listed=len(dataset.images) + len(dataset.skipped), skipped=dataset.skipped_by_reason())
    for item in dataset.skipped:
        # Label rows of other kinds, or without an identity, are the labels' own filtering: counted only.
        if item.reason not in ("excluded_kind", "no_identity"):
            inputs.problem(item.key, item.reason, item.detail, count=False)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset.images), desc="faces", unit="img", leave=False)
    try:
        results = analyse_files(
            [image.path for image in dataset.images], analyzer=analyzer, cache=cache, batch_size=batch_size,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    policy = ReferencePolicy()
    samples: list[Sample] = []
    first_of: dict[str, tuple[str, str]] = {}
    for image, result in zip(dataset.images, results, strict=True):
        if result.faces is None:
            inputs.problem(image.key, "unreadable", result.error)
            continue
        if result.sha256 in first_of:
            other_key, other_identity = first_of[result.sha256]
            detail = f"same content as {other_key}"
            if other_identity != image.identity:
                detail += f", which is labelled {other_identity!r} (not {image.identity!r}): a label conflict"
            inputs.problem(image.key, "duplicate", detail)
            continue
        first_of[result.sha256] = (image.key, image.identity)
        faces = result.faces
        if len(faces) == 0:
            inputs.problem(image.key, "no_face", "the analyzer found no face")
            continue
        if len(faces) > 1:
            inputs.multiple_faces += 1
        i = _largest(faces)
        refusal = None
        if apply_policy_checks:
            problem = policy.refusal(faces)
            refusal = problem[0] if problem is not None else None
            if refusal is not None:
                inputs.policy_refusals[refusal] += 1
        if faces.embeddings is None:
            raise RuntimeError("the analyzer returned faces without embeddings")
        samples.append(
            Sample(
                key=image.key, identity=image.identity, sha256=result.sha256,
                embedding=np.asarray(faces.embeddings[i], np.float32), quality=float(faces.quality.score[i]),
                refusal=refusal,
            )
        )
    if cache is not None:
        logger.info('embedding cache hits="%d" misses="%d" folder="%s"', cache.hits, cache.misses, cache.folder)
    return samples, inputs


def data_fingerprint(dataset: Dataset, samples: Sequence[Sample], inputs: Inputs) -> str:
    """SHA-256 over what was evaluated: each used image's path, identity and content hash, the
    failed entries and the attributes (so two runs with one fingerprint saw the same data)."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.key):
        digest.update(f"{sample.key}\t{sample.identity}\t{sample.sha256}\n".encode())
    for key, reason in sorted(inputs.every_failure):
        digest.update(f"!{key}\t{reason}\n".encode())
    for key in sorted(dataset.attributes):
        digest.update(f"@{key}\t{json.dumps(dataset.attributes[key], sort_keys=True)}\n".encode())
    return digest.hexdigest()


def _tracks(
    result: ident.OpenSetResult,
    probes: Sequence[Sample],
    thresholds: Sequence[tuple[str, float]],
    config: EvaluationConfig,
) -> dict[str, Any]:
    length = config.track_length
    n_mated = result.n_mated
    mated_by_identity: dict[str, list[int]] = {}
    nonmated_by_identity: dict[str, list[int]] = {}
    for i, sample in enumerate(probes):
        (mated_by_identity if i < n_mated else nonmated_by_identity).setdefault(sample.identity, []).append(i)
    top_identity = np.asarray(result.identities, dtype=object)[np.argmax(result.nonmated_identity_scores, axis=1)]

    def chunks(rows: list[int]) -> list[list[int]]:
        return [rows[s : s + length] for s in range(0, len(rows) - length + 1, length)]

    mated_tracks = [c for rows in mated_by_identity.values() for c in chunks(rows)]
    nonmated_tracks = [c for rows in nonmated_by_identity.values() for c in chunks(rows)]
    base = {
        "track_length": length,
        "min_votes": config.min_votes,
        "n_tracks_mated": len(mated_tracks),
        "n_tracks_nonmated": len(nonmated_tracks),
        "method": (
            f"tracks of {length} different images of one person (mated: the mated searches of an enrolled "
            f"identity; non-mated: images of a non-enrolled identity), cut in path order; a frame votes for "
            f"its top subject at or above the threshold and a track matches after {config.min_votes} votes for one "
            "subject, as the match stage decides (its margin rule and quality gate not modelled). Photos of a "
            "person are less alike than consecutive video frames, so the gain here is an upper bound of a "
            "camera's."
        ),
    }
    if not mated_tracks or not nonmated_tracks:
        return {**base, "available": False,
                "reason": f"need identities with at least {length} searches on both sides "
                          f"(mated tracks {len(mated_tracks)}, non-mated {len(nonmated_tracks)})"}
    rows = []
    for label, threshold in thresholds:
        if not math.isfinite(threshold):
            continue
        for votes in sorted({1, config.min_votes}):
            r = tracks_mod.track_level(
                [result.mated_scores[c] for c in mated_tracks],
                [result.nonmated_top[[i - n_mated for i in c]] for c in nonmated_tracks],
                threshold=threshold,
                min_votes=votes,
                nonmated_subjects=[[str(top_identity[i - n_mated]) for i in c] for c in nonmated_tracks],
            )
            rows.append({"label": label, **clean_json(asdict(r))})
    return {**base, "available": bool(rows), "results": rows}


def _calibration(
    pairs: Pairs,
    result: ident.OpenSetResult | None,
    config: EvaluationConfig,
    watchlist_size: int,
    model_version: str,
) -> tuple[dict[str, Any], dict[str, Any] | None, cal_mod.Calibration | None]:
    # The comparisons a deployment makes: a face in the crowd against an enrolled person. Pairs of
    # two crowd faces (which all 1:1 impostor pairs include) never happen in a search.
    if result is not None:
        impostor = result.impostor_scores
        impostor_source = "the evaluation's search-to-enrolled-identity impostor comparisons"
    else:
        impostor, impostor_source = pairs.impostor, "all 1:1 impostor image pairs (no open-set data)"
    mated: ident.OpenSetResult | np.ndarray | None = result if result is not None else (
        pairs.genuine if pairs.genuine.size else None)
    if impostor.size == 0 or mated is None:
        return {"available": False, "reason": "no impostor comparisons or no mated data"}, None, None
    try:
        cal = cal_mod.calibrate(impostor, mated, target_fpir=config.target_fpir, gallery_size=watchlist_size)
    except ValueError as exc:
        return {"available": False, "reason": str(exc)}, None, None
    config_out = cal_mod.calibration_config(cal)
    config_out["model_version"] = model_version
    wrong: dict[str, Any] = {}
    for p in sorted(set(PREVALENCE_TABLE) | {config.prevalence}, reverse=True):
        try:
            share = cal_mod.wrong_alert_share(fpir=cal.expected_fpir, tpir=cal.expected_tpir, prevalence=p)
        except ValueError:
            share = math.nan
        accuracy = (1 - p) * (1 - cal.expected_fpir) + p * cal.expected_tpir
        wrong[f"{p:g}"] = {"prevalence": p, "wrong_alert_share": share, "accuracy_per_face": accuracy}
    from openlfr.registry.settings import RegistrySettings

    floor = float(RegistrySettings.model_fields["threshold_floor"].default)
    out = {
        "available": True,
        **clean_json(asdict(cal)),
        "distance": 2.0 * (1.0 - cal.threshold),
        "impostor_source": impostor_source,
        "prevalence": config.prevalence,
        "wrong_alert_share": wrong[f"{config.prevalence:g}"]["wrong_alert_share"],
        "accuracy_per_face": wrong[f"{config.prevalence:g}"]["accuracy_per_face"],
        "by_prevalence": clean_json(list(wrong.values())),
        "registry_threshold_floor": floor,
        "below_registry_floor": cal.threshold < floor,
        "config": clean_json(config_out),
        "by_watchlist_size": _calibration_sizes(impostor, mated, config, watchlist_size),
    }
    return clean_json(out), config_out, cal


def _calibration_sizes(
    impostor: np.ndarray, mated: ident.OpenSetResult | np.ndarray, config: EvaluationConfig, watchlist_size: int
) -> list[dict[str, Any]]:
    """The calibrated threshold for the same target FPIR on other watchlist sizes."""
    rows = []
    for size in sorted(set(CALIBRATION_SIZES) | {watchlist_size}):
        try:
            c = cal_mod.calibrate(impostor, mated, target_fpir=config.target_fpir, gallery_size=size)
        except ValueError as exc:
            rows.append({"gallery_size": size, "available": False, "reason": str(exc)})
            continue
        try:
            share = cal_mod.wrong_alert_share(fpir=c.expected_fpir, tpir=c.expected_tpir, prevalence=config.prevalence)
        except ValueError:
            share = math.nan
        rows.append({
            "gallery_size": size, "available": True, "threshold": c.threshold, "method": c.method,
            "per_comparison_fmr": c.per_comparison_fmr, "expected_tpir": c.expected_tpir,
            "wrong_alert_share": share,
        })
    return clean_json(rows)


def run_evaluation(
    dataset: Dataset,
    *,
    out_dir: Path,
    analyzer: ImageAnalyzer | None,
    cache: EmbeddingCache | None,
    version: AnalysisVersion,
    config: EvaluationConfig | None = None,
    model_version: str = "",
    command: str = "",
    calibration_out: Path | None = None,
    progress: bool = True,
    cohort: Any = None,
) -> RunOutput:
    """Evaluate ``dataset`` and write every output file into ``out_dir``.

    Args:
        dataset: the labelled images (``dataset.load_dataset``).
        out_dir: where the files go (created).
        analyzer: the live analyzer (None only if every image is cached).
        cache: the embedding cache (None to analyse every image).
        version: what produced the faces (recorded; the cache is keyed by it).
        config: the run's choices (defaults when None).
        model_version: the embedding model's version, as alerts cite it.
        command: the command line, recorded in the outputs.
        calibration_out: where the deployment threshold file goes (default
            ``out_dir/calibration.json``).
        progress: show a progress bar on stderr.
        cohort: a background cohort (``openlfr.cohort.cohort.Cohort``) of the same model: the
            figures are also computed on per-subject (normalised) scores (``normalised``).
    """
    from openlfr.evaluation import report as report_mod

    config = config or EvaluationConfig()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    samples, inputs = collect_samples(dataset, analyzer=analyzer, cache=cache, progress=progress)
    analysed_s = time.perf_counter() - started
    by_identity: dict[str, list[Sample]] = {}
    for sample in samples:
        by_identity.setdefault(sample.identity, []).append(sample)
    by_identity = dict(sorted(by_identity.items()))
    identity_names = list(by_identity)
    code_of = {name: i for i, name in enumerate(identity_names)}
    labelled_identities = {image.identity for image in dataset.images}
    sizes = Counter(len(s) for s in by_identity.values())

    metrics: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "software": {"python": platform.python_version(), "numpy": np.__version__, "openlfr": _package_version()},
        "model": {"version": model_version, "analysis_key": version.key, **version.parts},
        "score": "similarity = clip(1 - euclidean_distance / 2, 0, 1); a match is a score at or above the threshold",
        "config": clean_json(asdict(config)),
    }
    inputs_json: dict[str, Any] = {
        "listed": inputs.listed,
        "images": len(dataset.images),
        "used": len(samples),
        "skipped": inputs.skipped,
        "failed": dict(sorted(inputs.failed.items())),
        "multiple_faces_largest_used": inputs.multiple_faces,
        "identities_labelled": len(labelled_identities),
        "identities_used": len(by_identity),
        "identities_without_usable_image": len(labelled_identities - set(by_identity)),
        "single_image_identities": sizes.get(1, 0),
        "identities_with_2plus_images": sum(n for k, n in sizes.items() if k >= 2),
        "merged_identities": dataset.merged,
        "enrolment_policy_would_refuse": dict(sorted(inputs.policy_refusals.items())),
        "enrolment_policy_applied": config.apply_enrolment_policy,
        "problems": inputs.problems,
        "problems_listed": len(inputs.problems),
        "cache": None if cache is None else {"folder": str(cache.folder), "hits": cache.hits, "misses": cache.misses},
    }
    metrics["inputs"] = inputs_json
    metrics["data"] = {
        **dataset.sources,
        "layout": dataset.layout,
        "fingerprint": data_fingerprint(dataset, samples, inputs),
        "attribute_columns": dataset.attribute_columns,
        "images_with_attributes": sum(1 for s in samples if s.key in dataset.attributes),
    }
    notes: list[str] = []
    if sizes.get(1, 0):
        notes.append(f"{sizes[1]} identities have one usable image: they add impostor pairs and non-mated "
                     "searches (or gallery entries) but no genuine pair or mated search.")

    # 1:1
    codes = np.array([code_of[s.identity] for s in samples], dtype=np.int64)
    pairs = pair_scores(samples, codes, seed=config.seed) if len(samples) >= 2 else Pairs(
        np.zeros(0), np.zeros(0), np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), False, 0)
    verification, summary = verification_figures(pairs, config)
    metrics["verification"] = verification
    metrics["eer"] = verification.get("eer")
    metrics["eer_threshold"] = verification.get("eer_threshold")
    metrics["fnmr_at_fmr"] = verification.get("fnmr_at_fmr", {})

    # 1:N
    gallery = choose_gallery(by_identity, config) if by_identity else "no usable image"
    result: ident.OpenSetResult | None = None
    probes: list[Sample] = []
    if isinstance(gallery, str):
        identification: dict[str, Any] = {"available": False, "reason": gallery}
    else:
        identification, result, probes = identification_figures(gallery, config)
    metrics["identification"] = identification
    metrics["gallery_size"] = identification.get("gallery_size")
    metrics["fnir_at_fpir"] = identification.get("fnir_at_fpir", {})
    metrics["rank1"] = identification.get("rank1")
    watchlist_size = config.watchlist_size or identification.get("gallery_size") or 1

    # Calibration (before the sweep and tracks, which also read its threshold).
    calibration, calibration_config, cal = _calibration(pairs, result, config, watchlist_size, model_version)
    metrics["calibration"] = calibration
    op_threshold = math.nan
    if result is not None:
        first = metrics["fnir_at_fpir"].get(rate_key(config.fpir_targets[0]), {})
        op_threshold = first.get("threshold") if first.get("threshold") is not None else math.nan
    thresholds = [(f"FPIR {rate_key(config.fpir_targets[0])} on the evaluation gallery", float(op_threshold))]
    if cal is not None:
        thresholds.append((f"calibrated: FPIR {rate_key(config.target_fpir)} at N={watchlist_size}", cal.threshold))

    def tail_fmr(threshold: float) -> float | None:
        if cal is not None and threshold == cal.threshold and cal.method != "empirical":
            return cal.fmr_at_threshold
        return None

    metrics["fpir_vs_gallery_size"] = gallery_size_sweep(
        result, thresholds, tail_fmr=tail_fmr, config=config, watchlist_size=watchlist_size
    ) if result is not None else {"available": False, "reason": "no open-set identification"}
    metrics["tracks"] = _tracks(result, probes, thresholds, config) if result is not None else {
        "available": False, "reason": "no open-set identification"}

    plot_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    open_set_for_groups = (result, probes, float(op_threshold)) if result is not None else None
    metrics["groups"] = group_figures(
        dataset, by_identity, pairs, identity_names, summary, open_set_for_groups, config, plot_curves
    )
    if not dataset.attribute_columns:
        notes.append("No attributes were given (--attributes): no figures by group.")
    if cohort is not None:
        from openlfr.evaluation.normalised import normalised_figures

        if len(samples) >= 2:
            metrics["normalised"] = normalised_figures(
                dataset=dataset, samples=samples, by_identity=by_identity, identity_names=identity_names,
                codes=codes, gallery=gallery, config=config, cohort=cohort, watchlist_size=watchlist_size,
            )
        else:
            metrics["normalised"] = {"available": False, "reason": "fewer than two usable images"}
    metrics["notes"] = notes

    metrics["plots"] = _draw(metrics, pairs, summary, result, plot_curves, plot_dir, config)
    metrics["runtime_s"] = {"analysis": round(analysed_s, 2), "total": round(time.perf_counter() - started, 2)}
    metrics = clean_json(metrics)

    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    calibration_path = None
    if calibration_config is not None:
        calibration_path = Path(calibration_out) if calibration_out is not None else out_dir / "calibration.json"
        calibration_path.parent.mkdir(parents=True, exist_ok=True)
        calibration_path.write_text(json.dumps(clean_json(calibration_config), indent=2) + "\n", encoding="utf-8")
    report_md, report_html = report_mod.write_reports(metrics, out_dir)
    logger.info('evaluation written out_dir="%s" seconds="%.1f"', out_dir, time.perf_counter() - started)
    return RunOutput(out_dir=out_dir, metrics=metrics, metrics_path=metrics_path, report_md=report_md,
                     report_html=report_html, calibration_path=calibration_path)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openlfr")
    except PackageNotFoundError:
        return "unknown"


def _draw(
    metrics: Mapping[str, Any],
    pairs: Pairs,
    summary: met.VerificationSummary | None,
    result: ident.OpenSetResult | None,
    group_curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    plot_dir: Path,
    config: EvaluationConfig,
) -> dict[str, dict[str, str]]:
    """Draw every plot the data allows; name -> {file (relative to the output folder), title}."""
    out: dict[str, dict[str, str]] = {}

    def add(name: str, title: str, draw: Callable[[Path], Path]) -> None:
        path = draw(plot_dir / f"{name}.{PLOT_FORMAT}")
        out[name] = {"file": f"plots/{path.name}", "title": title}

    if summary is not None:
        curve = met.verification_curve(pairs.genuine, pairs.impostor)
        marks = [(t, f"FMR {rate_key(t)}") for t in config.fmr_targets]
        add("det_verification", "1:1 DET: FNMR against FMR", lambda p: plots.det_curves(
            p, {"all": thin_curve(curve.fmr, curve.fnmr)}, title="1:1 verification DET",
            x_label="FMR", y_label="FNMR", marks=marks))
        verification = metrics["verification"]
        lines = [(summary.eer_threshold, f"EER {summary.eer:.3f}")]
        lines += [(p.threshold, f"FMR {rate_key(t)}") for t, p in summary.fnmr_at_fmr.items()
                  if math.isfinite(p.threshold)]
        cal = metrics.get("calibration", {})
        if cal.get("available"):
            lines.append((cal["threshold"], "calibrated"))
        add("scores", "Genuine and impostor score distributions", lambda p: plots.score_histograms(
            p, {"genuine": pairs.genuine, "impostor": pairs.impostor},
            title=f"1:1 scores ({verification['n_genuine']:,} genuine, {verification['n_impostor']:,} impostor)",
            thresholds=lines))
    if result is not None:
        marks = [(t, f"FPIR {rate_key(t)}") for t in config.fpir_targets]
        add("det_identification", "1:N DET: FNIR against FPIR", lambda p: plots.det_curves(
            p, {f"N={result.gallery_size}": thin_curve(result.fpir, result.fnir)},
            title=f"1:N open-set DET (gallery {result.gallery_size}, {result.n_mated} mated, "
                  f"{result.n_nonmated} non-mated searches)", x_label="FPIR", y_label="FNIR", marks=marks))
    sweep = metrics.get("fpir_vs_gallery_size", {})
    if sweep.get("available"):
        for index, curve_json in enumerate(sweep["curves"]):
            measured = [(p["size"], p["fpir_measured"]) for p in curve_json["points"]]
            top = max(p["size"] for p in curve_json["extrapolated"])
            grid = np.unique(np.geomspace(1, top, 60).round().astype(int))
            model = [(int(s), ident.extrapolate_fpir(curve_json["fmr1"], int(s))) for s in grid]
            watchlist = metrics["calibration"].get("gallery_size") if metrics["calibration"].get("available") else None
            marks = [(watchlist, f"watchlist {watchlist}")] if watchlist else []
            add(f"fpir_vs_gallery_{index}", f"FPIR against gallery size at {curve_json['label']}",
                lambda p, m=measured, mo=model, c=curve_json, mk=marks: plots.fpir_vs_gallery(
                    p, measured=m, model=mo, marks=mk,
                    title=f"FPIR vs gallery size, threshold {c['threshold']:.4f}"))
    label = "group threshold" if config.group_threshold is not None else f"FMR {config.group_fmr:g} overall"
    draw_group_plots(metrics["groups"], group_curves, add, threshold_label=label)
    return out
