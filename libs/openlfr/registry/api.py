"""HTTP API of the registry: watchlists, subjects, reference images and deployments.

Mounted by the match service on its HTTP port (``make_health_app(routers=[...])``). Reads need
any role; watchlist, subject and image writes need ``watchlist_admin``; deployment writes need
``deployment_authoriser``. 401 without a valid token, 403 (audited) without the role, 404 naming
what was not found, 409 for conflicts, 422 for invalid requests and refused images, 503 while
the vector store is down. Every change is audited with the caller's name as actor.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run
# time, and the role dependencies are aliases local to ``make_registry_router``.

import base64
import binascii
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response

from openlfr.api.auth import READERS, Access, Principal
from openlfr.api.limits import IMAGE_TYPES, read_image
from openlfr.api.settings import ApiSettings
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.registry.exceptions import Conflict, ImageRefused, Invalid, NotFound
from openlfr.registry.models import (
    DeploymentCreate,
    DeploymentEnd,
    DeploymentPage,
    DeploymentPublic,
    DeploymentStatus,
    DeploymentUpdate,
    SLUG_PATTERN,
    EnrolmentRefusal,
    ErrorMessage,
    ImagePublic,
    ImageRefusal,
    Provenance,
    ReembedStatus,
    SubjectCreate,
    SubjectEnrolled,
    SubjectEnrolment,
    SubjectPage,
    SubjectPublic,
    SubjectUpdate,
    WatchlistCreate,
    WatchlistPage,
    WatchlistPublic,
    WatchlistUpdate,
)
from openlfr.registry.service import MAX_PAGE, Registry

logger = logging.getLogger(__name__)

#: Where a service-level validation error points (``loc``), by field.
#: The largest ``offset`` a list takes (far beyond any list; bounded so SQLite never overflows).
MAX_OFFSET = 1_000_000_000
_QUERY_FIELDS = frozenset({"limit", "offset", "source"})

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "No token, or an unknown one."},
    403: {"model": ErrorMessage, "description": "The token lacks the role (the refusal is audited)."},
}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorMessage, "description": "Not found (named in detail)."}}
_409: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorMessage, "description": "Conflicts with the current state."}
}
_503: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "The vector store is unavailable."}
}

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image file itself (not multipart); its Content-Type names its format.",
        "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in sorted(IMAGE_TYPES)},
    }
}


@contextmanager
def _http_errors() -> Iterator[None]:
    """The registry's errors as HTTP answers."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, detail=str(exc)) from exc
    except Conflict as exc:
        detail: Any = str(exc) if exc.reason is None else {"reason": exc.reason, "message": exc.message}
        raise HTTPException(HTTPStatus.CONFLICT, detail=detail) from exc
    except ImageRefused as exc:
        raise HTTPException(
            HTTPStatus.UNPROCESSABLE_ENTITY, detail={"reason": exc.reason, "message": exc.message}
        ) from exc
    except Invalid as exc:
        where = "query" if exc.field in _QUERY_FIELDS else "body"
        raise HTTPException(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            detail=[{"type": "value_error", "loc": [where, exc.field], "msg": exc.message}],
        ) from exc
    except BackendUnavailable as exc:
        logger.warning('registry request failed: backend unavailable error="%s"', exc)
        raise HTTPException(
            HTTPStatus.SERVICE_UNAVAILABLE,
            detail=f"the vector store is unavailable: {exc}",
            headers={"Retry-After": "5"},
        ) from exc


