"""The group charts of the evaluation report: rates per group with their 95% intervals, and the
cross-group FMR heatmap (as NIST IR 8280 draws them).

Like :mod:`openlfr.evaluation.plots`, each function takes plain values and a path, writes one
SVG and returns the path. A rate of 0 is never drawn as if it were measured: its point is
hollow, sits on a dashed "0" line (log axes) or at 0 (linear axes), and a dashed whisker
reaches the rule-of-three bound ``3 / n``, below which the true rate lies with about 95%
confidence. A group whose rate is undefined (no pairs of the kind) is listed as ``n/a``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openlfr.evaluation.plots import RATE_FLOOR, ZERO_GAP, pyplot_agg, save_figure

logger = logging.getLogger(__name__)

#: A panel goes to a log axis when its positive values span more than this factor.
LOG_SPAN = 10.0


@dataclass(frozen=True, slots=True)
class GroupRate:
    """One group's rate in a panel.

    Attributes:
        group: the group's name.
        rate: the rate, None when undefined (no trials).
        ci: its 95% interval ``(low, high)``, None when there is none.
        n: the trials (pairs or searches) behind it.
    """

    group: str
    rate: float | None
    ci: tuple[float, float] | None
    n: int


@dataclass(frozen=True, slots=True)
class RatePanel:
    """One rate of a group chart (e.g. FMR), one row per group.

    Attributes:
        name: the rate's name (``"FMR"``).
        rows: the groups, top to bottom.
        title: the panel's title (the threshold, the worst/best ratio).
        trials: what ``n`` counts (``"impostor pairs"``).
    """

    name: str
    rows: tuple[GroupRate, ...]
    title: str
    trials: str


def rule_of_three(n: int) -> float:
    """The ~95% upper bound of a rate with no error in ``n`` trials (``3 / n``, at most 1)."""
    return min(1.0, 3.0 / n) if n > 0 else 1.0


def _pct(value: float) -> str:
    x = 100.0 * value
    if x == 0:
        return "0%"
    decimals = max(0, 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}%"


def _row_label(row: GroupRate, trials: str) -> str:
    if row.rate is None:
        return f"{row.group}\nn/a (no {trials})"
    if row.rate == 0:
        return f"{row.group}\n0 of {row.n:,} (< {_pct(rule_of_three(row.n))})"
    interval = f" [{_pct(row.ci[0])}, {_pct(row.ci[1])}]" if row.ci is not None else ""
    return f"{row.group}\n{_pct(row.rate)}{interval}, n={row.n:,}"


def _panel(ax, panel: RatePanel) -> None:  # noqa: ANN001 - a matplotlib Axes
    rows = panel.rows
    defined = [r for r in rows if r.rate is not None]
    values = [v for r in defined for v in (r.rate, *(r.ci or ()), rule_of_three(r.n) if r.rate == 0 else 0.0)]
    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > LOG_SPAN
    if log:
        zero = max(RATE_FLOOR, min(positive) / 4)
        ax.set_xscale("log")
        ax.set_xlim(zero / ZERO_GAP, min(1.5, max(positive) * 3))
        ax.axvline(zero, color="0.55", linestyle="--", linewidth=0.7, zorder=1)
        ax.text(zero, 1.0, " 0", va="bottom", ha="center", fontsize=7, color="0.35",
                transform=ax.get_xaxis_transform())
    else:
        zero = 0.0
        top = max(positive, default=1.0)
        ax.set_xlim(-0.04 * top, min(1.0, top * 1.15) if top < 1 else 1.04)
    y = np.arange(len(rows))[::-1]
    for row, yy in zip(rows, y, strict=True):
        if row.rate is None:
            continue
        if row.rate == 0:
            bound = rule_of_three(row.n)
            ax.plot([zero, bound], [yy, yy], color="C3", linestyle="--", linewidth=1.0)
            ax.plot([bound], [yy], marker="|", color="C3", markersize=8)
            ax.plot([zero], [yy], marker="o", markerfacecolor="white", color="C3", markersize=5,
                    gid=f"zero-{row.group}", zorder=3)
            continue
        low, high = row.ci if row.ci is not None else (row.rate, row.rate)
        if log and low <= 0:
            # The interval reaches 0: the whisker runs to the "0" line, with an open end.
            ax.plot([zero], [yy], marker="<", color="C0", markersize=4)
            low = zero
        ax.errorbar([row.rate], [yy], xerr=[[row.rate - low], [high - row.rate]], fmt="o", color="C0",
                    ecolor="C0", elinewidth=1.2, capsize=3, markersize=4, zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels([_row_label(r, panel.trials) for r in rows], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    scale = f"log, 0 on the dashed line at {zero:.2g}" if log else "linear"
    ax.set_xlabel(f"{panel.name} ({scale}); 95% CI; hollow: 0, dashed to 3/n", fontsize=7)
    ax.set_title(panel.title, fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.25)


def group_rates(path: Path, panels: Sequence[RatePanel], *, title: str) -> Path:
    """Rates per group with 95% intervals as whiskers, one panel per rate (two columns).

    Args:
        path: the SVG file to write.
        panels: the rates to draw; each should have at least one defined rate.
        title: the figure's title.

    Raises:
        ValueError: no panel given.
    """
    if not panels:
        raise ValueError("group_rates: no panel given (empty)")
    plt = pyplot_agg()
    n_cols = min(2, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    k = max(len(p.rows) for p in panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.6 * n_cols, n_rows * (0.55 * k + 1.3) + 0.5),
                             squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _panel(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def rate_heatmap(
    path: Path,
    *,
    groups: Sequence[str],
    rates: np.ndarray,
    n: np.ndarray,
    errors: np.ndarray,
    title: str,
    rate_name: str = "FMR",
) -> Path:
    """A group-by-group matrix of rates, log colour scale, each cell's rate and counts written in it.

    Args:
        path: the SVG file to write.
        groups: the row and column names.
        rates: ``(k, k)`` rates, NaN where a cell has no trial.
        n: ``(k, k)`` trials.
        errors: ``(k, k)`` errors (false matches).
        title: the figure's title.
        rate_name: what the rate is (the colour bar's label).

    Raises:
        ValueError: matrices not ``(k, k)`` for ``k`` groups.
    """
    from matplotlib.colors import LogNorm

    k = len(groups)
    rates = np.asarray(rates, np.float64)
    n = np.asarray(n)
    errors = np.asarray(errors)
    if k == 0 or rates.shape != (k, k) or n.shape != (k, k) or errors.shape != (k, k):
        raise ValueError(f"rate_heatmap: expected ({k}, {k}) matrices, got {rates.shape}, {n.shape}, {errors.shape}")
    plt = pyplot_agg()
    side = max(4.4, 0.95 * k + 2.2)
    fig, ax = plt.subplots(figsize=(side + 1.3, side))
    positive = rates[np.isfinite(rates) & (rates > 0)]
    vmin = float(positive.min()) if positive.size else RATE_FLOOR
    vmax = float(positive.max()) if positive.size else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin / 10, vmin * 10 if vmin * 10 <= 1 else 1.0
    norm = LogNorm(vmin=vmin, vmax=vmax)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad="white")
    shown = np.ma.masked_where(~(np.isfinite(rates) & (rates > 0)), rates)
    image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    for i in range(k):
        for j in range(k):
            if n[i, j] == 0:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", edgecolor="none"))
                ax.text(j, i, "no pairs", ha="center", va="center", fontsize=7, color="0.3")
                continue
            if rates[i, j] == 0:
                text = f"0\n0/{int(n[i, j]):,}\n(< {_pct(rule_of_three(int(n[i, j])))})"
                color = "black"
            else:
                text = f"{_pct(float(rates[i, j]))}\n{int(errors[i, j]):,}/{int(n[i, j]):,}"
                color = "white" if norm(rates[i, j]) > 0.65 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if k <= 6 else 6, color=color)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_yticklabels(groups, fontsize=8)
    ax.set_xlabel("group of the other person")
    ax.set_ylabel("group of one person")
    # Cell borders, so that white (zero) cells stand apart.
    ax.set_xticks(np.arange(-0.5, k), minor=True)
    ax.set_yticks(np.arange(-0.5, k), minor=True)
    ax.grid(which="minor", color="0.6", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(f"{rate_name} (log colour; white: 0, grey: no pairs)", fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
