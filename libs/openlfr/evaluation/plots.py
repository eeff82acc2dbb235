"""The evaluation report's plots, drawn with matplotlib (Agg) and written as SVG files.

Each function takes plain arrays and a path, writes one figure and returns the path; none
reads metrics files or knows the report's layout. Rates are drawn on log axes (as NIST's
FRVT reports draw DET curves). A rate of 0 has no place on a log axis: it is drawn on a dashed
"0" line a little above the axis edge (``ZERO_GAP``), and its points are marked, so a curve
whose rates are all zero is seen, not hidden under the axis' spine. The group charts
(``group_rates``, ``rate_heatmap``) are in :mod:`openlfr.evaluation.plots_groups`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Lowest rate a log axis shows; rates of 0 are drawn here.
RATE_FLOOR = 1e-5
#: How far (a factor) the axis reaches below the line where rates of 0 are drawn.
ZERO_GAP = 10 ** 0.5
#: Floored points marked per curve at most (a DET curve may have hundreds at 0).
MAX_ZERO_MARKS = 12

_FIGSIZE = (6.4, 4.4)


def pyplot_agg():  # noqa: ANN202 - matplotlib.pyplot, imported lazily with the Agg backend
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "openlfr", "font.size": 9})
    return plt


def save_figure(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Write the figure as SVG (or PNG for a .png path) and close it."""
    plt = pyplot_agg()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    if path.suffix.lower() == ".png":
        fig.savefig(path, format="png", dpi=110)
    else:
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": "openlfr evaluate"})
    plt.close(fig)
    return path


