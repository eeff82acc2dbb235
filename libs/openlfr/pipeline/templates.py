"""Track templates: one decision per track from its best faces together, not from frame votes.

A track's template is the quality-weighted mean of the L2-normalised embeddings of its best
``max_faces`` faces (by quality), rescaled to their mean length so it stays in the model's
space and the store's scores apply unchanged. Averaging several views of one face cancels
much of what differs between frames (pose, blur, expression), so the template lies nearer the
person's references than most single frames do, while a stranger's template gets no nearer to
anyone else's: measured in ``benchmarks/subject_calibration.py`` (tracks of five photos: FNIR
at FPIR 1e-2 from 33% per photo to 14% per template, raw scores).

The template is scored against the references its member faces' own searches returned (each
face asks the store for its nearest subjects, with their vectors): a subject near the template
is near some of its faces, so no further search is needed, and the stage's read-only planning
phase stays the only place the store is asked. The decision takes the nearest subject if:
the template has at least ``min_faces`` faces; its score reaches the deployment's floor; the
runner-up subject is at least ``min_margin`` behind; and, for a deployment with per-subject
thresholds, the score normalised by the reference's and the template's cohort statistics
reaches the normalised threshold.

What is kept: in memory, while the track is open, the best faces' embeddings, chips and scene
crops (at most ``max_faces``) and at most ``max_refs`` references' hits; nothing is written anywhere, and all
of it goes when the track ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from openlfr.cohort.norm import ScoreNorm, normalise
from openlfr.watchlist.store import SearchHit, distance_to_score

#: References (subject, image) a track remembers from its faces' searches.
DEFAULT_MAX_REFS = 16


@dataclass(frozen=True, slots=True)
class TemplateFace:
    """One face of a track's template: its quality, unit embedding and length, and what an
    alert would show of it."""

    quality: float
    unit: np.ndarray
    length: float
    chip_jpeg: bytes
    frame_id: str
    capture_ts: float
    trace_id: str
    #: The face in its scene (``openlfr.vision.scene``), shown with the chip if it becomes the probe.
    scene_jpeg: bytes | None = None

    @classmethod
    def of(
        cls,
        vector: np.ndarray,
        *,
        quality: float,
        chip_jpeg: bytes,
        frame_id: str,
        capture_ts: float,
        trace_id: str,
        scene_jpeg: bytes | None = None,
    ) -> TemplateFace:
        """From a face's embedding (any length)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        length = float(np.linalg.norm(v))
        if not length > 0.0:
            raise ValueError("TemplateFace: a zero embedding has no direction")
        return cls(quality, v / length, length, chip_jpeg, frame_id, capture_ts, trace_id, scene_jpeg)


@dataclass(frozen=True, slots=True)
class TemplateDecision:
    """What a template decided.

    Attributes:
        outcome: ``match`` (a subject passed every test), ``none`` (no subject did),
            ``unnormalised`` (the nearest subject passed the floor and margin but could not be
            normalised: no cohort, or a reference without statistics from it; no match).
        hit: the nearest subject's reference (None when the template has no candidates).
        score: the template's score against it.
        margin: its score minus the runner-up subject's (1.0 when there is none).
        normalised: the normalised score, for per-subject thresholds.
        probe: the template's best-quality face (shown beside the reference).
        faces: the faces in the template.
    """

    outcome: Literal["match", "none", "unnormalised"]
    hit: SearchHit | None = None
    score: float = 0.0
    margin: float = 1.0
    normalised: float | None = None
    probe: TemplateFace | None = None
    faces: int = 0


