"""Figures by group of an evaluation run: ``metrics.json``'s ``groups`` section and the per-group
curves.

Per attribute column, each identity takes its most common value; FMR and FNMR at one shared
threshold (impostors within the group, as NIST counts them), FPIR and FNIR of the 1:N searches
at the ``fpir_targets[0]`` threshold, identity-resampled bootstrap intervals and the
worst-to-best ratios, and the FMR of impostor pairs between every two groups
(``cross_group_fmr``, NIST IR 8280's heatmaps). The maths is :mod:`openlfr.evaluation.groups`'s;
the raw and the normalised (``normalised``) figures both come through ``group_figures``.
``draw_group_plots`` draws the section's charts (:mod:`openlfr.evaluation.plots_groups`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from openlfr.evaluation import groups as groups_mod
from openlfr.evaluation import identification as ident
from openlfr.evaluation import metrics as met
from openlfr.evaluation.dataset import Dataset
from openlfr.evaluation.run_common import EvaluationConfig, Sample, clean_json, rate_key, thin_curve
from openlfr.evaluation.run_pairs import Pairs


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


def group_figures(
    dataset: Dataset,
    by_identity: Mapping[str, list[Sample]],
    pairs: Pairs,
    identity_names: Sequence[str],
    summary: met.VerificationSummary | None,
    open_set: tuple[ident.OpenSetResult, list[Sample], float] | None,
    config: EvaluationConfig,
    plot_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
) -> dict[str, Any]:
    """The ``groups`` section: per attribute column, the figures of each value; curves go into ``plot_curves``."""
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
            if pairs.impostor.size:
                section["cross_group_fmr"] = _cross_group(pairs, identity_names, group_of, sorted(counts),
                                                          pair_threshold)
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


def _cross_group(
    pairs: Pairs, identity_names: Sequence[str], group_of: Mapping[str, str], groups: Sequence[str], threshold: float
) -> dict[str, Any]:
    """``cross_group_fmr``: FMR of the impostor pairs between each two groups (within-group on the diagonal)."""
    index = {g: i for i, g in enumerate(groups)}
    code = np.array([index.get(group_of.get(name, ""), -1) for name in identity_names], dtype=np.int64)
    cross = groups_mod.cross_group_fmr(
        scores=pairs.impostor, group_a=code[pairs.impostor_ids[:, 0]], group_b=code[pairs.impostor_ids[:, 1]],
        groups=groups, threshold=threshold,
    )
    rule = ("impostor pairs with one person in the row's group and the other in the column's (a pair counts once, "
            "the matrices are symmetric); the diagonal is the within-group FMR of `values`")
    if pairs.impostor_sampled:
        rule += (f"; the impostor pairs are a seeded uniform sample of {pairs.impostor.size:,} of "
                 f"{pairs.impostor_total:,}, so each cell is an estimate")
    return clean_json({
        "threshold": threshold,
        "groups": list(cross.groups),
        "fmr": cross.fmr,
        "n_impostor": cross.n_impostor,
        "false_matches": cross.false_matches,
        "impostor_sampled": pairs.impostor_sampled,
        "rule": rule,
    })


def _group_eer(pairs: Pairs, group_of: Mapping[str, str], names: Sequence[str], group: str) -> float | None:
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


# -- the charts --------------------------------------------------------------------------------

#: The rates of the per-group chart: (name, section key, disparity key, trials key, trials in words).
_RATES = (
    ("FMR", "verification", "disparity", "n_impostor", "impostor pairs"),
    ("FNMR", "verification", "disparity", "n_genuine", "genuine pairs"),
    ("FPIR", "identification", "identification_disparity", "n_nonmated", "non-mated searches"),
    ("FNIR", "identification", "identification_disparity", "n_mated", "mated searches"),
)


def _ratio_text(name: str, ratio: Mapping[str, Any] | None, rows: Sequence[Any]) -> str:
    """``worst/best 1.9 (male/female)``; for a best group at 0, the bound the rule of three gives."""
    from openlfr.evaluation.plots_groups import rule_of_three

    key = name.lower()
    if not ratio:
        return "worst/best: n/a"
    if ratio.get(f"{key}_ratio") is not None:
        return f"worst/best {ratio[f'{key}_ratio']:.3g} ({ratio[f'{key}_worst']}/{ratio[f'{key}_best']})"
    if ratio.get(f"{key}_unbounded"):
        best, worst = ratio[f"{key}_best"], ratio[f"{key}_worst"]
        by_group = {r.group: r for r in rows}
        if best in by_group and worst in by_group and by_group[worst].rate:
            bound = by_group[worst].rate / rule_of_three(by_group[best].n)
            return f"worst/best unbounded ({best} has 0; at least {bound:.3g} by the rule of three)"
        return f"worst/best unbounded ({best} has 0)"
    return "worst/best: n/a"


def _rate_panels(section: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """The panels of a column's chart, and the rates that no group has (named with why)."""
    from openlfr.evaluation.plots_groups import GroupRate, RatePanel

    panels, missing = [], []
    for name, part, ratio_key, trials_key, trials in _RATES:
        rows = []
        for group, entry in section["values"].items():
            figures = entry.get(part) or {}
            rate = figures.get(name.lower())
            interval = figures.get(f"{name.lower()}_ci")
            ci = (float(interval[0]), float(interval[1])) if interval and None not in interval else None
            rows.append(GroupRate(group=group, rate=None if rate is None else float(rate), ci=ci,
                                  n=int(figures.get(trials_key) or 0)))
        if all(r.rate is None for r in rows):
            missing.append(f"{name} (no group has {trials})")
            continue
        threshold = section.get(f"{part}_threshold")
        at = f" at {threshold:.4f}" if threshold is not None else ""
        panels.append(RatePanel(name=name, rows=tuple(rows), trials=trials,
                                title=f"{name}{at}\n{_ratio_text(name, section.get(ratio_key), rows)}"))
    return panels, missing


