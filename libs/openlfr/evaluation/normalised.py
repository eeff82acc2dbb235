"""``openlfr evaluate --cohort``: the same figures on per-subject (cohort-normalised) scores.

With a background cohort (``openlfr cohort build``) the match stage decides on each pair's
score normalised by both faces' statistics against the cohort (``openlfr.cohort.norm``), at the
normalised threshold the cohort's held-out pairs give for the deployment's target FPIR and
watchlist size (``openlfr.cohort.policy``). This module measures exactly that on the evaluation
set, beside the raw figures, in ``metrics.json`` -> ``normalised``:

* 1:1 and 1:N figures on normalised scores (EER, FNMR at FMR, rank-1, FNIR at FPIR);
* the operating point: the normalised threshold the cohort gives for ``--target-fpir`` at
  ``--watchlist-size``, its *expected* FPIR and miss rate (from the cohort), and the FPIR and
  FNIR *measured* on this set's searches at it: the check that the calibration is honest;
* group figures (FMR and FNMR by group with intervals, worst/best ratios) at the normalised
  threshold of ``--group-fmr`` over all impostor pairs, as for raw scores.

The cohort must come from the model that made the embeddings and should hold none of the
evaluation's people (a person in both makes their statistics look like a look-alike's).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openlfr.cohort.cohort import Cohort
from openlfr.cohort.norm import normalise_arrays
from openlfr.cohort.policy import operating_point
from openlfr.evaluation import identification as ident
from openlfr.evaluation.dataset import Dataset
from openlfr.evaluation.run_common import point_json, rate_key
from openlfr.evaluation.run_groups import group_figures
from openlfr.evaluation.run_pairs import pair_scores, verification_figures

logger = logging.getLogger(__name__)


def normalised_figures(
    *,
    dataset: Dataset,
    samples: Sequence[Any],
    by_identity: Mapping[str, list[Any]],
    identity_names: Sequence[str],
    codes: np.ndarray,
    gallery: Any,
    config: Any,
    cohort: Cohort,
    watchlist_size: int,
) -> dict[str, Any]:
    """The ``normalised`` section of ``metrics.json`` (see the module docstring)."""
    norm = cohort.norm()
    embeddings = np.stack([s.embedding for s in samples]).astype(np.float32)
    mu, sd = norm.stats_arrays(embeddings)
    index_of = {id(s): i for i, s in enumerate(samples)}
    out: dict[str, Any] = {
        "available": True,
        "cohort": cohort.short_id,
        "cohort_model_version": cohort.model_version,
        "cohort_source": cohort.meta.get("source"),
        "cohort_faces": int(cohort.vectors.shape[0]),
        "cohort_people": cohort.meta.get("people"),
        "top_k": norm.top_k,
        "score": "z = ((s - mu_ref) / sd_ref + (s - mu_probe) / sd_probe) / 2, statistics of each face's top-k "
                 "scores against the cohort's stats half",
    }
    pairs = pair_scores(samples, codes, seed=config.seed, stats=(mu, sd))
    verification, summary = verification_figures(pairs, config)
    out["verification"] = verification
    result = None
    probes: list[Any] = []
    if isinstance(gallery, str):
        out["identification"] = {"available": False, "reason": gallery}
    else:
        templates = [s for identity in gallery.enrolled for s in gallery.templates[identity]]
        probes = list(gallery.mated) + list(gallery.nonmated)
        t_idx = np.array([index_of[id(s)] for s in templates])
        p_idx = np.array([index_of[id(s)] for s in probes])
        raw = ident.similarity_matrix(embeddings[p_idx], embeddings[t_idx])  # probes x templates
        z = normalise_arrays(raw.T, mu[t_idx], sd[t_idx], mu[p_idx], sd[p_idx]).T
        result = ident.open_set(z, [s.identity for s in templates], [s.identity for s in probes],
                                enrolled=set(gallery.enrolled))
        out["identification"] = {
            "available": True,
            "gallery_size": result.gallery_size,
            "n_mated": result.n_mated,
            "n_nonmated": result.n_nonmated,
            "rank1": result.rank1,
            "fnir_at_fpir": {rate_key(t): point_json(result.fnir_at_fpir(t)) for t in config.fpir_targets},
        }
    point = operating_point(cohort.calibration, watchlist_size=int(watchlist_size), target_fpir=config.target_fpir)
    operating: dict[str, Any] = {
        "target_fpir": config.target_fpir,
        "watchlist_size": int(watchlist_size),
        "threshold": point.threshold,
        "method": point.method,
        "per_comparison_fmr": point.per_comparison_fmr,
        "expected_fpir": point.expected_fpir,
        "expected_fnmr": point.expected_fnmr,
    }
    if result is not None:
        operating["measured_fpir"] = result.fpir_at(point.threshold)
        operating["measured_fnir"] = result.fnir_at(point.threshold)
        operating["measured_on"] = (f"{result.n_nonmated} non-mated and {result.n_mated} mated searches of a "
                                    f"{result.gallery_size}-person gallery (the watchlist size asked for may differ)")
    out["operating_point"] = operating
    group_config = dataclasses.replace(config, group_threshold=None)
    open_set_for_groups = (result, probes, point.threshold) if result is not None else None
    out["groups"] = group_figures(dataset, by_identity, pairs, identity_names, summary, open_set_for_groups,
                                  group_config, {})
    logger.info('normalised figures cohort="%s" threshold="%.4f" expected_fpir="%.3g" measured_fpir="%s"',
                cohort.short_id, point.threshold, point.expected_fpir, operating.get("measured_fpir"))
    return out


def disparity_line(groups: Mapping[str, Any]) -> str:
    """``column ratio`` for each group column with a FMR worst/best ratio, for the CLI's summary."""
    parts = []
    for column, figures in groups.items():
        disparity = figures.get("disparity") if isinstance(figures, Mapping) else None
        if not isinstance(disparity, Mapping):
            continue
        if disparity.get("fmr_unbounded"):
            parts.append(f"{column} unbounded ({disparity.get('fmr_best')} had no false match)")
            continue
        value = disparity.get("fmr_ratio")
        if value is not None and math.isfinite(value):
            parts.append(f"{column} {value:.1f}x ({disparity.get('fmr_worst')}/{disparity.get('fmr_best')})")
    return ", ".join(parts)
