"""The cohort file: faces of people on no watchlist, embedded by one model version.

``openlfr cohort build`` writes it from a folder of images (one folder per person, or a flat
folder of one image per person with ``--one-per-person``, or a labels table). The faces are
split, by person, into two parts: the *stats* part, against which every reference and probe
gets its statistics (``openlfr.cohort.norm``), and the *calibration* part, whose pairs give the
impostor (and, where a person has two images, genuine) scores that thresholds are read from
(``openlfr.cohort.calibration``). Keeping them apart is what makes the calibration honest: a
score normalised by statistics that include that very pair looks less surprising than a
stranger's will.

The file (``.npz``) holds the vectors, the split, the calibration scores and a JSON header:
schema, model version, fingerprint (SHA-256 over every face's image hash and person, and the
model version), the source, counts and the settings. Nothing in it identifies who the cohort's
people are beyond the labels the operator gave; no image is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openlfr.cohort.calibration import CohortCalibration, calibrate_cohort
from openlfr.cohort.exceptions import CohortError
from openlfr.cohort.norm import DEFAULT_TOP_FRACTION, ScoreNorm, top_k_for

logger = logging.getLogger(__name__)

SCHEMA = "openlfr.cohort/1"
#: Fewest faces a cohort may have: below this neither part can calibrate anything.
MIN_COHORT = 40


@dataclass(frozen=True, slots=True)
class CohortFace:
    """One face of the cohort: its vector, the image's SHA-256 and its person ("" = unknown, a
    person of their own)."""

    vector: np.ndarray = field(repr=False)
    sha256: str
    identity: str = ""


def fingerprint(faces: Sequence[CohortFace], model_version: str) -> str:
    """SHA-256 over the model version and every face's image hash and person, order-free."""
    digest = hashlib.sha256(model_version.encode())
    for sha, identity in sorted((f.sha256, f.identity) for f in faces):
        digest.update(f"\n{sha}|{identity}".encode())
    return digest.hexdigest()


def split_parts(faces: Sequence[CohortFace]) -> np.ndarray:
    """0 (stats) or 1 (calibration) per face; all faces of one person in the same part.

    People are ordered by a hash of who they are and dealt alternately, so the split is
    deterministic, balanced in people and independent of the order the files were listed in.
    """
    keys = [f.identity or f"image:{f.sha256}" for f in faces]
    people = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    part_of = {person: i % 2 for i, person in enumerate(people)}
    return np.array([part_of[k] for k in keys], dtype=np.int8)