def _floor(values: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(np.asarray(values, np.float64), floor)


def _zero_line(ax, lo: float, *, axis: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Put the axis limit below ``lo`` and draw the dashed line where rates of 0 sit."""
    if axis == "x":
        ax.set_xlim(lo / ZERO_GAP, 1.0)
        ax.axvline(lo, color="0.55", linestyle="--", linewidth=0.7, zorder=1)
        ax.text(lo, 1.0, " 0", va="top", ha="left", fontsize=7, color="0.35", transform=ax.get_xaxis_transform())
    else:
        ax.set_ylim(lo / ZERO_GAP, 1.0)
        ax.axhline(lo, color="0.55", linestyle="--", linewidth=0.7, zorder=1)
        ax.text(0.0, lo, " 0", va="bottom", ha="left", fontsize=7, color="0.35", transform=ax.get_yaxis_transform())


def _mark_zeros(ax, x: np.ndarray, y: np.ndarray, zero: np.ndarray, *, color: str, gid: str,  # noqa: ANN001
                marker: str) -> None:
    """Mark (a thinned selection of) the points drawn on the "0" line."""
    index = np.flatnonzero(zero)
    if index.size == 0:
        return
    if index.size > MAX_ZERO_MARKS:
        index = index[np.linspace(0, index.size - 1, MAX_ZERO_MARKS).round().astype(int)]
    ax.plot(x[index], y[index], linestyle="none", marker=marker, markersize=4, markerfacecolor="none",
            color=color, gid=gid, zorder=3)


def det_curves(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    marks: Sequence[tuple[float, str]] = (),
    floor: float | None = None,
) -> Path:
    """DET curves: for each label, (false positive rates, false negative rates), log-log.

    Args:
        path: the SVG file to write.
        curves: label -> (x rates, y rates), same length, any order.
        title: the figure's title.
        x_label: e.g. ``"FMR"`` or ``"FPIR"``.
        y_label: e.g. ``"FNMR"`` or ``"FNIR"``.
        marks: vertical lines (x value, label), e.g. the target FPIRs.
        floor: lowest rate drawn (default: the smallest positive rate plotted, at most 1e-3).
    """
    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    positive = [v[v > 0] for x, y in curves.values() for v in (np.asarray(x), np.asarray(y))]
    smallest = min((float(v.min()) for v in positive if v.size), default=1e-3)
    lo = floor if floor is not None else max(RATE_FLOOR, min(1e-3, smallest / 2))
    for index, (label, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size == 0:
            continue
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        zero = (x <= 0) | (y <= 0)
        if zero.any():
            label = f"{label} (0 on the dashed line)"
        (line,) = ax.step(_floor(x, lo), _floor(y, lo), where="post", label=label, linewidth=1.3,
                          gid=f"curve-{index}", zorder=2)
        color = line.get_color()
        if np.unique(np.stack([x, y]), axis=1).shape[1] == 1:  # one point: a step draws nothing
            ax.plot(_floor(x[:1], lo), _floor(y[:1], lo), "o", color=color, markersize=4, zorder=3)
        # A rate of 0 on the y axis points down to it, on the x axis left.
        _mark_zeros(ax, _floor(x, lo), _floor(y, lo), y <= 0, color=color, gid=f"zeros-{index}", marker="v")
        _mark_zeros(ax, _floor(x, lo), _floor(y, lo), (x <= 0) & (y > 0), color=color, gid=f"zeros-x-{index}",
                    marker="<")
    for value, label in marks:
        if value > 0:
            ax.axvline(value, color="0.5", linestyle=":", linewidth=0.9)
            ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7, color="0.35",
                    transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_yscale("log")
    _zero_line(ax, lo, axis="x")
    _zero_line(ax, lo, axis="y")
    ax.set_xlabel(f"{x_label} (log; 0 drawn on the dashed line at {lo:g}, points there marked)")
    ax.set_ylabel(f"{y_label} (log; 0 drawn at {lo:g}, marked)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if curves:
        # Upper right: DET curves run from upper left to lower right, and zeros lie along the bottom.
        ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)


def score_histograms(
    path: Path,
    series: Mapping[str, np.ndarray],
    *,
    title: str,
    thresholds: Sequence[tuple[float, str]] = (),
    bins: int = 60,
) -> Path:
    """Histograms (densities) of score sets on one axis, with thresholds marked.

    Args:
        path: the SVG file to write.
        series: label -> scores (e.g. ``{"genuine": ..., "impostor": ...}``).
        title: the figure's title.
        thresholds: vertical lines (score, label).
        bins: bins over the range of all scores.
    """
    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    finite = [np.asarray(v, np.float64)[np.isfinite(v)] for v in series.values()]
    every = np.concatenate([v for v in finite if v.size] or [np.array([0.0, 1.0])])
    edges = np.linspace(float(every.min()), float(every.max()) + 1e-9, bins + 1)
    for (label, _), values in zip(series.items(), finite):
        if values.size:
            ax.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.45,
                    label=f"{label} (n={values.size:,})")
    for value, label in thresholds:
        if np.isfinite(value):
            ax.axvline(value, color="0.2", linestyle="--", linewidth=0.9)
            ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7,
                    transform=ax.get_xaxis_transform())
    ax.set_xlabel("similarity score (1 - distance/2)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, alpha=0.25)
    return save_figure(fig, path)


def rate_vs_threshold(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    y_label: str,
    thresholds: Sequence[tuple[float, str]] = (),
) -> Path:
    """A rate (log) against the score threshold, one line per label (e.g. FMR per group).

    Args:
        path: the SVG file to write.
        curves: label -> (thresholds ascending, rates).
        title: the figure's title.
        y_label: the rate's name.
        thresholds: vertical lines (score, label).
    """
    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    lo = RATE_FLOOR
    for index, (label, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size:
            (line,) = ax.step(x, _floor(y, lo), where="post", label=label, linewidth=1.2, gid=f"curve-{index}")
            # Only where the rate first reaches 0: the rest of the flat run needs no marks.
            zero = (y <= 0) & np.concatenate([[True], y[:-1] > 0])
            _mark_zeros(ax, x, _floor(y, lo), zero, color=line.get_color(), gid=f"zeros-{index}", marker="v")
    for value, label in thresholds:
        if np.isfinite(value):
            ax.axvline(value, color="0.2", linestyle="--", linewidth=0.9)
            ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7,
                    transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    _zero_line(ax, lo, axis="y")
    # Start where some rate has fallen below 0.9: lower thresholds only show rates near 1.
    starts = [float(np.asarray(x)[np.argmax(np.asarray(y) < 0.9)]) for x, y in curves.values()
              if np.asarray(y).size and (np.asarray(y) < 0.9).any()]
    if starts:
        ax.set_xlim(max(0.0, min(starts) - 0.05), 1.0)
    ax.set_xlabel("threshold (similarity score)")
    ax.set_ylabel(f"{y_label} (log; 0 drawn on the dashed line at {lo:g}, marked)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def fpir_vs_gallery(
    path: Path,
    *,
    measured: Sequence[tuple[int, float]],
    model: Sequence[tuple[int, float]],
    title: str,
    marks: Sequence[tuple[int, str]] = (),
) -> Path:
    """FPIR against gallery size: measured points and the extrapolation model's curve.

    Args:
        path: the SVG file to write.
        measured: (gallery size, measured FPIR) points.
        model: (gallery size, modelled FPIR) points, drawn as a line (may reach beyond the data).
        title: the figure's title.
        marks: vertical lines (gallery size, label), e.g. the stated watchlist size.
    """
    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    lo = RATE_FLOOR
    if model:
        xs, ys = zip(*sorted(model))
        ax.plot(xs, _floor(np.array(ys), lo), color="C1", linewidth=1.3, label="model 1-(1-FMR)^N")
    if measured:
        xs, ys = zip(*sorted(measured))
        ys = np.array(ys, np.float64)
        ax.plot(xs, _floor(ys, lo), "o", color="C0", markersize=4, label="measured")
        _mark_zeros(ax, np.array(xs, np.float64), _floor(ys, lo), ys <= 0, color="C0", gid="zeros-measured",
                    marker="v")
    for value, label in marks:
        ax.axvline(value, color="0.5", linestyle=":", linewidth=0.9)
        ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7,
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_yscale("log")
    _zero_line(ax, lo, axis="y")
    ax.set_xlabel("gallery size N (enrolled identities, log)")
    ax.set_ylabel(f"FPIR at the threshold (log; 0 drawn on the dashed line at {lo:g})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


def data_uri(path: Path) -> str:
    """A plot file as a ``data:`` URI (base64), so an HTML page carries it without a link.

    An ``<img>`` with a data URI, rather than SVG markup inlined in the page, keeps each
    figure's element ids (matplotlib's clip paths) from clashing with another figure's.
    """
    import base64

    path = Path(path)
    mime = {".svg": "image/svg+xml", ".png": "image/png"}.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"data_uri: unsupported plot file type {path.suffix!r}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
