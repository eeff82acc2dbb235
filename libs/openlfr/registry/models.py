"""The registry's request and response schemas (named by direction: ``...Create``, ``...Update``,
``...Public``), which are also the values :class:`~openlfr.registry.service.Registry` takes and returns.

Every request model forbids unknown fields and bounds every text; ids follow the message
contracts' ``Id`` pattern, so whatever the registry names can travel in a ``Match`` or ``Alert``.
Times are timezone-aware datetimes on the wire (naive ones are refused) and Unix seconds inside.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from openlfr.cohort.policy import DEFAULT_TARGET_FPIR, PASSERS_BY
from openlfr.api.text import free_text, one_line
from openlfr.messages.models import Id

#: Ids of what the registry keeps (watchlists, subjects, deployments): the message contracts'
#: ``Id`` without ``/``, so that every id is also one URL path segment, and starting with a
#: letter or digit (no ``.``, ``..`` or ``:`` that a path or a log would read as something else).
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
Slug = Annotated[str, Field(min_length=1, max_length=128, pattern=SLUG_PATTERN)]
#: Camera ids a deployment names: the message contracts' ``Id``, starting with a letter or digit.
CAMERA_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
CameraId = Annotated[str, Field(min_length=1, max_length=128, pattern=CAMERA_PATTERN)]

#: Why a person may be on a watchlist; nothing else is accepted.
Category = Literal["wanted", "suspect", "missing_person", "vulnerable_person", "risk_to_self_or_others"]
CATEGORIES: tuple[Category, ...] = get_args(Category)

SubjectStatus = Literal["active", "suspended"]
DeploymentStatus = Literal["active", "ended"]
#: ``per_subject``: each subject's own threshold from the cohort, calibrated to ``target_fpir``
#: at the snapshot's size (``threshold`` is the raw floor); ``global``: one raw ``threshold``
#: for everyone, checked against the cohort.
ThresholdMode = Literal["per_subject", "global"]
#: A rate in (0, 1): false alerts per stranger passing a camera.
Rate = Annotated[float, Field(gt=0, lt=1)]

#: Texts: bounded, stripped, no control characters (one line, or free text with line breaks).
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(one_line)
]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), AfterValidator(free_text)]
Justification = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(free_text)
]
LegalBasis = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), AfterValidator(free_text)
]
#: A model version as ``openlfr evaluate`` and the services name it (``dlib_resnet@<hash>``).
ModelVersion = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]
#: Where an enrolment image came from (custody record, case file, ...): required provenance.
Provenance = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), AfterValidator(one_line)
]

#: Most cameras and watchlists one deployment may name.
MAX_CAMERAS = 256
MAX_WATCHLISTS = 64


def to_datetime(ts: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, tz=UTC)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Patch(_Request):
    """A partial update: at least one field, and no field set to null."""

    @model_validator(mode="after")
    def _some_fields(self) -> _Patch:
        if not self.model_fields_set:
            raise ValueError(f"give at least one of {sorted(type(self).model_fields)}")
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)}: must not be null (leave a field out to keep it)")
        return self

    def changes(self) -> dict[str, object]:
        """The fields the request sets."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _distinct(values: list[str], *, what: str) -> list[str]:
    repeated = sorted(value for value, n in Counter(values).items() if n > 1)
    if repeated:
        raise ValueError(f"{what} named more than once: {repeated}")
    return values


# -- watchlists ----------------------------------------------------------------------------


class WatchlistCreate(_Request):
    """A new watchlist. Without ``id`` the registry assigns one."""

    id: Slug | None = Field(default=None, description="a slug of your choice; assigned when left out")
    name: Name
    description: Description = ""


class WatchlistUpdate(_Patch):
    """New name and/or description."""

    name: Name | None = None
    description: Description | None = None


class WatchlistPublic(_Response):
    """A watchlist as the registry keeps it."""

    id: Id
    name: str
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    subject_count: int = Field(description="subjects on the watchlist, whatever their status")
    status: Literal["ready", "reembedding_needed"] = Field(
        default="ready",
        description="reembedding_needed: some of its references are of another embedder than the running one "
                    "(not in the store): deployments over it do not match until POST /v1/reembed moves them",
    )
    subjects_to_reembed: int = Field(default=0, description="subjects with references not yet re-embedded")
    suspended: bool = Field(
        default=False,
        description="suspended as a whole (POST .../suspend): no deployment searches its subjects until it is "
                    "resumed; its subjects keep their own status",
    )
    suspended_at: datetime | None = Field(default=None, description="when it was suspended, while it is")
    suspended_by: str | None = Field(default=None, description="who suspended it, while it is")