@dataclass(frozen=True)
class Cohort:
    """A built cohort: vectors, split, calibration and provenance.

    Attributes:
        vectors: (n, d) float32.
        identities: per face, its person ("" unknown).
        parts: per face, 0 (stats) or 1 (calibration).
        model_version: the embedder version that made the vectors; never used with another.
        fingerprint: see ``fingerprint``.
        top_fraction: share of the stats part a statistic is taken over.
        calibration: the held-out part's scores.
        meta: the JSON header (source, counts, created_at, ...).
    """

    vectors: np.ndarray = field(repr=False)
    identities: tuple[str, ...]
    parts: np.ndarray = field(repr=False)
    model_version: str
    fingerprint: str
    top_fraction: float
    calibration: CohortCalibration = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        """``cohort@<first 12 hex digits of the fingerprint>``: what alerts and reports cite."""
        return f"cohort@{self.fingerprint[:12]}"

    def norm(self) -> ScoreNorm:
        """The normaliser over this cohort's stats part."""
        stats = self.vectors[self.parts == 0]
        return ScoreNorm(stats, top_k=top_k_for(stats.shape[0], self.top_fraction), cohort_id=self.short_id)

    @property
    def embed_mirror(self) -> bool:
        """Whether its faces were embedded with their mirror images averaged in
        (``OPENLFR_EMBED_MIRROR``); a file from before the setting was not."""
        return bool(self.meta.get("embed_mirror", False))

    def fits(self, model_version: str, *, embed_mirror: bool) -> bool:
        """Whether it was embedded as the vectors it will be compared with are."""
        return model_version == self.model_version and embed_mirror == self.embed_mirror

    def check_model(self, model_version: str, *, embed_mirror: bool, setting: str = "--cohort") -> None:
        """Refuse to use this cohort with vectors of another model, or embedded another way.

        Its statistics and calibration are of its own vectors: compared with vectors made
        otherwise (another network, or with or without mirrored views) they would put a false
        rate on a threshold.

        Raises:
            CohortError: the versions or the views differ (the message names ``setting``).
        """
        if model_version != self.model_version:
            raise CohortError(
                f"{setting}: the cohort was embedded with {self.model_version}, the watchlist uses "
                f"{model_version}; rebuild it with `openlfr cohort build` for this model"
            )
        if embed_mirror != self.embed_mirror:
            def views(on: bool) -> str:
                return "with mirrored views averaged in" if on else "without mirrored views"
            raise CohortError(
                f"{setting}: the cohort's faces were embedded {views(self.embed_mirror)}, this configuration "
                f"embeds {views(embed_mirror)} (OPENLFR_EMBED_MIRROR={'true' if embed_mirror else 'false'}); "
                "rebuild it with `openlfr cohort build` under this setting"
            )

    def save(self, path: Path) -> None:
        """Write the cohort file (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = dict(self.meta)
        header.update(
            schema=SCHEMA,
            model_version=self.model_version,
            fingerprint=self.fingerprint,
            top_fraction=self.top_fraction,
            faces=int(self.vectors.shape[0]),
            dim=int(self.vectors.shape[1]),
        )
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez_compressed(
                fh,
                header=np.array(json.dumps(header, sort_keys=True)),
                vectors=self.vectors.astype(np.float32),
                identities=np.array(self.identities, dtype=str),
                parts=self.parts.astype(np.int8),
                **self.calibration.arrays(),
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, *, setting: str = "--cohort") -> Cohort:
        """Read a cohort file.

        Raises:
            CohortError: missing, unreadable or not a cohort file of this schema (the message
                names ``setting`` and how to build one).
        """
        path = Path(path)
        if not path.is_file():
            raise CohortError(f"{setting}: no cohort file at {path}; build one with `openlfr cohort build DIR --out {path}`")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise CohortError(f"{setting}: {path} is not a readable cohort file ({exc})") from exc
        if header.get("schema") != SCHEMA:
            raise CohortError(f"{setting}: {path} has schema {header.get('schema')!r}, expected {SCHEMA!r}; rebuild it")
        try:
            calibration = CohortCalibration.from_arrays(arrays)
            vectors = np.asarray(arrays["vectors"], dtype=np.float32)
            return cls(
                vectors=vectors,
                identities=tuple(str(x) for x in arrays["identities"]),
                parts=np.asarray(arrays["parts"], dtype=np.int8),
                model_version=str(header["model_version"]),
                fingerprint=str(header["fingerprint"]),
                top_fraction=float(header["top_fraction"]),
                calibration=calibration,
                meta=header,
            )
        except KeyError as exc:
            raise CohortError(f"{setting}: {path} lacks {exc}; rebuild it") from exc


def make_cohort(
    faces: Sequence[CohortFace],
    *,
    model_version: str,
    embed_mirror: bool = True,
    top_fraction: float = DEFAULT_TOP_FRACTION,
    meta: dict[str, Any] | None = None,
) -> Cohort:
    """Split, calibrate and package cohort faces.

    ``embed_mirror`` says how the vectors were made (``OPENLFR_EMBED_MIRROR``, on by default);
    it is recorded, enters the fingerprint and is checked where the cohort is used.

    Raises:
        CohortError: fewer than ``MIN_COHORT`` faces, vectors of different lengths, or a part
            too small to calibrate.
    """
    if len(faces) < MIN_COHORT:
        raise CohortError(f"a cohort needs at least {MIN_COHORT} faces of people on no watchlist, got {len(faces)}")
    vectors = np.stack([np.asarray(f.vector, dtype=np.float32).reshape(-1) for f in faces])
    if not np.isfinite(vectors).all():
        raise CohortError("cohort vectors hold NaN or infinity")
    parts = split_parts(faces)
    identities = tuple(f.identity for f in faces)
    stats = vectors[parts == 0]
    norm = ScoreNorm(stats, top_k=top_k_for(stats.shape[0], top_fraction))
    started = time.monotonic()
    calibration = calibrate_cohort(
        norm,
        vectors[parts == 1],
        [identities[i] or f"image:{faces[i].sha256}" for i in np.flatnonzero(parts == 1)],
    )
    header = dict(meta or {})
    header.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    header.update(
        embed_mirror=bool(embed_mirror),
        people=len({f.identity or f.sha256 for f in faces}),
        stats_faces=int((parts == 0).sum()),
        calibration_faces=int((parts == 1).sum()),
        top_k=norm.top_k,
        impostor_pairs=calibration.n_impostor,
        genuine_pairs=calibration.n_genuine,
    )
    logger.info(
        'cohort made faces="%d" stats="%d" calibration="%d" impostor_pairs="%d" genuine_pairs="%d" seconds="%.1f"',
        len(faces), header["stats_faces"], header["calibration_faces"], calibration.n_impostor,
        calibration.n_genuine, time.monotonic() - started,
    )
    return Cohort(
        vectors=vectors,
        identities=identities,
        parts=parts,
        model_version=model_version,
        fingerprint=fingerprint(faces, model_version + ("+mirror" if embed_mirror else "")),
        top_fraction=float(top_fraction),
        calibration=calibration,
        meta=header,
    )
