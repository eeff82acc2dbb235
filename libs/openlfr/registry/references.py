"""The registry's reference images: enrolment, chips, removal, and re-scoring against a new
background cohort.

Enrolment runs the live pipeline's analyzer on the image and applies the enrolment policy;
what is kept is the aligned chip (dlib's 150x150 whatever the embedder; JPEG for reviewers, PNG
so the vector can be rebuilt exactly), the quality figures, the SHA-256 of the upload, and the
reference's statistics against the loaded cohort (which cohort too). The vectors go to the
store only, with those statistics, so the match stage can give the subject a threshold of its
own; they follow the enrolment rules of ``openlfr.watchlist.references`` (mirrored view, and a
subject template once a subject has two references), so the subject's points are rebuilt at
each enrolment.

When the registry starts with a cohort other than the one a reference was scored against (a
new cohort file, or a database from before per-subject thresholds), every such subject's
vectors are rebuilt from their kept chips and scored against the loaded cohort
(``rescore_references``): no subject is left without statistics, which would make it
unmatchable (the match stage fails closed on a reference without statistics of its cohort).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openlfr.registry.core import STARTUP_ACTOR, RegistryCore
from openlfr.registry.exceptions import Conflict, ImageRefused, Invalid, NotFound
from openlfr.registry.models import ImagePublic, ImageQuality, to_datetime
from openlfr.vision.align import face_chips
from openlfr.vision.analyzer import CHIP_PADDING, QUALITY_CHIP_SIZE
from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import decode_image
from openlfr.watchlist.loader import reference_image_id

logger = logging.getLogger(__name__)

_QUALITY_COLUMNS = ("face_px", "inter_eye_px", "blur", "yaw", "roll_deg", "detector_score")
_IMAGE_COLUMNS = ", ".join(("subject_id", "id", "sha256", "source", "added_by", "added_ts", *_QUALITY_COLUMNS,
                            "quality_score"))


@dataclass(slots=True)
class RescoreReport:
    """What ``rescore_references`` did.

    Attributes:
        cohort: the cohort the references were scored against.
        subjects: subjects whose references were re-scored.
        images: references re-scored.
        previous: per cohort they had been scored with ("none": without statistics), references.
        failed: subjects that could not be re-scored (logged with the error; they stay
            unmatchable until a later start or a change to them succeeds).
    """

    cohort: str
    subjects: int = 0
    images: int = 0
    previous: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


class ReferencesMixin(RegistryCore):
    """Reference images of subjects (part of :class:`~openlfr.registry.service.Registry`)."""

    def reference_chip(self, subject_id: str, reference_image_id: str) -> bytes | None:
        """The JPEG chip of a reference image, or None when it is not (or no longer) kept."""
        row = self.db.one(
            "SELECT chip_jpeg FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, reference_image_id)
        )
        return bytes(row["chip_jpeg"]) if row is not None else None

    def enrol_image(
        self, subject_id: str, data: bytes, *, source: str, actor: str, image: np.ndarray | None = None
    ) -> ImagePublic:
        """Analyse one image and, if it passes the enrolment policy, make it a reference of the subject.

        The image goes through the live pipeline's analyzer (detect -> landmarks -> chip ->
        quality -> embed). Kept: the aligned chip, the quality figures, the SHA-256 of
        ``data`` and the reference's statistics against the cohort; the vector goes to the
        store only (with those statistics); the original bytes are not kept.

        Args:
            subject_id: whose image it is.
            data: the original file's bytes (its SHA-256 is the image's id).
            source: where the image came from (required provenance).
            actor: who enrols it.
            image: ``data`` already decoded (RGB), as the API does under its limits; decoded
                here when None.

        Raises:
            NotFound: no such subject.
            Invalid: ``source`` is blank or too long.
            ImageRefused: unreadable, no face, several faces, too small, blurred or poor.
            Conflict: the same image is already a reference (of this or another subject), or
                the subject has the maximum number of images.
        """
        source = source.strip()
        if not 1 <= len(source) <= 1000:
            raise Invalid("source", "give where the image came from (1..1000 characters)")
        self._subject_row(subject_id)  # fail fast before the costly analysis
        image_id = reference_image_id(data)
        sha256 = hashlib.sha256(data).hexdigest()
        self._check_new_image(self.db.one, subject_id, image_id)
        if image is None:
            try:
                image = decode_image(data, name="enrolment image", max_pixels=self.settings.max_image_pixels)
            except ImageError as exc:
                raise ImageRefused("unreadable", str(exc)) from exc
        with self._analyze_lock:
            located = self.analyzer.locate_many([image], keep_chips=False)[0]
        problem = self.policy.refusal(located)
        if problem is not None:
            logger.info('enrolment image refused subject_id="%s" reason="%s"', subject_id, problem[0])
            raise ImageRefused(*problem)
        # The kept chip is dlib's 150x150 (padding 0.25) whatever the embedder: it holds the whole
        # face for reviewers and for re-embedding into any model (``_sync_subject_vectors``).
        chip = face_chips(image, located.landmarks[:1], size=QUALITY_CHIP_SIZE, padding=CHIP_PADDING)[0]
        self._check_not_near_duplicate(subject_id, chip)
        chip_jpeg, chip_png = self._encode_chip(chip)
        q = located.quality.row(0)
        now = self._clock()
        with self._change() as tx:
            row = self._subject_row(subject_id, tx.conn)
            self._check_new_image(lambda sql, p: tx.conn.execute(sql, p).fetchone(), subject_id, image_id)
            tx.conn.execute(
                f"INSERT INTO reference_images ({_IMAGE_COLUMNS}, chip_jpeg, chip_png, "  # noqa: S608
                f"model_version) VALUES ({', '.join('?' * (_IMAGE_COLUMNS.count(',') + 4))})",
                (subject_id, image_id, sha256, source, actor, now, *(q[c] for c in _QUALITY_COLUMNS), q["score"],
                 chip_jpeg, chip_png, self.model_version),
            )
            tx.conn.execute("UPDATE subjects SET updated_ts = ? WHERE id = ?", (now, subject_id))
            tx.touched.add(subject_id)
            synced = self._sync_subject_vectors(tx.conn, subject_id)
            if any(failed == image_id for failed, _ in synced.failed):
                raise ImageRefused("no_face", f"the running embedder ({self.model_version}) finds no face in the "
                                   "aligned chip of this image")
            self._audit(
                actor, "subject.enrol", f"subject/{subject_id}",
                {"event": "image_added", "watchlist_id": row["watchlist_id"], "image_id": image_id,
                 "sha256": sha256, "source": source,
                 "quality": {k: round(v, 4) for k, v in q.items()},
                 "cohort": self.cohort_id, "references": synced.images},
            )
        logger.info('reference image enrolled subject_id="%s" image_id="%s" actor="%s"', subject_id, image_id, actor)
        return self.get_image(subject_id, image_id)

    def get_image(self, subject_id: str, image_id: str) -> ImagePublic:
        """One reference image's record. Raises NotFound."""
        self._subject_row(subject_id)
        images = self._images_of([subject_id]).get(subject_id, [])
        for item in images:
            if item.id == image_id:
                return item
        raise NotFound("image", image_id)

    def image_chip(self, subject_id: str, image_id: str) -> bytes:
        """The JPEG chip of a reference image. Raises NotFound."""
        self._subject_row(subject_id)
        chip = self.reference_chip(subject_id, image_id)
        if chip is None:
            raise NotFound("image", image_id)
        return chip

    def delete_image(self, subject_id: str, image_id: str, *, actor: str) -> None:
        """Remove one reference image and its vector (the subject's others are rebuilt).

        Raises:
            NotFound: no such subject or image.
        """
        with self._change() as tx:
            row = self._subject_row(subject_id, tx.conn)
            image = tx.conn.execute(
                "SELECT source, sha256 FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, image_id)
            ).fetchone()
            if image is None:
                raise NotFound("image", image_id)
            tx.conn.execute("DELETE FROM reference_images WHERE subject_id = ? AND id = ?", (subject_id, image_id))
            tx.conn.execute("UPDATE subjects SET updated_ts = ? WHERE id = ?", (self._clock(), subject_id))
            tx.touched.add(subject_id)
            remaining = self._sync_subject_vectors(tx.conn, subject_id).images
            self._audit(
                actor, "subject.update", f"subject/{subject_id}",
                {"event": "image_removed", "watchlist_id": row["watchlist_id"], "image_id": image_id,
                 "sha256": image["sha256"], "source": image["source"], "images_left": remaining},
            )
        logger.info('reference image deleted subject_id="%s" image_id="%s" actor="%s"', subject_id, image_id, actor)

    def rescore_references(self, *, actor: str = STARTUP_ACTOR) -> RescoreReport:
        """Score every reference not scored against the loaded cohort (a new cohort file, or
        one enrolled before per-subject thresholds) against it, each subject as one audited
        change (``subject.update``, event ``references_rescored``).

        The subject's vectors are rebuilt from its kept chips (exactly the enrolled vectors)
        with their new statistics and their original enrolment times. A subject that fails is
        logged and counted, and the others go on. References of another embedder are not
        touched: they wait for re-embedding (``openlfr.registry.reembedding``).
        """
        report = RescoreReport(cohort=self.cohort_id)
        rows = self.db.all(
            "SELECT subject_id, COALESCE(norm_cohort, 'none') AS previous, COUNT(*) AS n FROM reference_images "
            "WHERE (norm_cohort IS NULL OR norm_cohort != ?) AND model_version = ? "
            "GROUP BY subject_id, previous ORDER BY subject_id",
            (self.cohort_id, self.model_version),
        )
        stale: dict[str, dict[str, int]] = {}
        for row in rows:
            stale.setdefault(row["subject_id"], {})[row["previous"]] = int(row["n"])
        if not stale:
            return report
        logger.info('re-scoring references against the cohort cohort="%s" subjects="%d"', self.cohort_id, len(stale))
        for subject_id, previous in stale.items():
            try:
                with self._change() as tx:
                    subject = self._subject_row(subject_id, tx.conn)
                    tx.touched.add(subject_id)
                    images = self._sync_subject_vectors(tx.conn, subject_id).images
                    self._audit(
                        actor, "subject.update", f"subject/{subject_id}",
                        {"event": "references_rescored", "watchlist_id": subject["watchlist_id"],
                         "cohort": {"before": sorted(previous), "after": self.cohort_id}, "images": images},
                    )
            except Exception:
                logger.exception('cannot re-score a subject\'s references subject_id="%s"', subject_id)
                report.failed.append(subject_id)
                continue
            report.subjects += 1
            report.images += images
            for cohort_id, n in previous.items():
                report.previous[cohort_id] = report.previous.get(cohort_id, 0) + n
        log = logger.warning if report.failed else logger.info
        log(
            'references re-scored cohort="%s" subjects="%d" images="%d" previous="%s" failed="%d"',
            self.cohort_id, report.subjects, report.images,
            ",".join(f"{k}:{v}" for k, v in sorted(report.previous.items())), len(report.failed),
        )
        return report

    # -- helpers ------------------------------------------------------------------------------

    def _check_not_near_duplicate(self, subject_id: str, chip: np.ndarray) -> None:
        """Refuse a photo whose reference would land within ``near_duplicate_score`` of another
        subject's: a copy of a photo already enrolled (re-encoded, scaled, cropped, brightened)
        shows that subject, not a second person (benchmarks/near_duplicates.py)."""
        vector = self._chip_vectors([chip])[0]
        if vector is None:
            return  # the enrolment itself refuses it (no face in the chip)
        for hit in self.store.search(vector, limit=2):
            if hit.subject_id != subject_id and hit.score >= self.near_duplicate_score:
                raise Conflict(
                    f"this face is a near-duplicate of a reference of subject {hit.subject_id!r} (score "
                    f"{hit.score:.3f} >= OPENLFR_REGISTRY_NEAR_DUPLICATE_SCORE {self.near_duplicate_score:g}): "
                    "a copy of a photo already enrolled shows that subject; if it is the same person, enrol it there",
                    reason="near_duplicate",
                )

    def _check_new_image(self, one: Callable[[str, tuple[Any, ...]], Any], subject_id: str, image_id: str) -> None:
        holder = one("SELECT subject_id FROM reference_images WHERE id = ? ORDER BY subject_id = ? DESC LIMIT 1",
                     (image_id, subject_id))
        if holder is not None:
            if holder["subject_id"] == subject_id:
                raise Conflict(
                    f"image {image_id!r} is already a reference of subject {subject_id!r}", reason="duplicate"
                )
            raise Conflict(
                f"this image is already a reference of subject {holder['subject_id']!r}; "
                "one photo cannot show two people",
                reason="duplicate",
            )
        count = one("SELECT COUNT(*) AS n FROM reference_images WHERE subject_id = ?", (subject_id,))
        if count is not None and count["n"] >= self.settings.max_images_per_subject:
            raise Conflict(
                f"subject {subject_id!r} has {count['n']} images, the most allowed "
                "(OPENLFR_REGISTRY_MAX_IMAGES_PER_SUBJECT); delete one first",
                reason="too_many_images",
            )

    def _images_of(self, subject_ids: Sequence[str]) -> dict[str, list[ImagePublic]]:
        if not subject_ids:
            return {}
        marks = ", ".join("?" * len(subject_ids))
        rows = self.db.all(
            f"SELECT {_IMAGE_COLUMNS} FROM reference_images WHERE subject_id IN ({marks}) "  # noqa: S608
            "ORDER BY added_ts, id",
            tuple(subject_ids),
        )
        out: dict[str, list[ImagePublic]] = {}
        for r in rows:
            out.setdefault(r["subject_id"], []).append(
                ImagePublic(
                    id=r["id"], subject_id=r["subject_id"], sha256=r["sha256"], source=r["source"],
                    added_by=r["added_by"], added_at=to_datetime(r["added_ts"]),
                    quality=ImageQuality(**{c: float(r[c]) for c in _QUALITY_COLUMNS}, score=float(r["quality_score"])),
                )
            )
        return out