class WatchlistPage(_Response):
    """One page of watchlists, by id."""

    items: list[WatchlistPublic]
    total: int
    limit: int
    offset: int


# -- subjects and their images -------------------------------------------------------------


class ImageQuality(_Response):
    """The enrolment image's face, as the analyzer measured it."""

    face_px: float
    inter_eye_px: float
    blur: float = Field(description="Laplacian variance of the aligned chip (higher is sharper)")
    yaw: float
    roll_deg: float
    detector_score: float
    score: float = Field(description="combined quality, 0..1")


class ImagePublic(_Response):
    """One reference image of a subject. Its chip is served at ``/v1/subjects/{id}/images/{image_id}``."""

    id: str = Field(description="content id: the first 32 hex digits of the original file's SHA-256")
    subject_id: Id
    sha256: str = Field(description="SHA-256 of the original file (which is not kept)")
    source: str
    added_by: str
    added_at: datetime
    quality: ImageQuality


class SubjectCreate(_Request):
    """A person put on a watchlist, with why, on what legal basis and until when."""

    id: Slug | None = Field(default=None, description="assigned when left out; unique across watchlists")
    display_name: Name
    category: Category
    reason: Justification
    legal_basis: LegalBasis
    expires_at: AwareDatetime = Field(description="required; in the future and within the registry's horizon")
    status: SubjectStatus = "active"


class SubjectUpdate(_Patch):
    """Changes to a subject; suspension and expiry take effect on search at once."""

    display_name: Name | None = None
    category: Category | None = None
    reason: Justification | None = None
    legal_basis: LegalBasis | None = None
    expires_at: AwareDatetime | None = None
    status: SubjectStatus | None = None


#: Most photos one all-or-nothing enrolment request may carry (more go up one at a time once
#: the subject has an image).
MAX_ENROLMENT_IMAGES = 32


class EnrolmentImage(_Request):
    """One photo of a subject enrolment (``POST /v1/watchlists/{id}/enrolments``)."""

    content_base64: str = Field(min_length=1, description="the image file, base64 (RFC 4648, standard alphabet)")
    content_type: str = Field(max_length=100, description="image/jpeg, image/png, image/webp or image/bmp; the "
                                                          "content decides, as for a single upload")
    source: Provenance = Field(description="where the image came from (required provenance)")


class SubjectEnrolment(_Request):
    """A new subject and its photos: created together, or not at all."""

    subject: SubjectCreate
    images: list[EnrolmentImage] = Field(min_length=1, max_length=MAX_ENROLMENT_IMAGES)


class EnrolmentRefusal(_Response):
    """A photo of an enrolment request that was not enrolled, by its place in ``images``."""

    index: int = Field(ge=0)
    reason: str = Field(description="unreadable, unsupported_type, too_large, no_face, multiple_faces, too_small, "
                                    "too_blurred, low_quality, duplicate, near_duplicate or too_many_images")
    message: str


class SubjectPublic(_Response):
    """A subject as the registry keeps it (never a vector)."""

    id: Id
    watchlist_id: Id
    display_name: str
    category: Category
    reason: str
    legal_basis: str
    added_by: str
    expires_at: datetime
    expired: bool
    status: SubjectStatus
    images: list[ImagePublic]
    created_at: datetime
    updated_at: datetime


class SubjectPage(_Response):
    """One page of a watchlist's subjects, by id."""

    items: list[SubjectPublic]
    total: int
    limit: int
    offset: int


# -- deployments ---------------------------------------------------------------------------


