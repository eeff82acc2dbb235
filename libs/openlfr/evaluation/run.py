"""One evaluation run: images -> live-path embeddings -> 1:1, 1:N, groups, tracks, calibration -> files.

The figures come from :mod:`openlfr.evaluation.metrics`, ``identification``, ``groups``,
``tracks`` and ``calibration``; this module only decides which images play which part,
counts what could not be used, and writes ``metrics.json``, ``report.md``, ``report.html``,
``calibration.json`` and ``plots/*.svg`` into the output folder.

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

from openlfr.cohort.norm import normalise_arrays
from openlfr.evaluation import calibration as cal_mod
from openlfr.evaluation import groups as groups_mod
from openlfr.evaluation import identification as ident
from openlfr.evaluation import metrics as met
from openlfr.evaluation import plots
from openlfr.evaluation import tracks as tracks_mod
from openlfr.evaluation.dataset import Dataset
from openlfr.evaluation.embeddings import AnalysisVersion, EmbeddingCache, ImageAnalyzer, analyse_files

logger = logging.getLogger(__name__)

SCHEMA = "openlfr.evaluation/1"

#: Impostor pairs kept for the 1:1 figures; beyond it a seeded uniform sample is used.
MAX_IMPOSTOR_PAIRS = 5_000_000
#: Probe-by-template scores one open-set evaluation may hold in memory.
MAX_OPEN_SET_SCORES = 60_000_000
#: File type of the plots: ``svg`` (sharp at any zoom, small) or ``png``.
PLOT_FORMAT = "svg"
#: Points kept of a curve for plotting.
MAX_CURVE_POINTS = 400
#: Problems listed one by one in ``metrics.json`` (all are counted).
MAX_LISTED_PROBLEMS = 1000
#: Prevalences the wrong-alert table shows besides the configured one.
PREVALENCE_TABLE = (1e-2, 1e-3, 1e-4, 1e-5)
#: Watchlist sizes the FPIR model is extrapolated to besides the configured one.
EXTRAPOLATION_SIZES = (1, 10, 100, 1000, 10_000, 100_000)
#: Watchlist sizes the threshold is also calibrated for, besides the configured one.
CALIBRATION_SIZES = (100, 1000, 10_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationConfig:
    """The choices of one evaluation run.

    Attributes:
        gallery_size: identities enrolled in the 1:N gallery; None for half of those with
            more than ``enrol_images`` usable images.
        enrolled: explicit gallery identities (overrides ``gallery_size`` and the draw).
        enrol_images: reference images per enrolled identity.
        fmr_targets: 1:1 FMR targets of ``fnmr_at_fmr``.
        fpir_targets: 1:N FPIR targets of ``fnir_at_fpir``.
        target_fpir: the FPIR the calibrated threshold is for.
        watchlist_size: the deployment's watchlist size the threshold is for (None: the
            evaluation gallery's size).
        prevalence: assumed share of searched faces that are on the watchlist.
        group_fmr: the overall FMR whose threshold the per-group 1:1 figures are read at.
        group_threshold: a score to read the per-group 1:1 figures at instead (e.g. a
            deployment's threshold).
        seed: seed of every draw (gallery, sweep, impostor sample, bootstrap).
        track_length: images per synthetic track.
        min_votes: votes a track needs to match (the match stage's ``min_votes``).
        n_boot: bootstrap resamples per interval.
        apply_enrolment_policy: references must pass the registry's enrolment checks
            (``ReferencePolicy``); otherwise those checks are only counted.
        min_group_identities: groups with fewer identities are warned about.
    """

    gallery_size: int | None = None
    enrolled: tuple[str, ...] | None = None
    enrol_images: int = 1
    fmr_targets: tuple[float, ...] = (1e-3, 1e-4)
    fpir_targets: tuple[float, ...] = (0.01, 0.001, 1 / 6000)
    target_fpir: float = 1 / 6000
    watchlist_size: int | None = None
    prevalence: float = 1e-4
    group_fmr: float = 1e-3
    group_threshold: float | None = None
    seed: int = 0
    track_length: int = 5
    min_votes: int = 3
    n_boot: int = 1000
    apply_enrolment_policy: bool = False
    min_group_identities: int = groups_mod.MIN_IDENTITIES

    def __post_init__(self) -> None:
        for name in ("fmr_targets", "fpir_targets"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name}: at least one target is needed")
            for value in values:
                met.check_rate(value, name=name)
        met.check_rate(self.target_fpir, name="target_fpir")
        met.check_rate(self.group_fmr, name="group_fmr")
        if self.group_threshold is not None:
            met.check_threshold(self.group_threshold, name="group_threshold")
        if not 0.0 < self.prevalence < 1.0:
            raise ValueError(f"prevalence must be in (0, 1), got {self.prevalence!r}")
        for name in ("enrol_images", "track_length", "min_votes", "n_boot", "min_group_identities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("gallery_size", "watchlist_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if self.min_votes > self.track_length:
            raise ValueError(f"min_votes ({self.min_votes}) cannot exceed track_length ({self.track_length})")


@dataclass(frozen=True, slots=True)
class Sample:
    """One usable image: its largest face's embedding and what the enrolment checks say of it."""

    key: str
    identity: str
    sha256: str
    embedding: np.ndarray
    quality: float
    refusal: str | None


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


# -- small helpers -----------------------------------------------------------------------------


def rate_key(rate: float) -> str:
    """The JSON key of a target rate: its short decimal (``"0.01"``, ``"0.0001"``, ``"0.2"``), or
    ``"1/6000"`` for a reciprocal whose decimal does not end (1/6000 = 0.000166...)."""
    rate = float(rate)
    if len(repr(rate)) <= 8:
        return f"{rate:g}"
    inverse = 1.0 / rate
    if abs(inverse - round(inverse)) < 1e-6 * inverse:
        return f"1/{int(round(inverse))}"
    return f"{rate:.4g}"


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def clean_json(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean_json(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite(value)
    return value


def thin_curve(x: np.ndarray, y: np.ndarray, *, max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a curve, evenly spread in log(x), ends kept (for plotting)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size <= max_points:
        return x, y
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    positions = np.unique(np.concatenate([
        [0, x.size - 1],
        np.searchsorted(x, np.geomspace(max(x[x > 0].min(initial=1e-12), 1e-12), max(x.max(), 1e-12), max_points)),
    ]).clip(0, x.size - 1))
    return x[positions], y[positions]


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


@dataclass(slots=True)
class _Pairs:
    """1:1 pair scores with the identity codes of their two sides."""

    genuine: np.ndarray
    impostor: np.ndarray
    genuine_ids: np.ndarray  # (n, 2) identity codes
    impostor_ids: np.ndarray
    impostor_sampled: bool
    impostor_total: int


def _pair_scores(
    samples: Sequence[Sample],
    codes: np.ndarray,
    *,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> _Pairs:
    """Every pair's score (a seeded sample of impostors above ``MAX_IMPOSTOR_PAIRS``); with
    ``stats`` (per-sample cohort mean and SD), the pair's normalised score instead."""
    embeddings = np.stack([s.embedding for s in samples]).astype(np.float64)
    n = len(samples)
    total_pairs = n * (n - 1) // 2
    same_counts = np.bincount(codes)
    n_genuine_total = int((same_counts * (same_counts - 1) // 2).sum())
    impostor_total = total_pairs - n_genuine_total
    keep_share = min(1.0, MAX_IMPOSTOR_PAIRS / impostor_total) if impostor_total else 1.0
    rng = np.random.default_rng([seed, 11])
    genuine, impostor, gen_ids, imp_ids = [], [], [], []
    block = max(1, 4_000_000 // max(n, 1))
    for start in range(0, n - 1, block):
        stop = min(n - 1, start + block)
        scores = ident.similarity_matrix(embeddings[start:stop], embeddings)
        if stats is not None:
            mu, sd = stats
            scores = normalise_arrays(scores, mu[start:stop], sd[start:stop], mu, sd)
        rows, cols = np.nonzero(np.arange(n)[None, :] > np.arange(start, stop)[:, None])
        values = scores[rows, cols]
        a, b = codes[rows + start], codes[cols]
        same = a == b
        genuine.append(values[same])
        gen_ids.append(np.stack([a[same], b[same]], axis=1))
        other = ~same
        if keep_share < 1.0:
            other &= rng.random(other.size) < keep_share
        impostor.append(values[other])
        imp_ids.append(np.stack([a[other], b[other]], axis=1))
    empty_ids = np.zeros((0, 2), np.int64)
    return _Pairs(
        genuine=np.concatenate(genuine) if genuine else np.zeros(0),
        impostor=np.concatenate(impostor) if impostor else np.zeros(0),
        genuine_ids=np.concatenate(gen_ids) if gen_ids else empty_ids,
        impostor_ids=np.concatenate(imp_ids) if imp_ids else empty_ids,
        impostor_sampled=keep_share < 1.0,
        impostor_total=impostor_total,
    )


def _point_json(point: Any) -> dict[str, Any]:
    return clean_json(asdict(point))


def _verification(pairs: _Pairs, config: EvaluationConfig) -> tuple[dict[str, Any], met.VerificationSummary | None]:
    base = {
        "n_genuine": int(pairs.genuine.size),
        "n_impostor": int(pairs.impostor.size),
        "impostor_pairs_total": pairs.impostor_total,
        "impostor_sampled": pairs.impostor_sampled,
    }
    if pairs.genuine.size == 0 or pairs.impostor.size == 0:
        reason = "no genuine pairs (no identity has two usable images)" if pairs.genuine.size == 0 else \
            "no impostor pairs (a single identity)"
        return {**base, "available": False, "reason": reason}, None
    summary = met.verification_summary(pairs.genuine, pairs.impostor, fmr_targets=config.fmr_targets)
    return {
        **base,
        "available": True,
        "eer": summary.eer,
        "eer_threshold": summary.eer_threshold,
        "fnmr_at_fmr": {rate_key(t): _point_json(p) for t, p in summary.fnmr_at_fmr.items()},
        "genuine_score_quantiles": _quantiles(pairs.genuine),
        "impostor_score_quantiles": _quantiles(pairs.impostor),
    }, summary


def _quantiles(values: np.ndarray) -> dict[str, float]:
    qs = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, np.quantile(values, qs))}


@dataclass(slots=True)
class _Gallery:
    enrolled: list[str]
    templates: dict[str, list[Sample]]
    mated: list[Sample]
    nonmated: list[Sample]
    rule: str


def _choose_gallery(by_identity: Mapping[str, list[Sample]], config: EvaluationConfig) -> _Gallery | str:
    """The gallery, or why there can be none."""
    k = config.enrol_images

    def eligible(samples: list[Sample]) -> list[Sample]:
        ok = [s for s in samples if s.refusal is None] if config.apply_enrolment_policy else list(samples)
        return sorted(ok, key=lambda s: s.key)

    pool_a = sorted(i for i, s in by_identity.items() if len(s) > k and len(eligible(s)) >= k)
    pool_b = sorted(i for i, s in by_identity.items() if i not in set(pool_a) and eligible(s))
    if config.enrolled is not None:
        unknown = sorted(set(config.enrolled) - set(pool_a) - set(pool_b))
        if unknown:
            return f"the requested gallery identities have no usable reference image: {unknown[:5]}"
        enrolled = sorted(set(config.enrolled))
        rule = f"the {len(enrolled)} identities given"
    else:
        if not pool_a:
            return f"no identity has more than {k} usable image(s): there is no mated search"
        wanted = config.gallery_size if config.gallery_size is not None else max(1, len(pool_a) // 2)
        if wanted > len(pool_a) + len(pool_b) - 1:
            return (f"gallery size {wanted} leaves no one to search non-mated "
                    f"(at most {len(pool_a) + len(pool_b) - 1} identities can be enrolled)")
        rng = np.random.default_rng([config.seed, 1])
        a = [pool_a[i] for i in rng.permutation(len(pool_a))]
        b = [pool_b[i] for i in rng.permutation(len(pool_b))]
        from_a = min(wanted, max(1, len(a) // 2))
        from_b = min(wanted - from_a, len(b))
        extra_a = wanted - from_a - from_b
        enrolled = sorted(a[:from_a] + b[:from_b] + a[from_a : from_a + extra_a])
        rule = (
            f"{wanted} identities drawn with seed {config.seed}: {from_a + extra_a} of the {len(a)} with more than "
            f"{k} usable image(s) (at most half of them unless the size needs more)"
            + (f" and {from_b} of the {len(b)} with fewer (enrolled, never searched mated)" if from_b else "")
            + ("" if config.gallery_size is not None else " (default size: half of those with more)")
        )
    enrolled_set = set(enrolled)
    templates: dict[str, list[Sample]] = {}
    mated: list[Sample] = []
    nonmated: list[Sample] = []
    for identity, samples in by_identity.items():
        if identity in enrolled_set:
            chosen = eligible(samples)[:k]
            templates[identity] = chosen
            keys = {s.key for s in chosen}
            mated.extend(s for s in sorted(samples, key=lambda s: s.key) if s.key not in keys)
        else:
            nonmated.extend(sorted(samples, key=lambda s: s.key))
    if not mated:
        return "the gallery leaves no mated search"
    if not nonmated:
        return "every identity is enrolled: there is no non-mated search"
    return _Gallery(enrolled=enrolled, templates=templates, mated=mated, nonmated=nonmated, rule=rule)


def _identification(
    gallery: _Gallery, config: EvaluationConfig
) -> tuple[dict[str, Any], ident.OpenSetResult | None, list[Sample]]:
    template_list = [s for identity in gallery.enrolled for s in gallery.templates[identity]]
    probes = gallery.mated + gallery.nonmated
    if len(probes) * len(template_list) > MAX_OPEN_SET_SCORES:
        reason = (f"{len(probes)} searches x {len(template_list)} references exceed {MAX_OPEN_SET_SCORES:,} scores: "
                  "choose a smaller --gallery-size")
        return {"available": False, "reason": reason}, None, probes
    scores = ident.similarity_matrix(
        np.stack([s.embedding for s in probes]), np.stack([s.embedding for s in template_list])
    )
    result = ident.open_set(
        scores, [s.identity for s in template_list], [s.identity for s in probes], enrolled=set(gallery.enrolled)
    )
    points = {rate_key(t): result.fnir_at_fpir(t) for t in config.fpir_targets}
    return {
        "available": True,
        "gallery_size": result.gallery_size,
        "gallery_rule": gallery.rule,
        "references_per_identity": config.enrol_images,
        "n_references": len(template_list),
        "n_mated": result.n_mated,
        "n_nonmated": result.n_nonmated,
        "rank1": result.rank1,
        "fnir_at_fpir": {k: _point_json(p) for k, p in points.items()},
        "enrolled": list(gallery.enrolled),
    }, result, probes


def _sweep(
    result: ident.OpenSetResult,
    thresholds: Sequence[tuple[str, float]],
    *,
    tail_fmr: Callable[[float], float | None],
    config: EvaluationConfig,
    watchlist_size: int,
) -> dict[str, Any]:
    """FPIR against gallery size: sub-galleries of the evaluation gallery, then the model beyond."""
    n = result.gallery_size
    sizes = sorted({s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if s <= n} | {n})
    curves = []
    for label, threshold in thresholds:
        if not math.isfinite(threshold):
            continue
        points = ident.fpir_vs_gallery_size(
            result.nonmated_identity_scores, sizes, threshold, rng_seed=config.seed, repeats=20
        )
        fmr1 = points[0].fmr1
        source = f"measured: share of the {result.nonmated_identity_scores.size:,} non-mated search-identity scores"
        if fmr1 == 0.0:
            modelled = tail_fmr(threshold)
            if modelled is not None:
                fmr1, source = modelled, "no comparison reaches the threshold: the calibration's tail model"
        extrapolated = [
            {"size": s, "fpir_model": ident.extrapolate_fpir(fmr1, s)}
            for s in sorted(set(EXTRAPOLATION_SIZES) | {watchlist_size, n})
        ]
        curves.append({
            "label": label,
            "threshold": threshold,
            "points": [clean_json(asdict(p)) for p in points],
            "fmr1": fmr1,
            "fmr1_source": source,
            "extrapolated": extrapolated,
        })
    return {
        "available": bool(curves),
        "method": (
            f"measured on random sub-galleries of the {n}-identity evaluation gallery (20 per size, seed "
            f"{config.seed}; the mean FPIR of the {result.n_nonmated:,} non-mated searches against them), and "
            "modelled as 1-(1-FMR)^N, FMR being the per-comparison false match rate at the threshold, which "
            "assumes a stranger's comparisons with different enrolled people are independent. Beyond the "
            f"evaluation gallery ({n}) only the model speaks; where the measured points fall below the model, "
            "some strangers look like many enrolled people at once and the model overstates the growth."
        ),
        "gallery_size": n,
        "searches": result.n_nonmated,
        "curves": curves,
    }


def _identity_groups(dataset: Dataset, by_identity: Mapping[str, list[Sample]], column: str) -> tuple[dict[str, str], int]:
    """Each identity's value of ``column`` (the most common among its images) and the conflicts."""
    out: dict[str, str] = {}
    conflicts = 0
    for identity, samples in by_identity.items():
        values = Counter(dataset.attributes.get(s.key, {}).get(column) for s in samples)
        values.pop(None, None)
        if not values:
            continue
        if len(values) > 1:
            conflicts += 1
        out[identity] = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return out, conflicts


def _open_set_groups(
    result: ident.OpenSetResult,
    probes: Sequence[Sample],
    group_of: Mapping[str, str],
    threshold: float,
    config: EvaluationConfig,
) -> dict[str, dict[str, Any]]:
    """FNIR and FPIR per group of the searching identity, with identity-bootstrap intervals."""
    n_mated = result.n_mated
    mated_hit = result.mated_scores >= threshold
    nonmated_alert = result.nonmated_top >= threshold
    rows: list[tuple[str, str, bool, bool]] = []  # group, identity, mated, error
    for i, sample in enumerate(probes):
        group = group_of.get(sample.identity)
        if group is None:
            continue
        if i < n_mated:
            rows.append((group, sample.identity, True, not bool(mated_hit[i])))
        else:
            rows.append((group, sample.identity, False, bool(nonmated_alert[i - n_mated])))
    out: dict[str, dict[str, Any]] = {}
    for g_index, group in enumerate(sorted({r[0] for r in rows})):
        figures: dict[str, Any] = {"threshold": threshold}
        identities: set[str] = set()
        for mated, name, seed_leg in ((True, "fnir", 0), (False, "fpir", 1)):
            per: dict[str, list[int]] = {}
            for g, identity, is_mated, error in rows:
                if g == group and is_mated == mated:
                    counts = per.setdefault(identity, [0, 0])
                    counts[0] += int(error)
                    counts[1] += 1
            identities |= set(per)
            trials = sum(c[1] for c in per.values())
            errors = sum(c[0] for c in per.values())
            figures[f"n_{'mated' if mated else 'nonmated'}"] = trials
            figures[name] = errors / trials if trials else None
            if trials:
                e = np.array([c[0] for c in per.values()])
                t = np.array([c[1] for c in per.values()])
                figures[f"{name}_ci"] = list(groups_mod.identity_bootstrap_ci(
                    e, t, n_boot=config.n_boot, seed=(config.seed, g_index, 10 + seed_leg)))
            else:
                figures[f"{name}_ci"] = None
        figures["n_identities"] = len(identities)
        warnings = []
        if len(identities) < config.min_group_identities:
            warnings.append(f"only {len(identities)} identities (fewer than {config.min_group_identities}): "
                            "too few people to say anything")
        if not figures["n_mated"]:
            warnings.append("no mated searches: FNIR undefined")
        if not figures["n_nonmated"]:
            warnings.append("no non-mated searches: FPIR undefined")
        figures["warning"] = "; ".join(warnings) or None
        out[group] = clean_json(figures)
    return out


def _groups(
    dataset: Dataset,
    by_identity: Mapping[str, list[Sample]],
    pairs: _Pairs,
    identity_names: Sequence[str],
    summary: met.VerificationSummary | None,
    open_set: tuple[ident.OpenSetResult, list[Sample], float] | None,
    config: EvaluationConfig,
    plot_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if summary is None:
        pair_threshold, rule = math.nan, "no 1:1 figures (no genuine or no impostor pair)"
    elif config.group_threshold is not None:
        pair_threshold = float(config.group_threshold)
        rule = "the score given (--group-threshold)"
    else:
        pair_threshold = met.threshold_at_rate(np.sort(pairs.impostor), config.group_fmr).threshold
        rule = f"the score at which FMR over all impostor pairs is {config.group_fmr:g}"
    for column in dataset.attribute_columns:
        group_of, conflicts = _identity_groups(dataset, by_identity, column)
        if not group_of:
            out[column] = {"available": False, "reason": f"no usable image has a {column!r} value"}
            continue
        section: dict[str, Any] = {
            "available": True,
            "identities_with_value": len(group_of),
            "identities_with_conflicting_values": conflicts,
            "values": {},
        }
        counts: dict[str, dict[str, int]] = {}
        for identity, group in group_of.items():
            c = counts.setdefault(group, {"n_images": 0, "n_identities_total": 0})
            c["n_images"] += len(by_identity[identity])
            c["n_identities_total"] += 1
        # 1:1 at one shared threshold.
        pair_figures: dict[str, groups_mod.GroupFigures] = {}
        if math.isfinite(pair_threshold):
            has = np.array([name in group_of for name in identity_names])
            ids = np.concatenate([pairs.genuine_ids, pairs.impostor_ids])
            values = np.concatenate([pairs.genuine, pairs.impostor])
            keep = has[ids[:, 0]] & has[ids[:, 1]]
            if keep.any():
                names = np.asarray(identity_names, dtype=object)
                try:
                    pair_figures = groups_mod.by_group(
                        scores=values[keep],
                        probe_ids=names[ids[keep, 0]].tolist(),
                        reference_ids=names[ids[keep, 1]].tolist(),
                        group_of=group_of,
                        threshold=pair_threshold,
                        target_fmr=config.group_fmr,
                        min_identities=config.min_group_identities,
                        n_boot=config.n_boot,
                        seed=config.seed,
                    )
                except ValueError as exc:
                    section["verification_note"] = str(exc)
                _group_fmr_curves(values[keep], ids[keep], names, group_of, column, plot_curves)
        section["verification_threshold"] = pair_threshold
        section["verification_threshold_rule"] = (
            f"{rule}; impostor pairs count "
            "for a group only when both people are in it (as NIST's demographic reports count them)"
        )
        ident_figures: dict[str, dict[str, Any]] = {}
        if open_set is not None:
            result, probes, ident_threshold = open_set
            if math.isfinite(ident_threshold):
                ident_figures = _open_set_groups(result, probes, group_of, ident_threshold, config)
                section["identification_threshold"] = ident_threshold
                section["identification_threshold_rule"] = (
                    f"the threshold of FPIR {rate_key(config.fpir_targets[0])} on the evaluation gallery; "
                    "a search belongs to the searching person's group")
        for group in sorted(counts):
            entry: dict[str, Any] = {
                "n_images": counts[group]["n_images"],
                "n_identities": counts[group]["n_identities_total"],
            }
            warnings: list[str] = []
            figures = pair_figures.get(group)
            if figures is None and counts[group]["n_identities_total"] < config.min_group_identities:
                warnings.append(f"only {counts[group]['n_identities_total']} identities: too few people to say anything")
            if figures is not None:
                entry["verification"] = clean_json({
                    "threshold": figures.threshold,
                    "n_identities": figures.n_identities,
                    "n_genuine": figures.n_genuine,
                    "n_impostor": figures.n_impostor,
                    "false_matches": figures.false_matches,
                    "false_non_matches": figures.false_non_matches,
                    "fmr": figures.fmr,
                    "fmr_ci": list(figures.fmr_ci),
                    "fnmr": figures.fnmr,
                    "fnmr_ci": list(figures.fnmr_ci),
                    "warning": figures.warning,
                })
                if figures.warning:
                    warnings.append(figures.warning)
                entry["eer"] = _group_eer(pairs, group_of, identity_names, group)
            if group in ident_figures:
                entry["identification"] = ident_figures[group]
                if ident_figures[group]["warning"]:
                    warnings.append("1:N: " + ident_figures[group]["warning"])
            entry["warning"] = "; ".join(dict.fromkeys(warnings)) or None
            section["values"][group] = entry
        if pair_figures:
            section["disparity"] = clean_json(asdict(groups_mod.disparity(pair_figures)))
        if ident_figures:
            section["identification_disparity"] = _ident_disparity(ident_figures, threshold=open_set[2] if open_set else math.nan)
        out[column] = section
    return out


def _group_eer(pairs: _Pairs, group_of: Mapping[str, str], names: Sequence[str], group: str) -> float | None:
    """EER of a group's genuine pairs against its within-group impostor pairs (no interval)."""
    in_group = np.array([group_of.get(n) == group for n in names])
    g = pairs.genuine[in_group[pairs.genuine_ids[:, 0]]]
    imp_mask = in_group[pairs.impostor_ids[:, 0]] & in_group[pairs.impostor_ids[:, 1]]
    i = pairs.impostor[imp_mask]
    if g.size == 0 or i.size == 0:
        return None
    return float(met.verification_summary(g, i, fmr_targets=(0.5,)).eer)


def _ident_disparity(figures: Mapping[str, Mapping[str, Any]], *, threshold: float) -> dict[str, Any]:
    """Worst-to-best FPIR and FNIR ratios, through ``groups.disparity`` (FPIR in the FMR slot)."""
    shaped = {
        group: groups_mod.GroupFigures(
            group=group, threshold=threshold, n_identities=int(f["n_identities"]),
            n_pairs=int(f["n_mated"]) + int(f["n_nonmated"]), n_genuine=int(f["n_mated"]),
            n_impostor=int(f["n_nonmated"]), false_non_matches=0, false_matches=0,
            fnmr=math.nan if f["fnir"] is None else float(f["fnir"]), fnmr_ci=(math.nan, math.nan),
            fmr=math.nan if f["fpir"] is None else float(f["fpir"]), fmr_ci=(math.nan, math.nan),
            warning=f["warning"],
        )
        for group, f in figures.items()
    }
    d = groups_mod.disparity(shaped)
    return clean_json({
        "fpir_ratio": d.fmr_ratio, "fpir_worst": d.fmr_worst, "fpir_best": d.fmr_best, "fpir_unbounded": d.fmr_unbounded,
        "fnir_ratio": d.fnmr_ratio, "fnir_worst": d.fnmr_worst, "fnir_best": d.fnmr_best,
        "fnir_unbounded": d.fnmr_unbounded, "warned_groups": list(d.warned_groups),
        "notes": [n.replace("FNMR", "FNIR").replace("FMR", "FPIR") for n in d.notes],
    })


def _group_fmr_curves(
    values: np.ndarray,
    ids: np.ndarray,
    names: np.ndarray,
    group_of: Mapping[str, str],
    column: str,
    plot_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
) -> None:
    """FMR against threshold per group (within-group impostors), and FNMR where there are genuine pairs."""
    groups_a = np.array([group_of[n] for n in names[ids[:, 0]]], dtype=object)
    groups_b = np.array([group_of[n] for n in names[ids[:, 1]]], dtype=object)
    genuine = ids[:, 0] == ids[:, 1]
    fmr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    det: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group in sorted(set(groups_a.tolist())):
        imp = values[(~genuine) & (groups_a == group) & (groups_b == group)]
        gen = values[genuine & (groups_a == group)]
        if imp.size:
            s = np.sort(imp)
            grid = np.linspace(0.0, 1.0, 401)
            fmr_curves[f"{group} (n={imp.size:,})"] = (grid, np.asarray(met.share_at_or_above(s, grid)))
        if imp.size and gen.size:
            curve = met.verification_curve(gen, imp)
            det[f"{group}"] = thin_curve(curve.fmr, curve.fnmr)
    if fmr_curves:
        plot_curves[f"fmr_by_{column}"] = fmr_curves
    if det:
        plot_curves[f"det_by_{column}"] = det


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
    pairs: _Pairs,
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
    pairs = _pair_scores(samples, codes, seed=config.seed) if len(samples) >= 2 else _Pairs(
        np.zeros(0), np.zeros(0), np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), False, 0)
    verification, summary = _verification(pairs, config)
    metrics["verification"] = verification
    metrics["eer"] = verification.get("eer")
    metrics["eer_threshold"] = verification.get("eer_threshold")
    metrics["fnmr_at_fmr"] = verification.get("fnmr_at_fmr", {})

    # 1:N
    gallery = _choose_gallery(by_identity, config) if by_identity else "no usable image"
    result: ident.OpenSetResult | None = None
    probes: list[Sample] = []
    if isinstance(gallery, str):
        identification: dict[str, Any] = {"available": False, "reason": gallery}
    else:
        identification, result, probes = _identification(gallery, config)
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

    metrics["fpir_vs_gallery_size"] = _sweep(
        result, thresholds, tail_fmr=tail_fmr, config=config, watchlist_size=watchlist_size
    ) if result is not None else {"available": False, "reason": "no open-set identification"}
    metrics["tracks"] = _tracks(result, probes, thresholds, config) if result is not None else {
        "available": False, "reason": "no open-set identification"}

    plot_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    open_set_for_groups = (result, probes, float(op_threshold)) if result is not None else None
    metrics["groups"] = _groups(
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
    pairs: _Pairs,
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
    for name, curves in sorted(group_curves.items()):
        column = name.split("_by_", 1)[1]
        if name.startswith("fmr_by_"):
            thr = metrics["groups"].get(column, {}).get("verification_threshold")
            label = "group threshold" if config.group_threshold is not None else f"FMR {config.group_fmr:g} overall"
            lines = [(thr, label)] if thr is not None else []
            add(name, f"FMR against threshold by {column} (impostors within the group)",
                lambda p, c=curves, col=column, ln=lines: plots.rate_vs_threshold(
                    p, c, title=f"FMR by {col}", y_label="FMR", thresholds=ln))
        else:
            add(name, f"1:1 DET by {column}", lambda p, c=curves, col=column: plots.det_curves(
                p, c, title=f"1:1 DET by {col} (within-group impostors)", x_label="FMR", y_label="FNMR"))
    return out
