"""1:1 verification figures from genuine and impostor distances.

Distances, not similarities: a pair is declared "same person" when its distance is at or
below the threshold (dlib's descriptors are compared by Euclidean distance; 0.6 is dlib's
customary threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Roc:
    """False match and false non-match rates over the thresholds where either changes."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def roc(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    """FMR(t) = share of impostor distances <= t; FNMR(t) = share of genuine distances > t.

    Raises:
        ValueError: either set of distances is empty.
    """
    genuine = np.sort(np.asarray(genuine, np.float64))
    impostor = np.sort(np.asarray(impostor, np.float64))
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(f"need genuine and impostor distances, got {genuine.size} and {impostor.size}")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    fmr = np.searchsorted(impostor, thresholds, side="right") / impostor.size
    fnmr = 1.0 - np.searchsorted(genuine, thresholds, side="right") / genuine.size
    return Roc(thresholds=thresholds, fmr=fmr, fnmr=fnmr)


def equal_error_rate(curve: Roc) -> tuple[float, float]:
    """(EER, threshold): where FMR and FNMR cross, interpolated between the two nearest points."""
    diff = curve.fmr - curve.fnmr
    # FMR rises and FNMR falls with the threshold, so diff is non-decreasing.
    i = int(np.searchsorted(diff, 0.0, side="left"))
    if i == 0:
        return float((curve.fmr[0] + curve.fnmr[0]) / 2), float(curve.thresholds[0])
    if i >= diff.size:
        return float((curve.fmr[-1] + curve.fnmr[-1]) / 2), float(curve.thresholds[-1])
    d0, d1 = diff[i - 1], diff[i]
    w = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    eer = (1 - w) * (curve.fmr[i - 1] + curve.fnmr[i - 1]) / 2 + w * (curve.fmr[i] + curve.fnmr[i]) / 2
    thr = (1 - w) * curve.thresholds[i - 1] + w * curve.thresholds[i]
    return float(eer), float(thr)


def fnmr_at_fmr(curve: Roc, target_fmr: float) -> tuple[float, float]:
    """(FNMR, threshold) at the largest threshold whose FMR does not exceed ``target_fmr``."""
    ok = np.nonzero(curve.fmr <= target_fmr)[0]
    if ok.size == 0:
        return 1.0, float("-inf")
    i = int(ok[-1])
    return float(curve.fnmr[i]), float(curve.thresholds[i])
