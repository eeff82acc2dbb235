"""Background cohort: faces of people on no watchlist, and what they calibrate.

* ``norm``: per-reference and per-probe statistics against the cohort and the normalised
  score (adaptive symmetric score normalisation) the match stage decides on.
* ``cohort``: the cohort file (``openlfr cohort build``): vectors, model version, fingerprint.
* ``calibration``: the normalised (and raw) impostor scores of the cohort's held-out half, from
  which a threshold for any per-comparison false-match target is read.
* ``policy``: a deployment's operating point from its watchlist size and target FPIR, and the
  check that refuses a threshold whose expected FPIR exceeds what the operator accepts.
"""
