"""Re-embedding a watchlist for another embedder, from the reference images it keeps.

When the embedder changes (``OPENLFR_EMBEDDER``), every reference must be embedded again by the
new model into a store of the new model's own (``openlfr.watchlist.factory.StoreModel``): the old
vectors are not comparable with the new ones, and a store refuses to hold both. The registry
keeps each reference's aligned chip (lossless PNG of dlib's 150x150 face chip, padding 0.25,
which holds the whole face); the new model's analyzer finds the face in it again, aligns it its
own way and embeds it, with the same enrolment rules as a first enrolment (mirrored view,
subject template, cohort statistics).

A subject is written in one call once all its references are done, so a subject is never half
in the new store; one whose every reference fails is reported by name, never dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from openlfr.cohort.norm import NormStats, ScoreNorm
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.watchlist.references import TEMPLATE_REFERENCE_ID, subject_points, with_mirror
from openlfr.watchlist.store import EntryStatus, VectorStore, WatchlistEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """One kept reference image of a subject, with the state its entry carries."""

    subject_id: str
    watchlist_id: str
    reference_image_id: str
    image: np.ndarray = field(repr=False)
    status: EntryStatus = "active"
    expires_ts: float | None = None
    enrolled_ts: float = 0.0


@dataclass(slots=True)
class ReembedReport:
    """What a re-embedding did.

    Attributes:
        model_version: the embedder the references were embedded by.
        subjects: subject id -> references embedded (template not counted).
        failed: ``(subject_id, reference_image_id, reason)`` of each reference not embedded.
        lost_subjects: subjects none of whose references could be embedded (not in the store).
        embedded: ``(subject_id, reference_image_id, statistics)`` of each reference embedded
            (template not included), so a caller can record what was written.
    """

    model_version: str
    subjects: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    lost_subjects: list[str] = field(default_factory=list)
    embedded: list[tuple[str, str, NormStats | None]] = field(default_factory=list)

    @property
    def references(self) -> int:
        """References embedded in all."""
        return sum(self.subjects.values())


def _largest(faces: object) -> int | None:
    boxes = getattr(faces, "boxes", None)
    if boxes is None or len(boxes) == 0:
        return None
    return int(np.argmax(boxes[:, 2] - boxes[:, 0]))


def mirrored_vectors(images: Sequence[np.ndarray], analyzer: FaceAnalyzer) -> list[np.ndarray | None]:
    """Each image's reference vector by the enrolment rule (``openlfr.watchlist.references``): its
    largest face's descriptor averaged with the mirror image's; None where no face is found.
    An embedder that averages mirrored views itself (``FaceEmbedder.mirror``) already gives that
    descriptor: the mirror image is not analysed again."""
    if not images:
        return []
    found = analyzer.analyze_many(list(images))
    if analyzer.embedder.mirror:
        return [None if (i := _largest(f)) is None or f.embeddings is None else np.asarray(f.embeddings[i], np.float32)
                for f in found]
    mirrored = analyzer.analyze_many([image[:, ::-1].copy() for image in images])
    out: list[np.ndarray | None] = []
    for faces, flipped in zip(found, mirrored, strict=True):
        i = _largest(faces)
        if i is None or faces.embeddings is None:
            out.append(None)
            continue
        j = _largest(flipped)
        other = flipped.embeddings[j] if j is not None and flipped.embeddings is not None else None
        out.append(with_mirror(faces.embeddings[i], other))
    return out


def reembed(
    references: Iterable[ReferenceImage],
    *,
    analyzer: FaceAnalyzer,
    target: VectorStore,
    model_version: str,
    norm: ScoreNorm | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReembedReport:
    """Embed every reference again with ``analyzer`` into ``target``, subject by subject.

    Args:
        references: the kept reference images, grouped by subject (consecutive).
        analyzer: the new embedder's analyzer.
        target: the new embedder's store (pinned to ``model_version``).
        model_version: the new embedder's version.
        norm: the cohort normaliser for the new model (statistics stored with each reference).
        progress: called with the number of references done since the last call.

    Raises:
        ValueError: ``target`` holds another model's vectors.
    """
    if target.model_version not in (None, model_version):
        raise ValueError(f"reembed: the target store holds {target.model_version}'s vectors, not {model_version}'s")
    report = ReembedReport(model_version=model_version)
    batch: list[ReferenceImage] = []

    def flush() -> None:
        if not batch:
            return
        subject = batch[0].subject_id
        vectors: list[tuple[ReferenceImage, np.ndarray]] = []
        for ref, vector in zip(batch, mirrored_vectors([r.image for r in batch], analyzer), strict=True):
            if vector is None:
                report.failed.append((subject, ref.reference_image_id, "no face found in the kept image"))
            else:
                vectors.append((ref, vector))
        if not vectors:
            report.lost_subjects.append(subject)
            logger.warning('reembed lost subject subject_id="%s": no reference could be embedded', subject)
        else:
            by_id = {ref.reference_image_id: ref for ref, _ in vectors}
            points = subject_points([(ref.reference_image_id, v, ref.enrolled_ts) for ref, v in vectors])
            rows = [(ref_id, v, by_id.get(ref_id, vectors[0][0]), ts) for ref_id, v, ts in points]
            stats = [norm.stats(vector) if norm is not None else None for _, vector, _, _ in rows]
            target.upsert([
                WatchlistEntry(
                    subject_id=subject, watchlist_id=ref.watchlist_id, reference_image_id=ref_id, vector=vector,
                    status=ref.status, expires_ts=ref.expires_ts, enrolled_ts=ts,
                    norm=s, norm_cohort=norm.cohort_id if norm is not None else None,
                    model_version=model_version,
                )
                for (ref_id, vector, ref, ts), s in zip(rows, stats, strict=True)
            ])
            report.subjects[subject] = len(vectors)
            report.embedded.extend(
                (subject, ref_id, s)
                for (ref_id, _, _, _), s in zip(rows, stats, strict=True)
                if ref_id != TEMPLATE_REFERENCE_ID
            )
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for ref in references:
        if batch and ref.subject_id != batch[0].subject_id:
            flush()
        batch.append(ref)
    flush()
    logger.info('reembed done model_version="%s" subjects="%d" references="%d" failed="%d" lost="%d"',
                model_version, len(report.subjects), report.references, len(report.failed), len(report.lost_subjects))
    return report
