"""Per-subject thresholds (cohort score normalisation) against one global threshold, on the shared set.

What it measures, per method, pooled over ``--splits`` random splits of the UTKFace people:

* open-set identification (NIST's FNIR at FPIR 1e-2, 1e-3, 1/6000): gallery = the first image of
  every labelled person with two or more images (the rest are mated searches), non-mated
  searches = the UTKFace people not in the cohort. 1e-2 is measured; the stricter targets are
  read at the per-comparison rate on the non-mated impostor scores, extrapolated by a tail fit
  where the data cannot resolve them (the method is printed);
* calibration honesty: the threshold each method's *cohort* gives for a target FPIR at this
  gallery's size (what ``openlfr run`` and a deployment would use), and the FPIR and FNIR
  measured at it;
* group differentials at that operating threshold (per-comparison target 1e-3): the FMR of
  impostor pairs within each sex, ethnicity and age band of the held-out UTKFace people (each
  ordered pair: one enrolled, one searching), the worst/best ratio, and a 95% interval by
  resampling people; FPIR of those people's searches against the gallery by group;
* the cost: milliseconds per face for the probe's cohort statistics (cohort of 250, and 5,000).
* tracks of five photos of one person decided per photo, by votes, or by a template, with
  single-view or mirrored probes (``TRACK_DECISIONS``; both views are embedded for this, the
  rest follows ``OPENLFR_EMBED_MIRROR`` as the product does).

Methods: ``global`` (raw score, one threshold); ``znorm`` (the reference's mean and SD over the
whole stats cohort); ``as-norm`` (adaptive symmetric: top 10% of the stats cohort, reference and
probe; what OpenLFR uses). Each cohort is the UTKFace half not searched, split by person into a
stats and a calibration part exactly as ``openlfr cohort build`` does.

The shared set is small and unlike a camera's faces: the figures say which method ranks and
calibrates better, not what any deployment will see.

Usage: .venv/bin/python benchmarks/subject_calibration.py [--splits 10] [--out benchmarks/results/subject_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openlfr import paths
from openlfr.cohort.cohort import CohortFace, make_cohort
from openlfr.cohort.norm import DEFAULT_TOP_FRACTION, ScoreNorm, normalise_arrays, score_matrix, top_k_for
from openlfr.config import ModelSettings
from openlfr.evaluation.dataset import load_dataset, shared_set_tables, write_csv
from openlfr.evaluation.embeddings import EmbeddingCache, analyse_files, analyzer_version
from openlfr.evaluation.groups import identity_bootstrap_ci
from openlfr.evaluation.identification import open_set, per_comparison_fmr_target
from openlfr.evaluation.metrics import threshold_at_rate

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
METHODS = ("global", "znorm", "as-norm")
TARGETS = {"1e-2": 1e-2, "1e-3": 1e-3, "1/6000": 1 / 6000}
GROUP_COLUMNS = ("sex", "ethnicity", "age_band")
#: Per-comparison FMR target at which group differentials are read.
GROUP_FMR = 1e-3


@dataclass
class Face:
    key: str
    identity: str
    vector: np.ndarray
    sha256: str
    attrs: dict[str, str]


def load_faces(seed_cache: Path, settings: ModelSettings | None = None) -> list[Face]:
    """Every usable shared-set image (largest face), UTKFace crops a person each, with groups,
    embedded as ``settings`` say (default: the environment's, as the product runs)."""
    tables = paths.build_dir() / "eval-tables"
    labels, attributes = tables / "labels.csv", tables / "attributes.csv"
    if not labels.is_file():
        label_rows, attribute_rows = shared_set_tables(FACES)
        write_csv(labels, label_rows, list(label_rows[0]))
        write_csv(attributes, attribute_rows, list(attribute_rows[0]))
    dataset = load_dataset(FACES, labels=labels, attributes=attributes)
    settings = settings or ModelSettings()
    cache = EmbeddingCache(seed_cache, analyzer_version(settings))
    analyzer = None
    keys = [image.path for image in dataset.images]
    try:
        analysed = analyse_files(keys, analyzer=None, cache=cache)
    except ValueError:
        from openlfr.vision.factory import build_analyzer

        analyzer = build_analyzer(settings)
        analysed = analyse_files(keys, analyzer=analyzer, cache=cache)
    out = []
    for image, result in zip(dataset.images, analysed, strict=True):
        if result.faces is None or len(result.faces) == 0:
            continue
        widths = result.faces.boxes[:, 2] - result.faces.boxes[:, 0]
        vector = np.asarray(result.faces.embeddings[int(np.argmax(widths))], np.float32)
        out.append(Face(image.key, image.identity, vector, result.sha256, dataset.attributes.get(image.key, {})))
    return out


def split_utk(utk: list[Face], rng: np.random.Generator) -> tuple[list[Face], list[Face]]:
    """Cohort half and searched half, stratified by ethnicity x sex."""
    strata: dict[tuple[str, str], list[Face]] = defaultdict(list)
    for face in utk:
        strata[(face.attrs.get("ethnicity", ""), face.attrs.get("sex", ""))].append(face)
    cohort, searched = [], []
    for key in sorted(strata):
        members = strata[key]
        for j, i in enumerate(rng.permutation(len(members))):
            (cohort if j % 2 == 0 else searched).append(members[i])
    return cohort, searched


class Scorer:
    """Scores of one method: raw, or normalised against a cohort's stats part."""

    def __init__(self, method: str, norm: ScoreNorm) -> None:
        self.method = method
        self.norm = norm if method == "as-norm" else ScoreNorm(norm.vectors, top_k=norm.vectors.shape[0])
        self.symmetric = method == "as-norm"

    def matrix(self, refs: np.ndarray, probes: np.ndarray) -> np.ndarray:
        """(refs, probes) scores."""
        raw = score_matrix(refs, probes).astype(np.float64)
        if self.method == "global":
            return raw
        mu_r, sd_r = self.norm.stats_arrays(refs)
        if self.symmetric:
            mu_p, sd_p = self.norm.stats_arrays(probes)
            return normalise_arrays(raw, mu_r, sd_r, mu_p, sd_p)
        return (raw - mu_r[:, None]) / sd_r[:, None]

    def calibration_pool(self, cal: np.ndarray, people: list[str]) -> np.ndarray:
        """Sorted impostor scores among the cohort's calibration part (each unordered pair once)."""
        m = self.matrix(cal, cal)
        keys = np.array(people)
        upper = np.triu(np.ones(m.shape, bool), 1) & (keys[:, None] != keys[None, :])
        if not self.symmetric and self.method == "znorm":
            upper = (~np.eye(len(keys), dtype=bool)) & (keys[:, None] != keys[None, :])  # asymmetric: both orders
        return np.sort(m[upper])


#: The share of the stats cohort a statistic is taken over (``--top-fraction``; the product's default).
TOP_FRACTION = DEFAULT_TOP_FRACTION


def run_split(faces: list[Face], seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    utk = [f for f in faces if f.key.startswith("utkface_balanced/")]
    labelled: dict[str, list[Face]] = defaultdict(list)
    for face in faces:
        if not face.key.startswith("utkface_balanced/"):
            labelled[face.identity].append(face)
    people = sorted(k for k, v in labelled.items() if len(v) >= 2)
    gallery = [labelled[k][0] for k in people]
    mates = [f for k in people for f in labelled[k][1:]]
    cohort_people, searched = split_utk(utk, rng)
    cohort = make_cohort([CohortFace(f.vector, f.sha256, "") for f in cohort_people], model_version="bench",
                         embed_mirror=ModelSettings().embed_mirror)
    stats_vectors = cohort.vectors[cohort.parts == 0]
    cal_vectors = cohort.vectors[cohort.parts == 1]
    base_norm = ScoreNorm(stats_vectors, top_k=top_k_for(stats_vectors.shape[0], TOP_FRACTION))
    g = np.stack([f.vector for f in gallery])
    probes = np.stack([f.vector for f in mates + searched])
    probe_ids = [f.identity for f in mates] + [f"utk:{f.key}" for f in searched]
    s = np.stack([f.vector for f in searched])
    out: dict[str, dict] = {}
    for method in METHODS:
        scorer = Scorer(method, base_norm)
        result = open_set(scorer.matrix(g, probes).T, [f.identity for f in gallery], probe_ids, enrolled=set(people))
        pool = scorer.calibration_pool(cal_vectors, [f"c{i}" for i in range(cal_vectors.shape[0])])
        figures: dict[str, object] = {"fnir_at_fpir": {}, "calibrated": {}}
        for name, target in TARGETS.items():
            point = result.fnir_at_fpir(target)
            figures["fnir_at_fpir"][name] = {"fnir": point.fnir, "method": point.method}
            threshold = threshold_at_rate(pool, per_comparison_fmr_target(target, len(people))).threshold
            figures["calibrated"][name] = {
                "threshold": threshold,
                "fpir_measured": float(result.fpir_at(threshold)),
                "fnir": float(result.fnir_at(threshold)),
                "n_nonmated": result.n_nonmated,
            }
        # Group differentials at the deployment's threshold for a per-comparison FMR of GROUP_FMR.
        t_group = threshold_at_rate(pool, GROUP_FMR).threshold
        within = scorer.matrix(s, s)
        vs_gallery = scorer.matrix(g, s).max(axis=0)
        groups: dict[str, dict[str, dict[str, list]]] = {}
        for column in GROUP_COLUMNS:
            values = np.array([f.attrs.get(column, "") for f in searched])
            per_group: dict[str, dict[str, list]] = {}
            for group in sorted(set(values) - {""}):
                idx = np.flatnonzero(values == group)
                sub = within[np.ix_(idx, idx)] >= t_group
                np.fill_diagonal(sub, False)
                per_group[group] = {
                    # per person: false matches as the enrolled one (row) and the trials
                    "errors": sub.sum(axis=1).tolist(),
                    "trials": [len(idx) - 1] * len(idx),
                    "alerts": (vs_gallery[idx] >= t_group).astype(int).tolist(),
                }
            groups[column] = per_group
        figures["groups"] = groups
        figures["group_threshold"] = t_group
        out[method] = figures
    out["_sizes"] = {"gallery": len(people), "mated": len(mates), "nonmated": len(searched),
                     "cohort": len(cohort_people), "stats": int(stats_vectors.shape[0]), "calibration": int(cal_vectors.shape[0])}
    return out


TRACK_LENGTH = 5


def template(vectors: np.ndarray) -> np.ndarray:
    """The mean of L2-normalised vectors, rescaled to their mean length (stays in the model's space)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = (vectors / norms).mean(axis=0)
    return (mean / np.linalg.norm(mean) * norms.mean()).astype(np.float32)


#: Track decisions compared (name: probe view, reference view, decision). Views: ``single`` (a
#: face's descriptor as cut) or ``mirror`` (averaged with its flipped chip's: references since
#: enrolment took the mirror rule, probes with ``OPENLFR_EMBED_MIRROR``). ``photo`` scores every
#: photo as its own search (the per-frame decision); ``votes3`` a track by its third-best photo
#: for a subject (the match stage's old ``min_votes=3``); ``template`` by the mean of its photos.
TRACK_DECISIONS: dict[str, tuple[str, str, str]] = {
    "photo": ("single", "single", "photo"),
    "votes3": ("single", "single", "votes3"),
    "template, single-view probes": ("single", "mirror", "template"),
    "template, mirrored probes": ("mirror", "mirror", "template"),
}


def run_tracks(views: dict[str, list[Face]], seed: int) -> dict[str, dict]:
    """Tracks of TRACK_LENGTH photos of one person, decided each way of ``TRACK_DECISIONS``.

    Half of the labelled people with enough photos are enrolled (first photo), the other half
    only search; each person's remaining photos are cut into tracks. The cohort is half the
    UTKFace people, as in ``run_split``, in the probes' view.
    """
    vector = {view: {f.key: f.vector for f in faces} for view, faces in views.items()}
    faces = [f for f in views["single"] if all(f.key in v for v in vector.values())]
    rng = np.random.default_rng(1000 + seed)
    labelled: dict[str, list[Face]] = defaultdict(list)
    for face in faces:
        if not face.key.startswith("utkface_balanced/"):
            labelled[face.identity].append(face)
    people = sorted(k for k, v in labelled.items() if len(v) >= 1 + TRACK_LENGTH)
    order = rng.permutation(len(people))
    enrolled = sorted(people[i] for i in order[: len(people) // 2])
    tracks: list[tuple[str, list[str]]] = []
    for person in people:
        photos = labelled[person][1:] if person in enrolled else labelled[person]
        photos = [photos[i] for i in rng.permutation(len(photos))]
        for start in range(0, len(photos) - TRACK_LENGTH + 1, TRACK_LENGTH):
            tracks.append((person, [f.key for f in photos[start : start + TRACK_LENGTH]]))
    utk = [f for f in faces if f.key.startswith("utkface_balanced/")]
    cohort_people, _ = split_utk(utk, rng)
    track_ids = [p for p, _ in tracks]
    out: dict[str, dict] = {}
    for method in ("global", "as-norm"):
        out[method] = {}
        for name, (probe_view, ref_view, decision) in TRACK_DECISIONS.items():
            vec = vector[probe_view]
            cohort = make_cohort([CohortFace(vector[probe_view][f.key], f.sha256, "") for f in cohort_people],
                                 model_version="bench", embed_mirror=probe_view == "mirror")
            stats_vectors = cohort.vectors[cohort.parts == 0]
            scorer = Scorer(method, ScoreNorm(stats_vectors, top_k=top_k_for(stats_vectors.shape[0], TOP_FRACTION)))
            gallery = np.stack([vector[ref_view][labelled[k][0].key] for k in enrolled])
            if decision == "photo":
                probes = np.stack([vec[key] for _, keys in tracks for key in keys])
                ids = [p for p, keys in tracks for _ in keys]
                result = open_set(scorer.matrix(gallery, probes).T, enrolled, ids, enrolled=set(enrolled))
            elif decision == "votes3":
                scores = np.stack([np.sort(scorer.matrix(gallery, np.stack([vec[k] for k in keys])), axis=1)[:, -3]
                                   for _, keys in tracks])
                result = open_set(scores, enrolled, track_ids, enrolled=set(enrolled))
            else:
                templates = np.stack([template(np.stack([vec[k] for k in keys])) for _, keys in tracks])
                result = open_set(scorer.matrix(gallery, templates).T, enrolled, track_ids, enrolled=set(enrolled))
            out[method][name] = {
                "fnir": {t: result.fnir_at_fpir(v).fnir for t, v in TARGETS.items()},
                "methods": {t: result.fnir_at_fpir(v).method for t, v in TARGETS.items()},
                "n": {"searches": result.n_mated + result.n_nonmated, "mated": result.n_mated,
                      "nonmated": result.n_nonmated, "gallery": len(enrolled)},
            }
    return out


def probe_stats_cost(dim: int = 128) -> dict[str, float]:
    """Milliseconds per face for one probe's cohort statistics (median of 200 calls)."""
    rng = np.random.default_rng(0)
    out = {}
    for m in (250, 5000):
        norm = ScoreNorm(rng.normal(size=(m, dim)).astype(np.float32) * 0.1, top_k=top_k_for(m))
        probe = rng.normal(size=dim).astype(np.float32) * 0.1
        times = []
        for _ in range(200):
            start = time.perf_counter()
            norm.stats(probe)
            times.append(time.perf_counter() - start)
        out[f"cohort_{m}"] = float(np.median(times) * 1000)
    return out


def summarise(splits: list[dict[str, dict]], n_boot: int) -> dict[str, object]:
    summary: dict[str, object] = {"sizes": splits[0]["_sizes"], "methods": {}}
    for method in METHODS:
        per = [s[method] for s in splits]
        entry: dict[str, object] = {"fnir_at_fpir": {}, "calibrated": {}, "groups": {}}
        for name in TARGETS:
            fnirs = [p["fnir_at_fpir"][name]["fnir"] for p in per]
            entry["fnir_at_fpir"][name] = {"fnir": float(np.nanmean(fnirs)), "sd": float(np.nanstd(fnirs)),
                                           "method": per[0]["fnir_at_fpir"][name]["method"]}
            entry["calibrated"][name] = {
                "fpir_measured": float(np.mean([p["calibrated"][name]["fpir_measured"] for p in per])),
                "fnir": float(np.mean([p["calibrated"][name]["fnir"] for p in per])),
            }
        for column in GROUP_COLUMNS:
            groups = sorted(per[0]["groups"][column])
            rows = {}
            for group in groups:
                errors = np.concatenate([p["groups"][column][group]["errors"] for p in per])
                trials = np.concatenate([p["groups"][column][group]["trials"] for p in per])
                alerts = np.concatenate([p["groups"][column][group]["alerts"] for p in per])
                lo, hi = identity_bootstrap_ci(errors, trials, n_boot=n_boot)
                flo, fhi = identity_bootstrap_ci(alerts, np.ones_like(alerts), n_boot=n_boot)
                rows[group] = {"fmr": float(errors.sum() / trials.sum()), "fmr_ci": [lo, hi],
                               "fpir": float(alerts.mean()), "fpir_ci": [flo, fhi], "people": int(len(errors))}
            fmrs = [r["fmr"] for r in rows.values()]
            fpirs = [r["fpir"] for r in rows.values()]
            entry["groups"][column] = {
                "rows": rows,
                "fmr_ratio": (max(fmrs) / min(fmrs)) if min(fmrs) > 0 else math.inf,
                "fpir_ratio": (max(fpirs) / min(fpirs)) if min(fpirs) > 0 else math.inf,
            }
        summary["methods"][method] = entry
    return summary


def print_tables(summary: dict) -> None:
    sizes = summary["sizes"]
    print(f"gallery {sizes['gallery']} people, {sizes['mated']} mated searches, {sizes['nonmated']} non-mated "
          f"searches, cohort {sizes['cohort']} ({sizes['stats']} stats + {sizes['calibration']} calibration)")
    print("\n| method | FNIR @ FPIR 1e-2 | @ 1e-3 | @ 1/6000 | calibrated for 1e-2: FPIR, FNIR | calibrated for 1e-3: FPIR, FNIR |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for method, entry in summary["methods"].items():
        f = entry["fnir_at_fpir"]
        c = entry["calibrated"]
        print(f"| {method} | {f['1e-2']['fnir']:.1%} | {f['1e-3']['fnir']:.1%} | {f['1/6000']['fnir']:.1%} | "
              f"{c['1e-2']['fpir_measured']:.2%}, {c['1e-2']['fnir']:.1%} | {c['1e-3']['fpir_measured']:.2%}, {c['1e-3']['fnir']:.1%} |")
    print(f"\nGroup FMR at each method's threshold for a per-comparison FMR of {GROUP_FMR:g} (worst/best ratio):")
    print("| method | sex | ethnicity | age band |")
    print("| --- | ---: | ---: | ---: |")
    for method, entry in summary["methods"].items():
        cells = []
        for column in GROUP_COLUMNS:
            g = entry["groups"][column]
            cells.append(f"{g['fmr_ratio']:.1f}x (FPIR {g['fpir_ratio']:.1f}x)")
        print(f"| {method} | " + " | ".join(cells) + " |")
    tracks = summary.get("tracks")
    if tracks:
        n = tracks["global"]["template, mirrored probes"]["n"]
        print(f"\nTracks of {TRACK_LENGTH} photos ({n['mated']} mated, {n['nonmated']} non-mated per split, "
              f"gallery {n['gallery']}): FNIR at FPIR (per split: the 1e-3 figures)")
        print("| decision | 1e-2 | 1e-3 | 1/6000 |")
        print("| --- | ---: | ---: | ---: |")
        for method in ("global", "as-norm"):
            for name in TRACK_DECISIONS:
                row = tracks[method][name]
                print(f"| {method}, {name} | {row['fnir']['1e-2']:.1%} | {row['fnir']['1e-3']:.1%} | "
                      f"{row['fnir']['1/6000']:.1%} |  " + " ".join(f"{x:.2f}" for x in row["per_split_1e-3"]))
    for method, entry in summary["methods"].items():
        print(f"\n{method}:")
        for column in GROUP_COLUMNS:
            rows = entry["groups"][column]["rows"]
            print("  " + "; ".join(f"{g} {r['fmr']:.2e} [{r['fmr_ci'][0]:.1e}, {r['fmr_ci'][1]:.1e}]" for g, r in rows.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=10, help="random splits of the UTKFace people (default 10)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples per interval (default 1000)")
    parser.add_argument("--out", type=Path, default=paths.REPO_ROOT / "benchmarks" / "results" / "subject_calibration.json")
    parser.add_argument("--top-fraction", type=float, default=DEFAULT_TOP_FRACTION,
                        help=f"share of the stats cohort a statistic is taken over (default {DEFAULT_TOP_FRACTION}, "
                             "the product's; `openlfr cohort build --top-fraction`)")
    args = parser.parse_args(argv)
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    if not 0.0 < args.top_fraction <= 1.0:
        parser.error("--top-fraction must be in (0, 1]")
    global TOP_FRACTION
    TOP_FRACTION = args.top_fraction
    faces = load_faces(paths.build_dir() / "eval-cache")
    views = {"single": load_faces(paths.build_dir() / "eval-cache", ModelSettings(embed_mirror=False)),
             "mirror": load_faces(paths.build_dir() / "eval-cache", ModelSettings(embed_mirror=True))}
    splits = []
    track_runs = []
    try:
        for seed in range(args.splits):
            splits.append(run_split(faces, seed))
            track_runs.append(run_tracks(views, seed))
            print(f"split {seed + 1}/{args.splits} done", file=sys.stderr)
    except KeyboardInterrupt:
        if not splits:
            return 130
        print(f"interrupted: summarising {len(splits)} split(s)", file=sys.stderr)
    summary = summarise(splits, args.bootstrap)
    summary["tracks"] = {
        method: {
            name: {
                "fnir": {t: float(np.nanmean([r[method][name]["fnir"][t] for r in track_runs])) for t in TARGETS},
                "per_split_1e-3": [float(r[method][name]["fnir"]["1e-3"]) for r in track_runs],
                "methods": track_runs[0][method][name]["methods"],
                "n": track_runs[0][method][name]["n"],
            }
            for name in TRACK_DECISIONS
        }
        for method in ("global", "as-norm")
    }
    summary["embed_mirror"] = ModelSettings().embed_mirror
    summary["top_fraction"] = TOP_FRACTION
    summary["cost_ms_per_face"] = probe_stats_cost()
    summary["splits"] = len(splits)
    summary["command"] = "benchmarks/subject_calibration.py " + " ".join(argv or sys.argv[1:])
    summary["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print_tables(summary)
    print(f"\nprobe statistics: {summary['cost_ms_per_face']} ms per face; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
