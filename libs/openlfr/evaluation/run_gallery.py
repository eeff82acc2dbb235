"""1:N open-set identification of an evaluation run: the gallery, the searches, and FPIR against
gallery size (``metrics.json``'s ``identification`` and ``fpir_vs_gallery_size`` sections).

``choose_gallery`` decides who is enrolled and which images search (see the rules in
:mod:`openlfr.evaluation.run`'s docstring); ``identification_figures`` scores the searches;
``gallery_size_sweep`` measures FPIR on sub-galleries and extrapolates it with the independence
model. The maths is :mod:`openlfr.evaluation.identification`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from openlfr.evaluation import identification as ident
from openlfr.evaluation.run_common import EvaluationConfig, Sample, clean_json, point_json, rate_key

#: Probe-by-template scores one open-set evaluation may hold in memory.
MAX_OPEN_SET_SCORES = 60_000_000
#: Watchlist sizes the FPIR model is extrapolated to besides the configured one.
EXTRAPOLATION_SIZES = (1, 10, 100, 1000, 10_000, 100_000)


@dataclass(slots=True)
class Gallery:
    """Who is enrolled (with their references), the mated and non-mated searches, and the rule used."""

    enrolled: list[str]
    templates: dict[str, list[Sample]]
    mated: list[Sample]
    nonmated: list[Sample]
    rule: str


def choose_gallery(by_identity: Mapping[str, list[Sample]], config: EvaluationConfig) -> Gallery | str:
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
    return Gallery(enrolled=enrolled, templates=templates, mated=mated, nonmated=nonmated, rule=rule)


def identification_figures(
    gallery: Gallery, config: EvaluationConfig
) -> tuple[dict[str, Any], ident.OpenSetResult | None, list[Sample]]:
    """The ``identification`` section, the open-set result (None when too many scores) and the searches in order."""
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
        "fnir_at_fpir": {k: point_json(p) for k, p in points.items()},
        "enrolled": list(gallery.enrolled),
    }, result, probes


def gallery_size_sweep(
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