class DeploymentCreate(_Request):
    """An authorisation to match on named cameras, between two times, against named watchlists.

    By default every subject gets a threshold of its own: the registry reads the normalised
    threshold that meets ``target_fpir`` on a watchlist of the snapshot's size from its
    background cohort, and ``threshold`` is only the raw floor no subject's threshold goes
    below. ``threshold_mode="global"`` instead names one raw ``threshold`` for everyone, which
    is refused when the cohort expects it to alert on more strangers than ``target_fpir``
    (or ``accept_fpir``, when given) at the snapshot's size.
    """

    id: Slug | None = Field(default=None, description="assigned when left out")
    purpose: Justification
    authorised_by: Name = Field(description="the person who authorised the deployment")
    camera_ids: list[CameraId] = Field(min_length=1, max_length=MAX_CAMERAS)
    start_at: AwareDatetime
    end_at: AwareDatetime
    watchlist_ids: list[Slug] = Field(min_length=1, max_length=MAX_WATCHLISTS)
    threshold_mode: ThresholdMode = Field(
        default="per_subject",
        description="per_subject: each subject's own threshold calibrated to target_fpir (threshold is the "
                    "floor); global: one raw threshold for everyone, checked against the cohort",
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="per_subject: the raw score (0..1) no subject's threshold goes below (default and minimum: "
                    "the registry's floor); global: the one threshold, required",
    )
    target_fpir: Rate = Field(
        default=DEFAULT_TARGET_FPIR,
        description="false alerts per stranger passing a camera aimed at (default 1/6000)",
    )
    accept_fpir: Rate | None = Field(
        default=None,
        description="global only: the false-alert rate accepted for a threshold the cohort expects above "
                    "target_fpir",
    )
    calibrated_for: ModelVersion | None = Field(
        default=None,
        description="global only: the model version the threshold was calibrated for (model_version of "
                    "openlfr evaluate's calibration.json); refused unless it is the running embedder's",
    )

    @field_validator("camera_ids")
    @classmethod
    def _cameras(cls, value: list[str]) -> list[str]:
        return _distinct(value, what="camera")

    @field_validator("watchlist_ids")
    @classmethod
    def _watchlists(cls, value: list[str]) -> list[str]:
        return _distinct(value, what="watchlist")

    @model_validator(mode="after")
    def _window(self) -> DeploymentCreate:
        if self.end_at <= self.start_at:
            raise ValueError(f"end_at ({self.end_at.isoformat()}) must be after start_at ({self.start_at.isoformat()})")
        if self.threshold_mode == "global" and self.threshold is None:
            raise ValueError("threshold: required with threshold_mode 'global' (the one raw score for everyone)")
        if self.calibrated_for is not None and self.threshold_mode != "global":
            raise ValueError("calibrated_for: names the model a global threshold was calibrated for; per-subject "
                             "thresholds are calibrated by the registry's own cohort")
        _check_accept(self.threshold_mode, self.target_fpir, self.accept_fpir)
        return self


def _check_accept(mode: ThresholdMode, target_fpir: float, accept_fpir: float | None) -> None:
    """``accept_fpir`` only for a global threshold, and never below the target."""
    if accept_fpir is None:
        return
    if mode != "global":
        raise ValueError(
            "accept_fpir: applies to a global threshold only; per-subject thresholds always meet target_fpir"
        )
    if accept_fpir < target_fpir:
        raise ValueError(
            f"accept_fpir: {accept_fpir:.3g} is below target_fpir {target_fpir:.3g}; it would accept nothing "
            "the target does not"
        )