class TrackTemplate:
    """The best faces of one track and the references their searches found.

    Args:
        max_faces: faces kept (the best by quality; ties keep the earlier face).
        max_refs: references kept (the nearest to any face so far).
    """

    def __init__(self, *, max_faces: int, max_refs: int = DEFAULT_MAX_REFS) -> None:
        if max_faces < 1 or max_refs < 1:
            raise ValueError(f"TrackTemplate: max_faces and max_refs must be >= 1, got {max_faces}, {max_refs}")
        self.max_faces = max_faces
        self.max_refs = max_refs
        self.faces: list[TemplateFace] = []
        # (subject_id, reference_image_id) -> (best score any face had against it, the hit)
        self.refs: dict[tuple[str, str], tuple[float, SearchHit]] = {}

    def add(self, face: TemplateFace, hits: Sequence[SearchHit]) -> bool:
        """Offer a face and its search hits; True when the face entered the template."""
        for hit in hits:
            if hit.vector is None:
                continue
            key = (hit.subject_id, hit.reference_image_id)
            if key not in self.refs or hit.score > self.refs[key][0]:
                self.refs[key] = (hit.score, hit)
        if len(self.refs) > self.max_refs:
            keep = sorted(self.refs.items(), key=lambda item: (-item[1][0], item[0]))[: self.max_refs]
            self.refs = dict(keep)
        if len(self.faces) < self.max_faces:
            self.faces.append(face)
            return True
        worst = min(range(len(self.faces)), key=lambda i: (self.faces[i].quality, -i))
        if face.quality > self.faces[worst].quality:
            self.faces[worst] = face
            return True
        return False

    def vector(self) -> np.ndarray:
        """The template: quality-weighted mean direction, at the faces' mean length."""
        if not self.faces:
            raise ValueError("TrackTemplate.vector: no faces")
        weights = np.array([max(f.quality, 1e-3) for f in self.faces], dtype=np.float32)
        mean = (np.stack([f.unit for f in self.faces]) * weights[:, None]).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        length = float(np.mean([f.length for f in self.faces]))
        if not norm > 0.0:  # opposite faces cancel: no direction to compare
            return self.faces[0].unit * length
        return (mean / norm * length).astype(np.float32)

    def decide(
        self,
        *,
        floor_score: float,
        min_margin: float,
        min_faces: int,
        norm: ScoreNorm | None,
        norm_threshold: float | None,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> TemplateDecision:
        """The template's decision now (see the module docstring).

        Args:
            floor_score: the deployment's raw threshold (its floor with per-subject thresholds).
            min_margin: least score lead over the runner-up subject.
            min_faces: faces the template needs before it decides.
            norm: the cohort normaliser; needed when ``norm_threshold`` is given.
            norm_threshold: the deployment's normalised threshold, or None for raw only.
            exclude: subjects this track has already matched (not decided on again).
        """
        if len(self.faces) < min_faces or not self.refs:
            return TemplateDecision("none", faces=len(self.faces))
        template = self.vector()
        best: dict[str, tuple[float, SearchHit]] = {}
        for _, hit in self.refs.values():
            if hit.vector is None:  # never kept (see add); for the type checker
                continue
            score = distance_to_score(float(np.linalg.norm(template - hit.vector)))
            if hit.subject_id not in best or score > best[hit.subject_id][0]:
                best[hit.subject_id] = (score, hit)
        ranked = sorted(best.values(), key=lambda item: (-item[0], item[1].subject_id))
        score, hit = ranked[0]
        margin = float(np.clip(score - ranked[1][0], -1.0, 1.0)) if len(ranked) > 1 else 1.0
        probe = max(self.faces, key=lambda f: f.quality)
        base = TemplateDecision("none", hit, score, margin, None, probe, len(self.faces))
        if hit.subject_id in exclude or score < floor_score or margin < min_margin:
            return base
        normalised = None
        if norm_threshold is not None:
            if norm is None or hit.norm is None or hit.norm_cohort != norm.cohort_id:
                return TemplateDecision("unnormalised", hit, score, margin, None, probe, len(self.faces))
            normalised = float(normalise(score, hit.norm, norm.stats(template)))
            if normalised < norm_threshold:
                return TemplateDecision("none", hit, score, margin, normalised, probe, len(self.faces))
        return TemplateDecision("match", hit, score, margin, normalised, probe, len(self.faces))
