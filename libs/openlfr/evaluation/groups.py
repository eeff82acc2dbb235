"""Error rates by demographic (or any other) group, with honest uncertainty.

The unit of sampling is the person, not the pair: one person contributes many genuine and
impostor pairs, and their pairs succeed or fail together (a face that is hard for the model is
hard in every pair). Treating pairs as independent makes intervals far too narrow. So the
intervals here are cluster bootstraps: resample the group's identities with replacement and
take all the pairs of each one drawn. A pair belongs to its probe identity (the first of the
two); the reference side's dependence is not modelled, so intervals are still somewhat
optimistic.

Impostor pairs, by default, count for a group only when both people are in it
(``impostors="within-group"``), as NIST's demographic reports do: strangers from another group
are usually easy to tell apart, and mixing them in flatters the group's FMR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from openlfr.evaluation.metrics import check_rate, check_scores, check_threshold

logger = logging.getLogger(__name__)

#: Fewest identities in a group before its figures are worth reading.
MIN_IDENTITIES = 5


def bootstrap_ci(
    values_fn: Callable[[np.random.Generator], float],
    *,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic.

    ``values_fn`` draws one bootstrap resample with the generator it is given and returns the
    statistic on it; resamples where the statistic is undefined may return NaN and are left
    out. Deterministic for a given ``seed``.

    Returns:
        ``(low, high)``, the ``alpha/2`` and ``1 - alpha/2`` quantiles; ``(nan, nan)`` when
        every resample was undefined.

    Raises:
        ValueError: ``n_boot`` below 1, ``alpha`` outside (0, 1).
    """
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a whole number >= 1, got {n_boot!r}")
    alpha = check_rate(alpha, name="alpha")
    rng = np.random.default_rng(seed)
    values = np.array([float(values_fn(rng)) for _ in range(int(n_boot))], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def identity_bootstrap_ci(
    errors: np.ndarray,
    trials: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Cluster-bootstrap interval of an error rate ``sum(errors) / sum(trials)``.

    ``errors[i]`` and ``trials[i]`` are identity i's error and trial counts; identities are
    resampled with replacement.

    Raises:
        ValueError: empty or mismatched counts, negative counts, errors above trials.
    """
    e = np.asarray(errors, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    if e.ndim != 1 or e.shape != t.shape:
        raise ValueError(f"errors and trials: expected two 1-D arrays of one length, got {e.shape} and {t.shape}")
    if e.size == 0:
        raise ValueError("errors and trials: no identities given (empty)")
    if (e < 0).any() or (t < 0).any() or (e > t).any():
        raise ValueError("errors and trials: counts must satisfy 0 <= errors <= trials")
    k = e.size

    def rate(rng: np.random.Generator) -> float:
        drawn = rng.integers(0, k, size=k)
        total = t[drawn].sum()
        return float(e[drawn].sum() / total) if total > 0 else math.nan

    return bootstrap_ci(rate, n_boot=n_boot, seed=seed, alpha=alpha)


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group's FMR and FNMR at a threshold.

    Attributes:
        group: the group's name.
        threshold: the score threshold.
        n_identities: distinct (probe) identities with pairs counted for the group.
        n_pairs: genuine plus impostor pairs counted.
        n_genuine: genuine pairs.
        n_impostor: impostor pairs.
        false_non_matches: genuine pairs scoring below the threshold.
        false_matches: impostor pairs scoring at or above it.
        fnmr: ``false_non_matches / n_genuine`` (NaN without genuine pairs).
        fnmr_ci: its cluster-bootstrap interval.
        fmr: ``false_matches / n_impostor`` (NaN without impostor pairs).
        fmr_ci: its cluster-bootstrap interval.
        warning: why the figures say little, when they do (reasons joined by "; "), else None.
    """

    group: str
    threshold: float
    n_identities: int
    n_pairs: int
    n_genuine: int
    n_impostor: int
    false_non_matches: int
    false_matches: int
    fnmr: float
    fnmr_ci: tuple[float, float]
    fmr: float
    fmr_ci: tuple[float, float]
    warning: str | None


def _group_warnings(
    *,
    n_identities: int,
    n_genuine: int,
    n_impostor: int,
    false_non_matches: int,
    false_matches: int,
    min_identities: int,
    target_fmr: float | None,
) -> str | None:
    reasons = []
    if n_identities < min_identities:
        reasons.append(
            f"only {n_identities} identities (fewer than {min_identities}): too few people to say anything"
        )
    if n_genuine == 0:
        reasons.append("no genuine pairs: FNMR undefined")
    elif false_non_matches == 0:
        reasons.append(
            f"no false non-matches in {n_genuine} genuine pairs: FNMR only known to be below about "
            f"{min(1.0, 3 / n_genuine):.2g} (rule of three)"
        )
    if n_impostor == 0:
        reasons.append("no impostor pairs: FMR undefined")
    else:
        if target_fmr is not None and n_impostor * target_fmr < 1.0:
            reasons.append(
                f"{n_impostor} impostor pairs cannot resolve an FMR of {target_fmr:g} "
                f"(need >= {math.ceil(1 / target_fmr)})"
            )
        if false_matches == 0:
            reasons.append(
                f"no false matches in {n_impostor} impostor pairs: FMR only known to be below about "
                f"{min(1.0, 3 / n_impostor):.2g} (rule of three)"
            )
    return "; ".join(reasons) if reasons else None


def _interval(
    errors: np.ndarray, trials: np.ndarray, *, n_boot: int, seed: Sequence[int], alpha: float
) -> tuple[float, float]:
    """Identity-bootstrap interval over the identities with trials; NaNs when there are none."""
    has = trials > 0
    if not has.any():
        return math.nan, math.nan
    return identity_bootstrap_ci(errors[has], trials[has], n_boot=n_boot, seed=seed, alpha=alpha)


def by_group(
    *,
    scores: np.ndarray,
    probe_ids: Sequence[str],
    reference_ids: Sequence[str],
    group_of: Mapping[str, str],
    threshold: float,
    impostors: Literal["within-group", "by-probe"] = "within-group",
    target_fmr: float | None = None,
    min_identities: int = MIN_IDENTITIES,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, GroupFigures]:
    """FMR and FNMR at ``threshold`` per group, with identity-resampled intervals.

    Args:
        scores: one score per pair; a pair is genuine when its two identities are the same.
        probe_ids: the first identity of each pair (its cluster for the bootstrap).
        reference_ids: the second identity of each pair.
        group_of: every identity's group.
        threshold: a pair matches when its score is at or above it.
        impostors: ``"within-group"`` counts an impostor pair for a group only when both
            identities are in it (pairs across groups are left out); ``"by-probe"`` counts it
            for the probe identity's group.
        target_fmr: the FMR the threshold is meant for; groups with fewer than ``1/target_fmr``
            impostor pairs are warned about.
        min_identities: groups with fewer identities are warned about.
        n_boot, seed, alpha: of the bootstrap (deterministic for a seed).

    Returns:
        ``GroupFigures`` per group name, sorted by name; groups with no counted pair are left out.

    Raises:
        ValueError: empty or mismatched inputs, NaN scores, an identity without a group, a
            non-finite threshold, ``target_fmr`` outside (0, 1).
    """
    values = check_scores(scores, name="pair scores", allow_minus_inf=False)
    threshold = check_threshold(threshold)
    if len(probe_ids) != values.size or len(reference_ids) != values.size:
        raise ValueError(
            f"probe_ids and reference_ids: {len(probe_ids)} and {len(reference_ids)} ids for {values.size} scores"
        )
    if target_fmr is not None:
        target_fmr = check_rate(target_fmr, name="target_fmr")
    if impostors not in ("within-group", "by-probe"):
        raise ValueError(f"impostors must be 'within-group' or 'by-probe', got {impostors!r}")
    probes = [str(p) for p in probe_ids]
    references = [str(r) for r in reference_ids]
    missing = sorted({i for i in (*probes, *references) if i not in group_of})
    if missing:
        raise ValueError(f"group_of: no group for {len(missing)} identities, e.g. {missing[:5]}")

    genuine = np.array([p == r for p, r in zip(probes, references, strict=True)])
    probe_group = np.array([str(group_of[p]) for p in probes], dtype=object)
    reference_group = np.array([str(group_of[r]) for r in references], dtype=object)
    if impostors == "within-group":
        counted_impostor = ~genuine & (probe_group == reference_group)
    else:
        counted_impostor = ~genuine
    identity_codes, identity_index = np.unique(np.array(probes, dtype=object).astype(str), return_inverse=True)
    matched = values >= threshold

    figures: dict[str, GroupFigures] = {}
    for g_index, group in enumerate(sorted(set(probe_group.tolist()))):
        in_group = probe_group == group
        gen = in_group & genuine
        imp = in_group & counted_impostor
        if not (gen.any() or imp.any()):
            continue
        members = np.unique(identity_index[gen | imp])
        n_ids = identity_codes.size
        # Per identity counts; only the group's members are resampled.
        gen_trials = np.bincount(identity_index[gen], minlength=n_ids)[members]
        gen_errors = np.bincount(identity_index[gen & ~matched], minlength=n_ids)[members]
        imp_trials = np.bincount(identity_index[imp], minlength=n_ids)[members]
        imp_errors = np.bincount(identity_index[imp & matched], minlength=n_ids)[members]
        n_genuine, n_impostor = int(gen_trials.sum()), int(imp_trials.sum())
        fnm, fm = int(gen_errors.sum()), int(imp_errors.sum())

        warning = _group_warnings(
            n_identities=int(members.size),
            n_genuine=n_genuine,
            n_impostor=n_impostor,
            false_non_matches=fnm,
            false_matches=fm,
            min_identities=min_identities,
            target_fmr=target_fmr,
        )
        if warning is not None:
            logger.info('group figures weak group="%s" reason="%s"', group, warning)
        figures[group] = GroupFigures(
            group=group,
            threshold=threshold,
            n_identities=int(members.size),
            n_pairs=n_genuine + n_impostor,
            n_genuine=n_genuine,
            n_impostor=n_impostor,
            false_non_matches=fnm,
            false_matches=fm,
            fnmr=fnm / n_genuine if n_genuine else math.nan,
            fnmr_ci=_interval(gen_errors, gen_trials, n_boot=n_boot, seed=(seed, g_index, 0), alpha=alpha),
            fmr=fm / n_impostor if n_impostor else math.nan,
            fmr_ci=_interval(imp_errors, imp_trials, n_boot=n_boot, seed=(seed, g_index, 1), alpha=alpha),
            warning=warning,
        )
    if not figures:
        raise ValueError("by_group: no pairs counted for any group")
    return figures


@dataclass(frozen=True, slots=True)
class Disparity:
    """Worst-to-best ratios of FMR and FNMR across groups.

    Attributes:
        fmr_ratio: worst FMR / best FMR; None when undefined (fewer than two groups with an
            FMR, or the best is 0: see ``fmr_unbounded``).
        fmr_worst: group with the highest FMR (None with no group to compare).
        fmr_best: group with the lowest FMR.
        fmr_unbounded: True when the best FMR is 0 and the worst is not: the ratio has no bound
            that the data can give (more impostor pairs are needed for the best group).
        fnmr_ratio, fnmr_worst, fnmr_best, fnmr_unbounded: the same for FNMR.
        warned_groups: compared groups whose figures carry a warning (read the ratios with them).
        notes: why a ratio is missing, in words.
    """

    fmr_ratio: float | None
    fmr_worst: str | None
    fmr_best: str | None
    fmr_unbounded: bool
    fnmr_ratio: float | None
    fnmr_worst: str | None
    fnmr_best: str | None
    fnmr_unbounded: bool
    warned_groups: tuple[str, ...]
    notes: tuple[str, ...]


def _ratio(values: dict[str, float], name: str) -> tuple[float | None, str | None, str | None, bool, str | None]:
    defined = {g: v for g, v in sorted(values.items()) if not math.isnan(v)}
    if len(defined) < 2:
        return None, None, None, False, f"{name}: fewer than two groups with a {name}"
    worst = max(defined, key=lambda g: defined[g])
    best = min(defined, key=lambda g: defined[g])
    if defined[best] > 0:
        return defined[worst] / defined[best], worst, best, False, None
    if defined[worst] > 0:
        return None, worst, best, True, (
            f"{name}: {best} has {name} 0 and {worst} {defined[worst]:.3g}: ratio unbounded"
        )
    return None, worst, best, False, f"{name}: every group has {name} 0: no ratio"


def disparity(groups: Mapping[str, GroupFigures]) -> Disparity:
    """Worst-to-best FMR and FNMR ratios of ``by_group``'s figures.

    Raises:
        ValueError: no groups.
    """
    if not groups:
        raise ValueError("disparity: no groups given (empty)")
    fmr = _ratio({g: f.fmr for g, f in groups.items()}, "FMR")
    fnmr = _ratio({g: f.fnmr for g, f in groups.items()}, "FNMR")
    return Disparity(
        fmr_ratio=fmr[0],
        fmr_worst=fmr[1],
        fmr_best=fmr[2],
        fmr_unbounded=fmr[3],
        fnmr_ratio=fnmr[0],
        fnmr_worst=fnmr[1],
        fnmr_best=fnmr[2],
        fnmr_unbounded=fnmr[3],
        warned_groups=tuple(sorted(g for g, f in groups.items() if f.warning is not None)),
        notes=tuple(note for note in (fmr[4], fnmr[4]) if note is not None),
    )


@dataclass(frozen=True, slots=True)
class CrossGroupFMR:
    """FMR of impostor pairs between every two groups at one threshold (NIST IR 8280's heatmaps).

    Attributes:
        groups: the groups, in the order of the matrices' rows and columns.
        threshold: the score threshold (a pair matches at or above it).
        n_impostor: ``(k, k)`` impostor pairs with one person in the row's group and one in the
            column's (symmetric: a pair has no direction); the diagonal is within-group.
        false_matches: ``(k, k)`` of those, the pairs scoring at or above the threshold.
        fmr: ``false_matches / n_impostor``, NaN where there is no pair.
    """

    groups: tuple[str, ...]
    threshold: float
    n_impostor: np.ndarray
    false_matches: np.ndarray
    fmr: np.ndarray


def cross_group_fmr(
    *,
    scores: np.ndarray,
    group_a: np.ndarray,
    group_b: np.ndarray,
    groups: Sequence[str],
    threshold: float,
) -> CrossGroupFMR:
    """FMR of the impostor pairs between each two groups, within-group on the diagonal.

    Args:
        scores: one score per impostor pair.
        group_a: the index into ``groups`` of each pair's first person; -1 leaves the pair out
            (the person has no group).
        group_b: the same for each pair's second person.
        groups: the group names.
        threshold: a pair matches when its score is at or above it.

    Returns:
        The symmetric count and rate matrices over ``groups`` (a group without pairs has NaN rates).

    Raises:
        ValueError: mismatched lengths, NaN scores, an index outside ``groups``, a non-finite threshold.
    """
    values = check_scores(scores, name="impostor scores", allow_empty=True, allow_minus_inf=False)
    threshold = check_threshold(threshold)
    a = np.asarray(group_a, dtype=np.int64)
    b = np.asarray(group_b, dtype=np.int64)
    if a.shape != values.shape or b.shape != values.shape:
        raise ValueError(f"group_a and group_b: expected {values.shape} indices, got {a.shape} and {b.shape}")
    k = len(groups)
    if k == 0:
        raise ValueError("cross_group_fmr: no groups given (empty)")
    if (a >= k).any() or (b >= k).any() or (a < -1).any() or (b < -1).any():
        raise ValueError(f"group_a and group_b: indices must be -1 or in [0, {k})")
    has = (a >= 0) & (b >= 0)
    low, high = np.minimum(a[has], b[has]), np.maximum(a[has], b[has])
    cell = low * k + high
    matched = values[has] >= threshold
    n = np.bincount(cell, minlength=k * k).reshape(k, k)
    fm = np.bincount(cell[matched], minlength=k * k).reshape(k, k)
    # A pair between A and B counts for the cell (A, B) and the cell (B, A) alike.
    n = n + np.triu(n, 1).T
    fm = fm + np.triu(fm, 1).T
    fmr = np.where(n > 0, fm / np.maximum(n, 1), np.nan)
    return CrossGroupFMR(groups=tuple(str(g) for g in groups), threshold=threshold, n_impostor=n,
                         false_matches=fm, fmr=fmr)
