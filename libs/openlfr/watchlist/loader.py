"""Enrolment from a folder tree: one folder per subject, its images as references.

Every image goes through the same ``FaceAnalyzer`` path the live pipeline uses (detect ->
landmarks -> chip -> quality -> embed), so reference and probe vectors are comparable.

Policy: an image is enrolled only when the analyzer finds **exactly one** face in it and that
face is big, sharp and good enough (``min_inter_eye_px``, ``min_blur``, ``min_quality``). A
photo with two faces is refused rather than enrolling its largest face: the wrong person on a
watchlist is the costliest enrolment error, and a dominant-face rule cannot tell a bystander
from the subject. Nothing is skipped silently: every refused file is in the report with a
reason, and an unreadable file is a refusal, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from openlfr.cohort.norm import ScoreNorm
from openlfr.vision.analyzer import CHIP_PADDING, QUALITY_CHIP_SIZE, FaceAnalyzer
from openlfr.vision.exceptions import ImageError
from openlfr.vision.faces import Faces
from openlfr.vision.images import decode_image
from openlfr.vision.quality import FULL_SIZE_INTER_EYE_PX
from openlfr.watchlist.references import TEMPLATE_REFERENCE_ID, unit_mean, with_mirror
from openlfr.watchlist.store import VectorStore, WatchlistEntry

logger = logging.getLogger(__name__)

RefusalReason = Literal[
    "not_in_subject_folder",
    "invalid_subject_id",
    "unreadable",
    "duplicate",
    "no_face",
    "multiple_faces",
    "too_small",
    "too_blurred",
    "low_quality",
]

#: The message contracts' id pattern (``openlfr.messages.models.Id``): folder names must fit it.
SUBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")

#: Inter-eye distance (pixels) below which a reference is refused: from here on down the
#: 150x150 chip is an upsampled image, and the quality score's size term is below 1.
DEFAULT_MIN_INTER_EYE_PX = FULL_SIZE_INTER_EYE_PX
#: Laplacian variance of the chip below which a reference is refused as blurred.
DEFAULT_MIN_BLUR = 40.0
#: Combined quality score (``openlfr.vision.quality.assess``) below which a reference is refused.
DEFAULT_MIN_QUALITY = 0.4

#: Images analysed per call (memory stays bounded however large a subject's folder is).
BATCH_SIZE = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferencePolicy:
    """When one analysed image may be a watchlist reference (the module docstring's policy).

    Shared by folder enrolment here and by the registry's one-image enrolment, so both
    accept and refuse the same images for the same reasons.

    Attributes:
        min_inter_eye_px: smallest accepted distance between the eye centres, in pixels.
        min_blur: smallest accepted Laplacian variance of the aligned chip.
        min_quality: smallest accepted combined quality score (0..1).
    """

    min_inter_eye_px: float = DEFAULT_MIN_INTER_EYE_PX
    min_blur: float = DEFAULT_MIN_BLUR
    min_quality: float = DEFAULT_MIN_QUALITY

    def refusal(self, faces: Faces) -> tuple[RefusalReason, str] | None:
        """Why the analysed image ``faces`` cannot be a reference, or None when it can.

        Only the face count and quality figures are read, so it can run before embedding.
        """
        if len(faces) == 0:
            return "no_face", "no face found"
        if len(faces) > 1:
            return "multiple_faces", f"{len(faces)} faces found; a reference image must show exactly one"
        q = faces.quality.row(0)
        if q["inter_eye_px"] < self.min_inter_eye_px:
            return "too_small", f"inter-eye distance {q['inter_eye_px']:.1f} px < {self.min_inter_eye_px:g}"
        if q["blur"] < self.min_blur:
            return "too_blurred", f"sharpness (Laplacian variance) {q['blur']:.1f} < {self.min_blur:g}"
        if q["score"] < self.min_quality:
            return "low_quality", f"quality score {q['score']:.3f} < {self.min_quality:g} (yaw {q['yaw']:.2f})"
        return None


@dataclass(frozen=True, slots=True)
class RefusedImage:
    """A file that was not enrolled, and why."""

    path: Path
    reason: RefusalReason
    detail: str


@dataclass(slots=True)
class EnrolmentReport:
    """What ``enroll_folder`` did.

    Attributes:
        watchlist_id: the watchlist the subjects were enrolled on.
        enrolled: per subject id, the number of its images enrolled (a subject whose every image
            was refused is not here: its refusals are).
        refused: every file not enrolled, with the reason.
    """

    watchlist_id: str
    enrolled: dict[str, int] = field(default_factory=dict)
    refused: list[RefusedImage] = field(default_factory=list)

    @property
    def images_enrolled(self) -> int:
        """Reference images enrolled in all."""
        return sum(self.enrolled.values())

    def refused_by_reason(self) -> dict[str, int]:
        """Count of refused files per reason."""
        out: dict[str, int] = {}
        for item in self.refused:
            out[item.reason] = out.get(item.reason, 0) + 1
        return out


@dataclass(frozen=True, slots=True)
class _Decoded:
    path: Path
    reference_image_id: str
    image: np.ndarray


def reference_image_id(data: bytes) -> str:
    """Content id of an enrolment image: the first 32 hex of its SHA-256 (re-enrolment is idempotent)."""
    return hashlib.sha256(data).hexdigest()[:32]


def enroll_folder(
    root: Path,
    *,
    analyzer: FaceAnalyzer,
    store: VectorStore,
    watchlist_id: str = "default",
    min_inter_eye_px: float = DEFAULT_MIN_INTER_EYE_PX,
    min_blur: float = DEFAULT_MIN_BLUR,
    min_quality: float = DEFAULT_MIN_QUALITY,
    expires_ts: float | None = None,
    norm: ScoreNorm | None = None,
) -> EnrolmentReport:
    """Enrol every subject folder under ``root`` on ``watchlist_id``.

    ``root/<subject_id>/**/<image>``: the folder name is the subject id; hidden files and
    folders (``.name``) are ignored; a file directly under ``root`` is refused.

    Args:
        root: the folder tree.
        analyzer: the live system's analyzer (same models, same settings).
        store: where the reference vectors go (upserted per subject).
        watchlist_id: the watchlist the subjects go on.
        min_inter_eye_px: smallest accepted distance between the eye centres, in pixels.
        min_blur: smallest accepted Laplacian variance of the aligned chip.
        min_quality: smallest accepted combined quality score (0..1).
        expires_ts: Unix time at which the entries stop matching; None for no expiry.
        norm: the background cohort's normaliser; each reference is stored with its
            statistics against it (its own threshold). None stores none.

    Returns:
        Per subject the number of images enrolled, and every refused file with its reason.

    Raises:
        ValueError: ``root`` is not a folder or ``watchlist_id`` is not a valid id.
        BackendUnavailable: the store or the inference backend is down (nothing is half-done
            per subject: a subject's entries are upserted in one call).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"enroll_folder: {root} is not a folder")
    if not SUBJECT_ID_PATTERN.match(watchlist_id):
        raise ValueError(f"enroll_folder: watchlist_id {watchlist_id!r} does not match {SUBJECT_ID_PATTERN.pattern}")
    report = EnrolmentReport(watchlist_id=watchlist_id)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            detail = "images must sit in a folder per subject"
            report.refused.append(RefusedImage(entry, "not_in_subject_folder", detail))
            continue
        subject_id = entry.name
        files = subject_files(entry)
        if not SUBJECT_ID_PATTERN.match(subject_id):
            detail = f"folder name {subject_id!r} does not match {SUBJECT_ID_PATTERN.pattern}"
            report.refused.extend(RefusedImage(path, "invalid_subject_id", detail) for path in files)
            continue
        entries = _enroll_subject(
            subject_id,
            files,
            analyzer=analyzer,
            watchlist_id=watchlist_id,
            min_inter_eye_px=min_inter_eye_px,
            min_blur=min_blur,
            min_quality=min_quality,
            expires_ts=expires_ts,
            refused=report.refused,
            norm=norm,
        )
        if not entries:
            # Every photo refused: the subject is not enrolled (each refusal is in the report).
            logger.info('subject not enrolled subject_id="%s" files="%d": every image refused', subject_id, len(files))
            continue
        store.upsert(entries)
        report.enrolled[subject_id] = sum(1 for e in entries if e.reference_image_id != TEMPLATE_REFERENCE_ID)
        logger.info(
            'enrolled subject subject_id="%s" watchlist_id="%s" images="%d" files="%d"',
            subject_id, watchlist_id, len(entries), len(files),
        )
    logger.info(
        'enrolment done watchlist_id="%s" subjects="%d" images="%d" refused="%d"',
        watchlist_id, len(report.enrolled), report.images_enrolled, len(report.refused),
    )
    return report


def _mirrored_chip_vectors(chips: Sequence[np.ndarray], images: Sequence[np.ndarray],
                           analyzer: FaceAnalyzer) -> list[np.ndarray]:
    """Each accepted photo's reference vector (``openlfr.watchlist.references``): the mean
    direction of its chip's descriptor and its flipped chip's, as the registry makes it from the
    chip it keeps (``openlfr.registry.core``), so the two enrolment paths give the same vector for
    the same photo and the mirror costs one embedding, not a second detection. Under an embedder
    that does not take dlib's chip (the registry then finds the face again in its kept chip), the
    mirrored photo is analysed again."""
    if not chips:
        return []
    stacked = np.stack(chips)
    n = len(chips)
    if analyzer.embedder.mirror:  # it averages each chip with its flipped copy itself
        return list(analyzer.embedder.embed(stacked))
    if _takes_dlib_chip(analyzer):
        embedded = analyzer.embedder.embed(np.ascontiguousarray(np.concatenate([stacked, stacked[:, :, ::-1]])))
        return [with_mirror(embedded[k], embedded[n + k]) for k in range(n)]
    straight = analyzer.embedder.embed(stacked)
    mirrored = analyzer.analyze_many([np.ascontiguousarray(image[:, ::-1]) for image in images])
    out = []
    for vector, flipped in zip(straight, mirrored, strict=True):
        other = None
        if len(flipped) and flipped.embeddings is not None:
            other = flipped.embeddings[int(np.argmax(flipped.boxes[:, 2] - flipped.boxes[:, 0]))]
        out.append(with_mirror(vector, other))
    return out


def _takes_dlib_chip(analyzer: FaceAnalyzer) -> bool:
    """Whether the analyzer's chips are dlib's 150x150 chip (the one the registry keeps)."""
    manifest = analyzer.embedder.manifest
    align = manifest.alignment if manifest is not None else None
    return analyzer.embedder.chip_size == QUALITY_CHIP_SIZE and (
        align is None or (align.kind == "dlib_chip" and align.size == QUALITY_CHIP_SIZE and align.padding == CHIP_PADDING)
    )


def subject_files(folder: Path) -> list[Path]:
    """The files of one subject's folder, recursively and sorted, hidden files and folders left out."""
    out = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_file():
            out.append(path)
    return out


def _enroll_subject(
    subject_id: str,
    files: Sequence[Path],
    *,
    analyzer: FaceAnalyzer,
    watchlist_id: str,
    min_inter_eye_px: float,
    min_blur: float,
    min_quality: float,
    expires_ts: float | None,
    refused: list[RefusedImage],
    norm: ScoreNorm | None = None,
) -> list[WatchlistEntry]:
    decoded: list[_Decoded] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            refused.append(RefusedImage(path, "unreadable", f"cannot read file ({exc.strerror or exc})"))
            continue
        ref = reference_image_id(data)
        if ref in seen:
            refused.append(RefusedImage(path, "duplicate", f"same content as {seen[ref]}"))
            continue
        try:
            image = decode_image(data, name=str(path))
        except ImageError as exc:
            refused.append(RefusedImage(path, "unreadable", str(exc)))
            continue
        seen[ref] = path
        decoded.append(_Decoded(path, ref, image))

    policy = ReferencePolicy(min_inter_eye_px=min_inter_eye_px, min_blur=min_blur, min_quality=min_quality)
    vectors: list[tuple[str, np.ndarray]] = []
    for start in range(0, len(decoded), BATCH_SIZE):
        chunk = decoded[start : start + BATCH_SIZE]
        results = analyzer.locate_many([item.image for item in chunk], keep_chips=True)
        accepted = []
        for item, faces in zip(chunk, results, strict=True):
            problem = policy.refusal(faces)
            if problem is not None:
                refused.append(RefusedImage(item.path, problem[0], problem[1]))
                logger.info('refused enrolment image path="%s" reason="%s"', item.path, problem[0])
                continue
            if faces.chips is None:
                raise RuntimeError("the analyzer located faces without chips")
            accepted.append((item, faces.chips[0]))
        vectors.extend(zip([item.reference_image_id for item, _ in accepted],
                           _mirrored_chip_vectors([chip for _, chip in accepted], [item.image for item, _ in accepted],
                                                  analyzer), strict=True))
    if len(vectors) >= 2:
        vectors.append((TEMPLATE_REFERENCE_ID, unit_mean([v for _, v in vectors])))
    return [
        WatchlistEntry(
            subject_id=subject_id,
            watchlist_id=watchlist_id,
            reference_image_id=ref_id,
            vector=vector,
            expires_ts=expires_ts,
            norm=norm.stats(vector) if norm is not None else None,
            norm_cohort=norm.cohort_id if norm is not None else None,
        )
        for ref_id, vector in vectors
    ]