def draw_group_plots(
    groups: Mapping[str, Any],
    group_curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    add: Callable[[str, str, Callable[[Path], Path]], None],
    *,
    threshold_label: str,
) -> None:
    """Draw the ``groups`` section's charts through ``add(name, title, draw)`` (``run._draw``'s).

    Per attribute column: FMR against threshold (``fmr_by_``) and the DET (``det_by_``) from
    ``group_curves``; the rates with their 95% intervals (``rates_by_``); the cross-group FMR
    heatmap (``cross_fmr_by_``).
    """
    from openlfr.evaluation import plots
    from openlfr.evaluation import plots_groups

    for name, curves in sorted(group_curves.items()):
        column = name.split("_by_", 1)[1]
        if name.startswith("fmr_by_"):
            thr = groups.get(column, {}).get("verification_threshold")
            lines = [(thr, threshold_label)] if thr is not None else []
            add(name, f"FMR against threshold by {column} (impostors within the group)",
                lambda p, c=curves, col=column, ln=lines: plots.rate_vs_threshold(
                    p, c, title=f"FMR by {col}", y_label="FMR", thresholds=ln))
        else:
            add(name, f"1:1 DET by {column}", lambda p, c=curves, col=column: plots.det_curves(
                p, c, title=f"1:1 DET by {col} (within-group impostors)", x_label="FMR", y_label="FNMR"))
    for column, section in groups.items():
        if not section.get("available"):
            continue
        panels, missing = _rate_panels(section)
        if panels:
            names = ", ".join(p.name for p in panels)
            head = next((p.title.split("\n", 1)[1] for p in panels if p.name == "FMR"), "")
            title = f"{names} by {column} with 95% CIs" + (f" (FMR {head})" if head else "")
            suptitle = f"{names} by {column}, 95% CIs (people resampled)" + (
                "\nnot measurable: " + "; ".join(missing) if missing else "")
            add(f"rates_by_{column}", title, lambda p, pn=panels, st=suptitle: plots_groups.group_rates(
                p, pn, title=st))
        cross = section.get("cross_group_fmr")
        if cross and any(any(row) for row in cross["n_impostor"]):
            fmr = np.array([[math.nan if v is None else v for v in row] for row in cross["fmr"]], np.float64)
            title = f"FMR between groups of {column} at {cross['threshold']:.4f} (diagonal: within the group)"
            add(f"cross_fmr_by_{column}", title, lambda p, c=cross, f=fmr, t=title: plots_groups.rate_heatmap(
                p, groups=c["groups"], rates=f, n=np.array(c["n_impostor"]), errors=np.array(c["false_matches"]),
                title=t))
