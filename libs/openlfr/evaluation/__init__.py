"""Accuracy measurement, in the figures NIST reports and in scores as deployments use them.

- ``verification``: 1:1 ROC, EER and FNMR@FMR over distances (the original helpers).
- ``metrics``: input checks, thresholds at a target rate (empirical or tail-fitted) and the
  1:1 verification curve and summary over scores.
- ``identification``: 1:N open-set FNIR/FPIR, rank 1, and FPIR against gallery size.
- ``groups``: FMR/FNMR per group with identity-resampled intervals, and disparity ratios.
- ``calibration``: a deployment threshold from a target FPIR and watchlist size, and the share
  of alerts that will be wrong.
- ``tracks``: what the match stage's multi-frame vote does to the rates.
"""