class DeploymentUpdate(_Patch):
    """Changes to a running deployment. A threshold or target change is audited on its own
    (``deployment.threshold``) and re-computes the deployment's operating point."""

    purpose: Justification | None = None
    end_at: AwareDatetime | None = None
    camera_ids: list[CameraId] | None = Field(default=None, min_length=1, max_length=MAX_CAMERAS)
    threshold: float | None = Field(
        default=None, ge=0, le=1, description="per_subject: the floor; global: the one threshold"
    )
    target_fpir: Rate | None = None
    accept_fpir: Rate | None = Field(default=None, description="global only")

    @field_validator("camera_ids")
    @classmethod
    def _cameras(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _distinct(value, what="camera")


class DeploymentEnd(_Request):
    """Why a deployment is ended early (optional)."""

    reason: Justification | None = None


class Snapshot(_Response):
    """What the deployment searches: the watchlists as they were when it was created.

    References enrolled after ``snapshot_ts`` are not searched. ``fingerprint`` is the SHA-256
    (hex) of the sorted ``subject_id<TAB>reference_image_id`` lines, joined by newlines, of the
    subjects that were searchable then (active, unexpired, with at least one image).
    """

    snapshot_ts: float
    taken_at: datetime
    active_subjects: int
    reference_images: int
    fingerprint: str


class DeploymentStats(_Response):
    """Activity under the deployment, as the match stage reported it."""

    faces: int = Field(description="faces searched")
    tracks: int = Field(description="tracks started")


class OperatingPointPublic(_Response):
    """What a deployment's threshold is expected to give, read from the background cohort for
    the snapshot's watchlist size when it was authorised (or its target last changed)."""

    cohort: str = Field(description="the cohort it was read from (cohort@<fingerprint prefix>)")
    watchlist_size: int = Field(description="subjects in the snapshot (at least 1)")
    target_fpir: float
    accept_fpir: float | None
    normalised_threshold: float | None = Field(
        description="per_subject: the normalised score every subject's match must reach; null for global"
    )
    per_comparison_fmr: float = Field(description="expected false-match rate of one comparison")
    expected_fpir: float = Field(description="expected false alerts per stranger passing a camera")
    expected_false_alerts_per_10000: float = Field(description=f"expected_fpir x {PASSERS_BY:,} passers-by")
    expected_fnmr: float | None = Field(
        description="expected share of watchlisted people missed (the cohort's genuine pairs); null when the "
                    "cohort has nobody with two images"
    )
    method: str = Field(description="how the rate was had: empirical, or a tail fit when the pairs cannot resolve it")
    computed_at: datetime


class DeploymentPublic(_Response):
    """A deployment as the registry keeps it."""

    id: Id
    purpose: str
    authorised_by: str
    created_by: str
    camera_ids: list[Id]
    start_at: datetime
    end_at: datetime
    watchlist_ids: list[Id]
    threshold_mode: ThresholdMode = Field(
        description="per_subject, or global (also every deployment authorised before per-subject thresholds)"
    )
    threshold: float = Field(description="per_subject: the raw floor; global: the one threshold")
    operating_point: OperatingPointPublic | None = Field(
        description="the threshold's expected false-alert and miss rates; null for deployments authorised "
                    "before per-subject thresholds"
    )
    snapshot: Snapshot
    status: DeploymentStatus = Field(description="ended once ended by hand or once end_at has passed")
    stats: DeploymentStats
    model_version: str = Field(description="the embedding model it matches with (name@sha256 prefix)")
    matching: bool = Field(
        default=True, description="false while the gate withholds it (see not_matching_reason)"
    )
    not_matching_reason: str | None = Field(
        default=None, description="why an active deployment does not match now (watchlists awaiting re-embedding)"
    )
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None


class DeploymentPage(_Response):
    """One page of deployments, newest first."""

    items: list[DeploymentPublic]
    total: int
    limit: int
    offset: int


# -- re-embedding --------------------------------------------------------------------------


class ReembedFailure(_Response):
    """A reference that could not be re-embedded (it stays of its old embedder)."""

    subject_id: Id
    reference_image_id: str
    reason: str


class ReembedStatus(_Response):
    """The re-embedding of the registry's references into the running embedder's store."""

    state: Literal["idle", "running", "completed", "failed"] = Field(
        description="idle: never started since this process started; failed: stopped by an error (see error)"
    )
    model_version: str = Field(description="the running embedder, which the references are moved to")
    started_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    total: int = Field(default=0, description="references to move when it started")
    done: int = Field(default=0, description="references tried so far")
    subjects_moved: list[Id] = Field(default_factory=list, description="subjects with every reference moved")
    failed: list[ReembedFailure] = Field(default_factory=list, description="references not moved")
    lost_subjects: list[Id] = Field(
        default_factory=list, description="subjects none of whose references could be moved (not searchable)"
    )
    error: str | None = None
    watchlists_needing: dict[str, int] = Field(
        default_factory=dict, description="now: watchlist id -> subjects with references not yet re-embedded"
    )


class SubjectEnrolled(_Response):
    """The subject created, the images enrolled, and the photos refused with why."""

    subject: SubjectPublic
    images: list[ImagePublic]
    refused: list[EnrolmentRefusal]



# -- errors (for the OpenAPI document) -----------------------------------------------------


class ErrorMessage(_Response):
    """A refusal with its reason in words."""

    detail: str


class Refusal(_Response):
    """Why an enrolment image was refused."""

    reason: str = Field(description="unreadable, no_face, multiple_faces, too_small, too_blurred or low_quality")
    message: str


class ImageRefusal(_Response):
    """An enrolment image that cannot be a reference."""

    detail: Refusal
