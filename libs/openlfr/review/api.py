"""The review API: alert records and crops, two-person review, the live stream, the
per-deployment report and the operator console.

Every route but ``/console`` needs a token (``openlfr.api.auth``). Reads are open to every role
(``READERS``); a review needs ``reviewer``. A 403 is written to the audit log by ``Access``; each
review step is written to it (``alert.review``) inside the review's transaction, so a step that
could not be audited is not recorded; each report handed out is written to it (``export``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse

from openlfr.api.auth import READERS, Access, Principal
from openlfr.audit.log import AuditLog, AuditLogError
from openlfr.review.console import CONSOLE_HEADERS, PAGE
from openlfr.review.events import EventHub, heartbeat_ok, sse_comment, sse_frame
from openlfr.review.exceptions import (
    AlertNotFound,
    DeploymentNotFound,
    HubFull,
    InvalidCursor,
    InvalidReview,
    RegistryUnavailable,
    ReviewConflict,
    SubjectNotFound,
)
from openlfr.review.registry_client import RegistryClient
from openlfr.review.report import NOT_ASKED, build_report, iso_utc, render_markdown
from openlfr.review.schemas import (
    AlertPagePublic,
    AlertPublic,
    AlertSubjectPublic,
    AlertSummaryPublic,
    MePublic,
    ReviewCreate,
)
from openlfr.review.service import ReviewService
from openlfr.review.store import MAX_PAGE, ReviewOutcome, ReviewStore, Status, Tallies

logger = logging.getLogger(__name__)

#: How often the stream sends a comment when there is nothing to say (proxies close idle streams).
HEARTBEAT_S = 15.0

_ALERT_ID = r"^[0-9a-f]{32}$"
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"
#: The latest time a query may name (year 3000): bounded so that no comparison overflows.
MAX_EPOCH_S = 32_503_680_000.0

AlertIdPath = Annotated[str, Path(pattern=_ALERT_ID, description="the alert's 32 hex digit id")]
DeploymentIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=_ID)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an unknown one"},
    403: {"description": "the token lacks the role (the refusal is audited)"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such alert (or its record was purged)"}}
_JPEG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG crop"}}


def _detail_404(exc: AlertNotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))


def make_review_router(
    store: ReviewStore,
    hub: EventHub,
    access: Access,
    *,
    audit: AuditLog,
    registry_client: RegistryClient | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The review routes.

    Args:
        store: the alert records.
        hub: the live events (the alert stage publishes through :class:`ReviewService`).
        access: authentication and roles.
        audit: where reviews and report exports are recorded.
        registry_client: reads deployments for the report; None builds reports from the
            tallies alone, saying the deployment's details are unknown.
        heartbeat_s: seconds between the stream's keep-alive comments.
        clock: wall time, for the report's ``generated_ts``.
    """
    heartbeat_s = heartbeat_ok(heartbeat_s)
    service = ReviewService(store, hub)
    router = APIRouter()
    # Dependencies as defaults: annotations naming these closure variables could not be resolved
    # by FastAPI under ``from __future__ import annotations``.
    reader = Depends(access.require(*READERS))
    reviewer = Depends(access.require("reviewer"))

    @router.get("/v1/me", tags=["alerts"], responses=_ERRORS)
    def me(who: Principal = reader) -> MePublic:
        """Who holds the token: name, roles, and whether they may review (the console shows it and
        offers only the actions the holder may take)."""
        return MePublic(name=who.name, roles=sorted(who.roles), may_review="reviewer" in who.roles)

    @router.get("/v1/alerts/summary", tags=["alerts"], responses=_ERRORS)
    def alert_summary(
        deployment_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=_ID)] = None,
        camera_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=_ID)] = None,
        who: Principal = reader,
    ) -> AlertSummaryPublic:
        """Alerts per status (filtered by deployment and camera), how many the caller may review
        now, and the camera and deployment ids there are to filter by."""
        summary = store.summary(
            deployment_id=deployment_id,
            camera_id=camera_id,
            reviewer=who.name if "reviewer" in who.roles else None,
        )
        return AlertSummaryPublic.from_summary(summary)

    # Declared before /v1/alerts/{alert_id}, which would otherwise take "stream" as an id.
    @router.get(
        "/v1/alerts/stream",
        tags=["alerts"],
        response_class=StreamingResponse,
        responses={
            **_ERRORS,
            200: {
                "content": {"text/event-stream": {}},
                "description": (
                    "Server-Sent Events. `event: alert` with an alert record (no crops; `probe_url` and "
                    "`reference_url` point at them) for each new alert; `event: review` with "
                    "`{alert_id, previous_status, step, alert}` for each review step; `event: resync` with "
                    "`{dropped}` when this stream fell behind and lost events (reload the list); a `: heartbeat` "
                    "comment every ~15 s. Each event has an `id` (a counter of this process)."
                ),
            },
            503: {"description": "too many live streams are open, or the service is stopping"},
        },
    )
    async def stream_alerts(who: Principal = reader) -> StreamingResponse:
        """Follow new alerts and review changes live (send the token in the Authorization header)."""
        if hub.full():
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"no more live streams can be opened now ({hub.max_subscribers} at most); try again later",
            )
        logger.info('alert stream opened actor="%s"', who.name)
        return StreamingResponse(
            _events(hub, heartbeat_s, who.name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/v1/alerts", tags=["alerts"], responses={**_ERRORS, 422: {"description": "bad filter or cursor"}})
    def list_alerts(
        status_: Annotated[Status | None, Query(alias="status", description="only alerts in this state")] = None,
        deployment_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=_ID)] = None,
        camera_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=_ID)] = None,
        since: Annotated[float | None, Query(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False,
                                             description="capture time from (inclusive), epoch seconds")] = None,
        until: Annotated[float | None, Query(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False,
                                             description="capture time before (exclusive), epoch seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=400, description="next_cursor of the page before")] = None,
        needs_my_review: Annotated[bool, Query(
            description="only alerts the caller may review now: pending ones, and those awaiting a second "
            "review whose first review someone else made (none for a token without the reviewer role)"
        )] = False,
        who: Principal = reader,
    ) -> AlertPagePublic:
        """Alerts, newest first (by capture time), with their review state and steps."""
        if needs_my_review and "reviewer" not in who.roles:
            return AlertPagePublic(items=[], next_cursor=None)
        try:
            page = store.list_alerts(
                status=status_,
                deployment_id=deployment_id,
                camera_id=camera_id,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
                needs_review_by=who.name if needs_my_review else None,
            )
        except (InvalidCursor, ValueError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        return AlertPagePublic(
            items=[AlertPublic.from_record(r) for r in page.records], next_cursor=page.next_cursor
        )

    @router.get("/v1/alerts/{alert_id}", tags=["alerts"], responses={**_ERRORS, **_NOT_FOUND})
    def get_alert(alert_id: AlertIdPath, who: Principal = reader) -> AlertPublic:
        """One alert with its review steps."""
        try:
            return AlertPublic.from_record(store.get(alert_id))
        except AlertNotFound as exc:
            raise _detail_404(exc) from exc

    @router.get(
        "/v1/alerts/{alert_id}/subject",
        tags=["alerts"],
        responses={
            **_ERRORS,
            404: {"description": "no such alert, or the registry no longer knows its subject"},
            502: {"description": "the registry could not be asked (the reason is given)"},
            503: {"description": "no registry is configured"},
        },
    )
    def alert_subject(alert_id: AlertIdPath, who: Principal = reader) -> AlertSubjectPublic:
        """The category, legal basis and expiry of the subject an alert names, from the registry
        (only for subjects that have an alert here)."""
        try:
            subject_id = store.get(alert_id).subject_id
        except AlertNotFound as exc:
            raise _detail_404(exc) from exc
        if registry_client is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="no registry is configured (OPENLFR_REVIEW_REGISTRY_URL), so the subject cannot be looked up",
            )
        try:
            record = registry_client.get_subject(subject_id)
        except SubjectNotFound as exc:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"the registry does not know subject {subject_id!r} (deleted since the alert?)",
            ) from exc
        except RegistryUnavailable as exc:
            logger.warning('subject lookup: registry unavailable alert_id="%s" error="%s"', alert_id, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=str(exc)) from exc
        try:
            return AlertSubjectPublic(
                subject_id=subject_id,
                category=str(record["category"]),
                legal_basis=str(record["legal_basis"]),
                expires_ts=_epoch(record["expires_at"]),
                expired=bool(record["expired"]),
                status=str(record["status"]),
            )
        except (KeyError, ValueError) as exc:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY,
                detail=f"the registry's record of subject {subject_id!r} is not as expected: {exc!r}",
            ) from exc

    def chip(alert_id: str, which: Literal["probe", "reference", "scene"]) -> Response:
        try:
            chips = store.chips(alert_id)
        except AlertNotFound as exc:
            raise _detail_404(exc) from exc
        data = {"probe": chips.probe, "reference": chips.reference, "scene": chips.scene}[which]
        if data is None:
            if chips.crops_purged_ts is not None:
                days = store.crop_retention_s / 86400
                detail = (
                    f"the {which} crop of alert {alert_id} was deleted at {iso_utc(chips.crops_purged_ts)} "
                    f"under the crop retention period ({days:g} days); the record is kept"
                )
            elif which == "reference" and not chips.had_reference:
                detail = f"alert {alert_id} came without a watchlist reference image"
            elif which == "scene":
                detail = f"alert {alert_id} came without a scene crop (scene crops were off at detect)"
            else:
                detail = f"alert {alert_id} has no {which} crop"
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)
        return Response(
            content=data,
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"},
        )

    @router.get(
        "/v1/alerts/{alert_id}/probe.jpg",
        tags=["alerts"],
        response_class=Response,
        responses={**_JPEG, **_ERRORS, 404: {"description": "no such alert, or its crops were deleted (says which)"}},
    )
    def get_probe(alert_id: AlertIdPath, who: Principal = reader) -> Response:
        """The face the camera saw (JPEG), until the crop retention deletes it."""
        return chip(alert_id, "probe")

    @router.get(
        "/v1/alerts/{alert_id}/reference.jpg",
        tags=["alerts"],
        response_class=Response,
        responses={**_JPEG, **_ERRORS, 404: {"description": "no such alert, no reference, or deleted (says which)"}},
    )
    def get_reference(alert_id: AlertIdPath, who: Principal = reader) -> Response:
        """The watchlist image it matched (JPEG), until the crop retention deletes it."""
        return chip(alert_id, "reference")

    @router.get(
        "/v1/alerts/{alert_id}/scene.jpg",
        tags=["alerts"],
        response_class=Response,
        responses={**_JPEG, **_ERRORS, 404: {"description": "no such alert, no scene crop, or deleted (says which)"}},
    )
    def get_scene(alert_id: AlertIdPath, who: Principal = reader) -> Response:
        """The probe face in its scene (JPEG, the face box enlarged about 3x), until the crop
        retention deletes it with the face crops."""
        return chip(alert_id, "scene")

    @router.post(
        "/v1/alerts/{alert_id}/reviews",
        tags=["reviews"],
        responses={
            **_ERRORS,
            **_NOT_FOUND,
            409: {
                "description": "already confirmed or rejected; the first reviewer tried the second step; "
                "the alert moved on since `step` was read; a confirm after the crops were deleted"
            },
            422: {"description": "a reject without a reason, a reason too long, a bad decision"},
            503: {"description": "the audit log cannot be written, so the review was not recorded"},
        },
    )
    def review_alert(alert_id: AlertIdPath, body: ReviewCreate, who: Principal = reviewer) -> AlertPublic:
        """Make one review step: the first reviewer's confirm makes an alert `awaiting_second`, a
        second, different reviewer's confirm makes it `confirmed`; a reject (with a reason) at
        either step makes it `rejected`. Returns the alert after the step."""

        def audited(outcome: ReviewOutcome) -> None:
            record = outcome.record
            audit.append(
                actor=who.name,
                action="alert.review",
                target=f"alert:{alert_id}",
                details={
                    "step": outcome.step.step,
                    "decision": outcome.step.decision,
                    "reason": outcome.step.reason,
                    "previous_status": outcome.previous_status,
                    "status": record.status,
                    "deployment_id": record.deployment_id,
                    "camera_id": record.camera_id,
                    "subject_id": record.subject_id,
                },
                ts=outcome.step.ts,
            )

        try:
            outcome = service.review(
                alert_id,
                reviewer=who.name,
                decision=body.decision,
                reason=body.reason,
                expected_step=body.step,
                before_commit=audited,
            )
        except AlertNotFound as exc:
            raise _detail_404(exc) from exc
        except ReviewConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=exc.detail) from exc
        except InvalidReview as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        except (AuditLogError, OSError) as exc:
            logger.error('review not recorded: audit log unwritable alert_id="%s" error="%s"', alert_id, exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"the review was not recorded: the audit log cannot be written ({exc})",
            ) from exc
        return AlertPublic.from_record(outcome.record)

    @router.get(
        "/v1/deployments/{deployment_id}/report",
        tags=["reports"],
        responses={
            **_ERRORS,
            200: {
                "content": {"application/json": {}, "text/markdown": {}},
                "description": "the report (JSON, or Markdown with format=markdown)",
            },
            404: {"description": "the registry does not know the deployment (or, without a registry, it has no alert)"},
            502: {"description": "the registry could not be asked (the reason is given)"},
        },
    )
    def deployment_report(
        deployment_id: DeploymentIdPath,
        format_: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
        who: Principal = reader,
    ) -> Response:
        """What a force publishes for a deployment: purpose, authority, cameras, window, threshold,
        watchlist size, model version, faces and tracks, alerts and how many were wrong, and the
        look-alike watch (``"unknown (reason)"`` when the registry does not serve it or fails)."""
        tallies = store.tallies(deployment_id)
        deployment: dict[str, Any] | None = None
        look_alikes: dict[str, Any] | None = None
        look_alikes_unknown = NOT_ASKED
        if registry_client is None:
            if tallies is None:
                raise HTTPException(
                    status.HTTP_404_NOT_FOUND,
                    detail=f"no alert has been recorded for deployment {deployment_id!r}, and no registry is "
                    "configured to look the deployment up",
                )
        else:
            try:
                deployment = registry_client.get_deployment(deployment_id)
            except DeploymentNotFound as exc:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
            except RegistryUnavailable as exc:
                logger.warning('report: registry unavailable deployment_id="%s" error="%s"', deployment_id, exc)
                raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=str(exc)) from exc
            # The look-alike watch alone failing leaves the rest of the report standing.
            try:
                look_alikes = registry_client.get_look_alikes(deployment_id)
            except RegistryUnavailable as exc:
                logger.warning('report: look-alikes unavailable deployment_id="%s" error="%s"', deployment_id, exc)
                look_alikes_unknown = str(exc)
            else:
                if look_alikes is None:
                    look_alikes_unknown = "the registry does not serve the look-alike watch"
        report = build_report(deployment, tallies or Tallies(deployment_id), generated_ts=clock(),
                              look_alikes=look_alikes, look_alikes_unknown=look_alikes_unknown)
        audit.append(
            actor=who.name,
            action="export",
            target=f"deployment:{deployment_id}/report",
            details={
                "format": format_,
                "alerts": report["alerts"],
                "adjudicated": report["adjudicated"],
                "registry": deployment is not None,
                "look_alikes": look_alikes is not None,
            },
        )
        if format_ == "markdown":
            return PlainTextResponse(render_markdown(report), media_type="text/markdown; charset=utf-8")
        return JSONResponse(report)

    @router.get("/console", tags=["console"], response_class=HTMLResponse)
    def console() -> HTMLResponse:
        """The operator console (one self-contained page; it asks for a token)."""
        return HTMLResponse(PAGE, headers=CONSOLE_HEADERS)

    return router


def _epoch(value: object) -> float:
    """Epoch seconds of an ISO 8601 time (one without an offset is UTC).

    Raises:
        ValueError: not an ISO 8601 time.
    """
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)).timestamp()


async def _events(hub: EventHub, heartbeat_s: float, actor: str) -> AsyncIterator[str]:
    """The Server-Sent Events of one stream, until the client goes or the hub closes."""
    try:
        sub = hub.subscribe(loop=asyncio.get_running_loop())
    except HubFull as exc:
        yield f"event: error\ndata: {json.dumps({'detail': str(exc)})}\n\n"
        return
    try:
        yield "retry: 3000\n" + sse_comment("connected")
        dropped_seen = 0
        while True:
            event = await sub.next(heartbeat_s)
            if sub.dropped != dropped_seen:
                yield f"event: resync\ndata: {json.dumps({'dropped': sub.dropped - dropped_seen})}\n\n"
                dropped_seen = sub.dropped
            if event is not None:
                yield sse_frame(event)
            elif sub.closed:
                return
            else:
                yield sse_comment("heartbeat")
    finally:
        sub.close()
        logger.info('alert stream closed actor="%s" dropped="%d"', actor, sub.dropped)