#: An upload's refusal reason by the status ``read_image`` answers with.
_UPLOAD_REASONS = {HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too_large", HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "unsupported_type"}


async def _raw_body(request: Request) -> bytes:
    """The request body as bytes (bounded by the app's body size limit)."""
    return await request.body()


@contextmanager
def _undo_if_empty(
    registry: Registry, subject: Callable[[], SubjectPublic | None], enrolled: Callable[[], list[ImagePublic]], *,
    actor: str,
) -> Iterator[None]:
    """On any error, delete the subject an enrolment created if it has no image yet; a failure of
    that deletion is logged, the enrolment's own error is what the caller gets."""
    try:
        yield
    except BaseException:
        created = subject()
        if created is not None and not enrolled():
            try:
                registry.delete_subject(created.id, actor=actor)
            except Exception as exc:  # noqa: BLE001 - the original error is re-raised below
                logger.error('enrolment failed and its subject could not be deleted subject_id="%s" error="%s"',
                             created.id, exc)
        raise


def make_registry_router(registry: Registry, access: Access, limits: ApiSettings) -> APIRouter:
    """The registry's routes under ``/v1``.

    Args:
        registry: the registry the routes serve.
        access: authentication and roles (its audit log records refusals).
        limits: the image size and pixel limits of uploads.
    """
    Reader = Annotated[Principal, Depends(access.require(*READERS))]
    WatchlistAdmin = Annotated[Principal, Depends(access.require("watchlist_admin"))]
    Authoriser = Annotated[Principal, Depends(access.require("deployment_authoriser"))]
    WatchlistId = Annotated[str, Path(pattern=SLUG_PATTERN)]
    SubjectId = Annotated[str, Path(pattern=SLUG_PATTERN)]
    DeploymentId = Annotated[str, Path(pattern=SLUG_PATTERN)]
    ImageId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="most items returned")]
    Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items skipped")]

    decode_slots = limits.decode_slots()
    router = APIRouter(prefix="/v1")

    # -- watchlists ------------------------------------------------------------------------

    @router.post(
        "/watchlists", status_code=HTTPStatus.CREATED, response_model=WatchlistPublic, tags=["watchlists"],
        summary="Create a watchlist", responses={**_AUTH, **_409},
    )
    def create_watchlist(body: WatchlistCreate, who: WatchlistAdmin) -> WatchlistPublic:
        with _http_errors():
            return registry.create_watchlist(body, actor=who.name)

    @router.get(
        "/watchlists", response_model=WatchlistPage, tags=["watchlists"], summary="List watchlists",
        responses=_AUTH,
    )
    def list_watchlists(who: Reader, limit: Limit = 100, offset: Offset = 0) -> WatchlistPage:
        with _http_errors():
            return registry.list_watchlists(limit=limit, offset=offset)

    @router.get(
        "/watchlists/{watchlist_id}", response_model=WatchlistPublic, tags=["watchlists"],
        summary="Get a watchlist", responses={**_AUTH, **_404},
    )
    def get_watchlist(watchlist_id: WatchlistId, who: Reader) -> WatchlistPublic:
        with _http_errors():
            return registry.get_watchlist(watchlist_id)

    @router.patch(
        "/watchlists/{watchlist_id}", response_model=WatchlistPublic, tags=["watchlists"],
        summary="Rename or re-describe a watchlist", responses={**_AUTH, **_404},
    )
    def update_watchlist(watchlist_id: WatchlistId, body: WatchlistUpdate, who: WatchlistAdmin) -> WatchlistPublic:
        with _http_errors():
            return registry.update_watchlist(watchlist_id, body, actor=who.name)

    @router.delete(
        "/watchlists/{watchlist_id}", status_code=HTTPStatus.NO_CONTENT, response_class=Response, tags=["watchlists"],
        summary="Delete a watchlist with its subjects and their vectors",
        description="Refused (409) while an active deployment searches it.",
        responses={**_AUTH, **_404, **_409, **_503},
    )
    def delete_watchlist(watchlist_id: WatchlistId, who: WatchlistAdmin) -> Response:
        with _http_errors():
            registry.delete_watchlist(watchlist_id, actor=who.name)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @router.post(
        "/watchlists/{watchlist_id}/suspend", response_model=WatchlistPublic, tags=["watchlists"],
        summary="Suspend a whole watchlist",
        description="No deployment searches its subjects until it is resumed (the match stage's deployment gate "
                    "is rebuilt before the answer); the subjects keep their own status. Audited "
                    "(watchlist.suspend); suspending a suspended watchlist changes and records nothing.",
        responses={**_AUTH, **_404},
    )
    def suspend_watchlist(watchlist_id: WatchlistId, who: WatchlistAdmin) -> WatchlistPublic:
        with _http_errors():
            return registry.set_watchlist_suspended(watchlist_id, suspended=True, actor=who.name)

    @router.post(
        "/watchlists/{watchlist_id}/resume", response_model=WatchlistPublic, tags=["watchlists"],
        summary="Resume a suspended watchlist",
        description="Its subjects are searched again, each as its own status says (a subject suspended on its "
                    "own stays suspended). Audited (watchlist.resume).",
        responses={**_AUTH, **_404},
    )
    def resume_watchlist(watchlist_id: WatchlistId, who: WatchlistAdmin) -> WatchlistPublic:
        with _http_errors():
            return registry.set_watchlist_suspended(watchlist_id, suspended=False, actor=who.name)

    # -- subjects --------------------------------------------------------------------------

    @router.post(
        "/watchlists/{watchlist_id}/subjects", status_code=HTTPStatus.CREATED, response_model=SubjectPublic,
        tags=["subjects"], summary="Put a subject on a watchlist",
        description="The subject is searchable once an image is enrolled, while active and unexpired.",
        responses={**_AUTH, **_404, **_409},
    )
    def create_subject(watchlist_id: WatchlistId, body: SubjectCreate, who: WatchlistAdmin) -> SubjectPublic:
        with _http_errors():
            return registry.create_subject(watchlist_id, body, actor=who.name)

    @router.get(
        "/watchlists/{watchlist_id}/subjects", response_model=SubjectPage, tags=["subjects"],
        summary="List a watchlist's subjects", responses={**_AUTH, **_404},
    )
    def list_subjects(watchlist_id: WatchlistId, who: Reader, limit: Limit = 100, offset: Offset = 0) -> SubjectPage:
        with _http_errors():
            return registry.list_subjects(watchlist_id, limit=limit, offset=offset)

    @router.get(
        "/subjects/{subject_id}", response_model=SubjectPublic, tags=["subjects"], summary="Get a subject",
        responses={**_AUTH, **_404},
    )
    def get_subject(subject_id: SubjectId, who: Reader) -> SubjectPublic:
        with _http_errors():
            return registry.get_subject(subject_id)

    @router.patch(
        "/subjects/{subject_id}", response_model=SubjectPublic, tags=["subjects"], summary="Change a subject",
        description="Suspension and expiry changes reach the vector store before the answer.",
        responses={**_AUTH, **_404, **_503},
    )
    def update_subject(subject_id: SubjectId, body: SubjectUpdate, who: WatchlistAdmin) -> SubjectPublic:
        with _http_errors():
            return registry.update_subject(subject_id, body, actor=who.name)

    @router.delete(
        "/subjects/{subject_id}", status_code=HTTPStatus.NO_CONTENT, response_class=Response, tags=["subjects"],
        summary="Delete a subject, its images and its vectors", responses={**_AUTH, **_404, **_503},
    )
    def delete_subject(subject_id: SubjectId, who: WatchlistAdmin) -> Response:
        with _http_errors():
            registry.delete_subject(subject_id, actor=who.name)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @router.post(
        "/watchlists/{watchlist_id}/enrolments", status_code=HTTPStatus.CREATED, response_model=SubjectEnrolled,
        tags=["subjects"], summary="Put a subject on a watchlist with its photos, all or nothing",
        description=(
            "Creates the subject and enrols its photos (base64 in the body) as single uploads would be, "
            "one at a time under the same policy and audit. The subject is kept only when at least one "
            "photo is enrolled: when every photo is refused it is deleted again before the answer (422, "
            "each photo's reason), so no subject without an image is left behind, whatever happens to "
            "the caller. More photos than one request carries go up one at a time afterwards."
        ),
        responses={
            **_AUTH, **_404, **_409, **_503,
            422: {"description": "The body is invalid, or no photo was enrolled (``reason`` no_image_enrolled, "
                                 "with each photo's refusal); nothing is left behind."},
        },
    )
    def enrol_subject(watchlist_id: WatchlistId, body: SubjectEnrolment, who: WatchlistAdmin) -> SubjectEnrolled:
        subject = None
        enrolled: list[ImagePublic] = []
        refused: list[EnrolmentRefusal] = []
        # A registry error (a store that fails) answers as a single upload's would, after the
        # subject is deleted again if it has no image yet.
        with _http_errors(), _undo_if_empty(registry, lambda: subject, lambda: enrolled, actor=who.name):
            for index, upload in enumerate(body.images):
                try:
                    data = base64.b64decode(upload.content_base64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    refused.append(EnrolmentRefusal(index=index, reason="unreadable", message=f"not base64: {exc}"))
                    continue
                with decode_slots.slot():  # bounded memory: one decoded photo of this request at a time
                    try:
                        image = read_image(data, content_type=upload.content_type,
                                           max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
                    except HTTPException as exc:
                        refused.append(EnrolmentRefusal(index=index, reason=_UPLOAD_REASONS.get(
                            exc.status_code, "unreadable"), message=str(exc.detail)))
                        continue
                    if subject is None:  # created at the first photo that can be analysed
                        subject = registry.create_subject(watchlist_id, body.subject, actor=who.name)
                    try:
                        enrolled.append(registry.enrol_image(subject.id, data, source=upload.source,
                                                             actor=who.name, image=image))
                    except ImageRefused as exc:
                        refused.append(EnrolmentRefusal(index=index, reason=exc.reason, message=exc.message))
                    except Conflict as exc:
                        refused.append(EnrolmentRefusal(index=index, reason=exc.reason or "conflict",
                                                        message=exc.message or str(exc)))
        if not enrolled:
            if subject is not None:
                with _http_errors():
                    registry.delete_subject(subject.id, actor=who.name)
            raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, detail={
                "reason": "no_image_enrolled",
                "message": f"none of the {len(body.images)} photo(s) could be enrolled, so the subject was not "
                           "created: " + "; ".join(f"[{r.index}] {r.reason}: {r.message}" for r in refused),
                "refused": [r.model_dump() for r in refused],
            })
        with _http_errors():
            subject = registry.get_subject(subject.id)  # with the images it now has
        return SubjectEnrolled(subject=subject, images=enrolled, refused=refused)

    # -- reference images ------------------------------------------------------------------

    @router.post(
        "/subjects/{subject_id}/images", status_code=HTTPStatus.CREATED, response_model=ImagePublic,
        tags=["images"], summary="Enrol a reference image of a subject",
        description=(
            "The body is the image file. It is enrolled only when it shows exactly one face, large, "
            "sharp and good enough; otherwise 422 with the reason."
        ),
        responses={
            **_AUTH, **_404, **_503,
            409: {"model": ImageRefusal, "description": "Already a reference (duplicate), or too many images."},
            413: {"model": ErrorMessage, "description": "The image is over the size limit."},
            415: {"model": ErrorMessage, "description": "Not an accepted image type."},
            422: {"model": ImageRefusal, "description": "The image was refused (reason and message)."},
        },
        openapi_extra=_IMAGE_BODY,
    )
    def enrol_image(
        subject_id: SubjectId,
        source: Annotated[Provenance, Query(description="where the image came from (required provenance)")],
        who: WatchlistAdmin,
        request: Request,
        data: Annotated[bytes, Depends(_raw_body)],
    ) -> ImagePublic:
        with _http_errors():
            registry.get_subject(subject_id)
        with decode_slots.slot():  # bounded memory: at most so many decoded images at once
            try:
                image = read_image(
                    data, content_type=request.headers.get("content-type"), max_bytes=limits.max_image_bytes,
                    max_pixels=limits.max_image_pixels,
                )
            except HTTPException as exc:
                if exc.status_code != HTTPStatus.UNPROCESSABLE_ENTITY:
                    raise
                raise HTTPException(exc.status_code, detail={"reason": "unreadable", "message": exc.detail}) from exc
            with _http_errors():
                return registry.enrol_image(subject_id, data, source=source, actor=who.name, image=image)

    @router.get(
        "/subjects/{subject_id}/images/{image_id}", response_class=Response, tags=["images"],
        summary="The reference chip of an image (JPEG, 150x150, aligned)",
        responses={**_AUTH, **_404, 200: {"content": {"image/jpeg": {}}, "description": "The chip."}},
    )
    def get_image(subject_id: SubjectId, image_id: ImageId, who: Reader) -> Response:
        with _http_errors():
            chip = registry.image_chip(subject_id, image_id)
        return Response(content=chip, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.delete(
        "/subjects/{subject_id}/images/{image_id}", status_code=HTTPStatus.NO_CONTENT, response_class=Response,
        tags=["images"], summary="Delete a reference image and its vector", responses={**_AUTH, **_404, **_503},
    )
    def delete_image(subject_id: SubjectId, image_id: ImageId, who: WatchlistAdmin) -> Response:
        with _http_errors():
            registry.delete_image(subject_id, image_id, actor=who.name)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    # -- deployments -----------------------------------------------------------------------

    @router.post(
        "/deployments", status_code=HTTPStatus.CREATED, response_model=DeploymentPublic, tags=["deployments"],
        summary="Authorise a deployment",
        description=(
            "Takes the watchlists' snapshot now and calibrates the threshold on the registry's background "
            "cohort for the snapshot's size: per_subject (default) reads the normalised threshold that meets "
            "target_fpir (default 1/6000) and returns it with the expected false-alert and miss rates in "
            "operating_point, threshold being the raw floor; global checks one raw threshold and refuses it "
            "(422, naming threshold and the numbers) when its expected FPIR exceeds target_fpir, unless "
            "accept_fpir covers it. A threshold under the registry's floor is refused; a camera may be in one "
            "active deployment at a time."
        ),
        responses={**_AUTH, **_409},
    )
    def create_deployment(body: DeploymentCreate, who: Authoriser) -> DeploymentPublic:
        with _http_errors():
            return registry.create_deployment(body, actor=who.name)

    @router.get(
        "/deployments", response_model=DeploymentPage, tags=["deployments"], summary="List deployments, newest first",
        responses=_AUTH,
    )
    def list_deployments(
        who: Reader,
        state: Annotated[DeploymentStatus | None, Query(alias="status", description="only active or ended")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> DeploymentPage:
        with _http_errors():
            return registry.list_deployments(status=state, limit=limit, offset=offset)

    @router.get(
        "/deployments/{deployment_id}", response_model=DeploymentPublic, tags=["deployments"],
        summary="Get a deployment", responses={**_AUTH, **_404},
    )
    def get_deployment(deployment_id: DeploymentId, who: Reader) -> DeploymentPublic:
        with _http_errors():
            return registry.get_deployment(deployment_id)

    @router.patch(
        "/deployments/{deployment_id}", response_model=DeploymentPublic, tags=["deployments"],
        summary="Change a running deployment (purpose, end, cameras, threshold, target)",
        description=(
            "A threshold or target change is audited as deployment.threshold and is floored too; a new "
            "target_fpir (or a new global threshold) re-computes the operating point at the snapshot's size."
        ),
        responses={**_AUTH, **_404, **_409},
    )
    def update_deployment(deployment_id: DeploymentId, body: DeploymentUpdate, who: Authoriser) -> DeploymentPublic:
        with _http_errors():
            return registry.update_deployment(deployment_id, body, actor=who.name)

    @router.post(
        "/deployments/{deployment_id}/end", response_model=DeploymentPublic, tags=["deployments"],
        summary="End a deployment now", responses={**_AUTH, **_404, **_409},
    )
    def end_deployment(
        deployment_id: DeploymentId, who: Authoriser, body: Annotated[DeploymentEnd | None, Body()] = None
    ) -> DeploymentPublic:
        with _http_errors():
            return registry.end_deployment(deployment_id, actor=who.name, reason=body.reason if body else None)

    # -- re-embedding ----------------------------------------------------------------------------

    @router.post(
        "/reembed", status_code=HTTPStatus.ACCEPTED, response_model=ReembedStatus, tags=["reembedding"],
        summary="Re-embed every reference into the running embedder's store (background)",
        description=(
            "Starts moving every reference not of the running embedder (OPENLFR_EMBEDDER) into its store, "
            "from the kept chips, in the background; deployments over watchlists awaiting it do not match "
            "until it completes. Audited. 409 while one runs."
        ),
        responses={**_AUTH, **_409},
    )
    def start_reembed(who: WatchlistAdmin) -> ReembedStatus:
        with _http_errors():
            return registry.start_reembed(actor=who.name)

    @router.get(
        "/reembed", response_model=ReembedStatus, tags=["reembedding"],
        summary="The re-embedding's progress, and the watchlists awaiting it", responses={**_AUTH},
    )
    def reembed_status(who: Reader) -> ReembedStatus:
        return registry.reembed_status()

    return router

