"""The evaluation report's plots, drawn with matplotlib (Agg) and written as SVG files.

Each function takes plain arrays and a path, writes one figure and returns the path; none
reads metrics files or knows the report's layout. Rates are drawn on log axes (as NIST's
FRVT reports draw DET curves), with zero rates clipped to the axis floor so they stay visible.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Lowest rate a log axis shows; rates of 0 are drawn here.
RATE_FLOOR = 1e-5

_FIGSIZE = (6.4, 4.4)


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, imported lazily with the Agg backend
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "openlfr", "font.size": 9})
    return plt


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Write the figure as SVG (or PNG for a .png path) and close it."""
    plt = _pyplot()
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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    positive = [v[v > 0] for x, y in curves.values() for v in (np.asarray(x), np.asarray(y))]
    smallest = min((float(v.min()) for v in positive if v.size), default=1e-3)
    lo = floor if floor is not None else max(RATE_FLOOR, min(1e-3, smallest / 2))
    for label, (x, y) in curves.items():
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size == 0:
            continue
        order = np.argsort(x, kind="stable")
        ax.step(_floor(x[order], lo), _floor(y[order], lo), where="post", label=label, linewidth=1.3)
    for value, label in marks:
        if value > 0:
            ax.axvline(value, color="0.5", linestyle=":", linewidth=0.9)
            ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7, color="0.35",
                    transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel(f"{x_label} (log; 0 drawn at {lo:g})")
    ax.set_ylabel(f"{y_label} (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


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
    plt = _pyplot()
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
    return _save(fig, path)


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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    lo = RATE_FLOOR
    for label, (x, y) in curves.items():
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size:
            ax.step(x, _floor(y, lo), where="post", label=label, linewidth=1.2)
    for value, label in thresholds:
        if np.isfinite(value):
            ax.axvline(value, color="0.2", linestyle="--", linewidth=0.9)
            ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7,
                    transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylim(lo, 1.0)
    # Start where some rate has fallen below 0.9: lower thresholds only show rates near 1.
    starts = [float(np.asarray(x)[np.argmax(np.asarray(y) < 0.9)]) for x, y in curves.values()
              if np.asarray(y).size and (np.asarray(y) < 0.9).any()]
    if starts:
        ax.set_xlim(max(0.0, min(starts) - 0.05), 1.0)
    ax.set_xlabel("threshold (similarity score)")
    ax.set_ylabel(f"{y_label} (log; 0 drawn at {lo:g})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    lo = RATE_FLOOR
    if model:
        xs, ys = zip(*sorted(model))
        ax.plot(xs, _floor(np.array(ys), lo), color="C1", linewidth=1.3, label="model 1-(1-FMR)^N")
    if measured:
        xs, ys = zip(*sorted(measured))
        ax.plot(xs, _floor(np.array(ys), lo), "o", color="C0", markersize=4, label="measured")
    for value, label in marks:
        ax.axvline(value, color="0.5", linestyle=":", linewidth=0.9)
        ax.text(value, 1.0, f" {label}", rotation=90, va="top", ha="right", fontsize=7,
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel("gallery size N (enrolled identities, log)")
    ax.set_ylabel(f"FPIR at the threshold (log; 0 drawn at {lo:g})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


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
