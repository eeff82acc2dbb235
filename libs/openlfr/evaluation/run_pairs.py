"""1:1 verification of an evaluation run: every pair's score, and the figures of ``metrics.json``'s
``verification`` section.

Every pair of usable images is scored; same identity = genuine, else impostor. Above
``MAX_IMPOSTOR_PAIRS`` a seeded uniform sample of impostor pairs is kept (the figures say so).
The pair scores (``Pairs``) also feed the group figures (``run_groups``) and the calibration;
the maths is :mod:`openlfr.evaluation.metrics`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openlfr.cohort.norm import normalise_arrays
from openlfr.evaluation import identification as ident
from openlfr.evaluation import metrics as met
from openlfr.evaluation.run_common import EvaluationConfig, Sample, point_json, rate_key

#: Impostor pairs kept for the 1:1 figures; beyond it a seeded uniform sample is used.
MAX_IMPOSTOR_PAIRS = 5_000_000


@dataclass(slots=True)
class Pairs:
    """1:1 pair scores with the identity codes of their two sides."""

    genuine: np.ndarray
    impostor: np.ndarray
    genuine_ids: np.ndarray  # (n, 2) identity codes
    impostor_ids: np.ndarray
    impostor_sampled: bool
    impostor_total: int


def pair_scores(
    samples: Sequence[Sample],
    codes: np.ndarray,
    *,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> Pairs:
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
    return Pairs(
        genuine=np.concatenate(genuine) if genuine else np.zeros(0),
        impostor=np.concatenate(impostor) if impostor else np.zeros(0),
        genuine_ids=np.concatenate(gen_ids) if gen_ids else empty_ids,
        impostor_ids=np.concatenate(imp_ids) if imp_ids else empty_ids,
        impostor_sampled=keep_share < 1.0,
        impostor_total=impostor_total,
    )


def verification_figures(
    pairs: Pairs, config: EvaluationConfig
) -> tuple[dict[str, Any], met.VerificationSummary | None]:
    """The ``verification`` section, and its summary (None when there is no genuine or no impostor pair)."""
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
        "fnmr_at_fmr": {rate_key(t): point_json(p) for t, p in summary.fnmr_at_fmr.items()},
        "genuine_score_quantiles": _quantiles(pairs.genuine),
        "impostor_score_quantiles": _quantiles(pairs.impostor),
    }, summary


def _quantiles(values: np.ndarray) -> dict[str, float]:
    qs = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, np.quantile(values, qs))}
