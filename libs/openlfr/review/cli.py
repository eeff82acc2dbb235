"""``openlfr alerts list|show|review``: alerts and two-person review through the alert service's
review API (token in ``$OPENLFR_TOKEN``).

The API keeps the two-person rule: a first confirm makes an alert ``awaiting_second``; only a
different reviewer's confirm makes it ``confirmed``; a reject (with a reason) at either step
makes it ``rejected``. ``alerts review`` sends the step it read, so an alert that moved on in
between is refused rather than reviewed blind. Refusals are printed in words: 403 (the token
lacks the reviewer role), 409 (final already, the same reviewer twice, the alert moved on, crops
deleted), 422. Exit status: 0 done, 1 refused or unreachable, 2 a bad flag or no token.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from openlfr.cli_support import ALERT_API, EXIT_USAGE, TIME_FORMS, fail, local_time, parse_time, refused, token
from openlfr.review.client import ReviewClient
from openlfr.review.exceptions import ReviewApiError, ReviewApiUnreachable
from openlfr.review.schemas import AlertPublic, ReviewCreate
from openlfr.review.store import MAX_PAGE, MAX_REASON_CHARS

_ALERT_ID_HELP = "the alert's id (32 hex digits, as alerts list prints it)"

#: What a review refusal means, beside the API's own words.
_MEANING = {
    403: "your token lacks the reviewer role, which reviewing needs",
    404: "no such alert",
}


def _client(args: argparse.Namespace) -> ReviewClient | None:
    value = token()
    return None if value is None else ReviewClient(args.api, value)


def _line(alert: AlertPublic) -> list[str]:
    who = ",".join(r.reviewer for r in alert.reviews) or "-"
    return [alert.alert_id, local_time(alert.capture_ts), alert.camera_id, alert.deployment_id or "-",
            alert.subject_id, f"{alert.score:.3f}", alert.status, who]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _describe(alert: AlertPublic) -> str:
    lines = [
        f"alert {alert.alert_id}: {alert.status}"
        + (f" (waits for review step {alert.next_step})" if alert.next_step else ""),
        f"  subject {alert.subject_id} on watchlist {alert.watchlist_id}, score {alert.score:.3f} "
        f"(threshold {alert.threshold:.3f}, margin {alert.margin:.3f})",
        f"  camera {alert.camera_id}, deployment {alert.deployment_id or '-'}, seen {local_time(alert.capture_ts)}",
    ]
    lines += [f"  step {r.step}: {r.decision} by {r.reviewer} at {local_time(r.ts)}"
              + (f": {r.reason}" if r.reason else "") for r in alert.reviews]
    if alert.crops_purged_ts is not None:
        lines.append(f"  face crops deleted under the retention period at {local_time(alert.crops_purged_ts)}")
    return "\n".join(lines)


def cmd_alerts_list(args: argparse.Namespace) -> int:
    """Alerts, newest first, filtered; every page up to ``--limit``."""
    what = "alerts list"
    try:
        since = parse_time(args.since, flag="--since").timestamp() if args.since else None
        until = parse_time(args.until, flag="--until").timestamp() if args.until else None
    except ValueError as exc:
        return fail(what, str(exc), code=EXIT_USAGE)
    if args.limit < 1:
        return fail(what, f"--limit: {args.limit} must be at least 1", code=EXIT_USAGE)
    if since is not None and until is not None and until <= since:
        return fail(what, f"--until ({args.until}) must be after --since ({args.since})", code=EXIT_USAGE)
    client = _client(args)
    if client is None:
        return EXIT_USAGE
    alerts: list[AlertPublic] = []
    cursor: str | None = None
    try:
        while len(alerts) < args.limit:
            page = client.list_alerts(status=args.status, deployment_id=args.deployment, camera_id=args.camera,
                                      since=since, until=until, limit=min(MAX_PAGE, args.limit - len(alerts)),
                                      cursor=cursor, needs_my_review=args.needs_my_review)
            alerts += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
    except (ReviewApiError, ReviewApiUnreachable) as exc:
        return refused(what, exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in alerts], indent=2))
        return 0
    print(_table([_line(a) for a in alerts],
                 ["ALERT", "SEEN", "CAMERA", "DEPLOYMENT", "SUBJECT", "SCORE", "STATUS", "REVIEWERS"]))
    more = " (more: raise --limit or narrow the filters)" if cursor is not None else ""
    print(f"{len(alerts)} alert(s){more}", file=sys.stderr)
    return 0


def cmd_alerts_show(args: argparse.Namespace) -> int:
    """One alert with its review steps."""
    client = _client(args)
    if client is None:
        return EXIT_USAGE
    try:
        alert = client.get_alert(args.alert_id)
    except (ReviewApiError, ReviewApiUnreachable) as exc:
        return refused("alerts show", exc)
    finally:
        client.close()
    print(alert.model_dump_json(indent=2) if args.json else _describe(alert))
    return 0


def cmd_alerts_review(args: argparse.Namespace) -> int:
    """Make one review step on an alert (the API enforces the two-person rule)."""
    what = "alerts review"
    decision = "confirm" if args.confirm else "reject"
    reason = args.reason.strip() if args.reason is not None else None
    if decision == "reject" and not reason:
        return fail(what, "--reason is required with --reject (why the alert is wrong is recorded and audited)",
                    code=EXIT_USAGE)
    try:
        ReviewCreate(decision=decision, reason=reason or None)
    except ValidationError as exc:
        return fail(what, "--reason: " + "; ".join(e["msg"] for e in exc.errors()), code=EXIT_USAGE)
    client = _client(args)
    if client is None:
        return EXIT_USAGE
    try:
        before = client.get_alert(args.alert_id)
        # The step read goes with the review: one made in between by someone else is a 409. A
        # final alert has no next step; the API says why it is not reviewed again.
        body = ReviewCreate(decision=decision, reason=reason or None, step=before.next_step)
        after = client.review(args.alert_id, body)
    except ReviewApiError as exc:
        meaning = _MEANING.get(exc.status_code)
        return refused(what, exc, message=f"{meaning}: {exc.message}" if meaning else None)
    except ReviewApiUnreachable as exc:
        return refused(what, exc)
    finally:
        client.close()
    step = after.reviews[-1]
    outcome = {
        "awaiting_second": "awaiting a second review by a different reviewer",
        "confirmed": "confirmed by two reviewers: actionable",
        "rejected": "rejected",
    }.get(after.status, after.status)
    print(f"alert {after.alert_id}: step {step.step} {step.decision} by {step.reviewer}; now {outcome}",
          file=sys.stderr)
    print(after.model_dump_json(indent=2) if args.json else _describe(after))
    return 0


def add_alerts_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """``openlfr alerts ...``."""
    alerts = sub.add_parser("alerts", help="alerts and two-person review through the alert service "
                                           "(token in $OPENLFR_TOKEN)")
    commands = alerts.add_subparsers(dest="alerts_command", required=True)
    listing = commands.add_parser(
        "list", help="alerts, newest first, with their review state",
        description=f"Alerts, newest first by capture time. Times (--since, --until): {TIME_FORMS}. Printed in "
                    "this machine's local time.")
    listing.add_argument("--status", choices=["pending", "awaiting_second", "confirmed", "rejected"],
                         help="only alerts in this state (awaiting_second: those needing a second reviewer)")
    listing.add_argument("--needs-my-review", dest="needs_my_review", action="store_true",
                         help="only alerts you may review now: pending ones, and those awaiting a second review "
                              "whose first review someone else made")
    listing.add_argument("--deployment", help="only this deployment's alerts")
    listing.add_argument("--camera", help="only this camera's alerts")
    listing.add_argument("--since", help="seen at or after this time, e.g. now-2h or 2027-05-01T18:00+01:00")
    listing.add_argument("--until", help="seen before this time")
    listing.add_argument("--limit", type=int, default=50, help="most alerts printed")
    show = commands.add_parser("show", help="one alert with its review steps")
    show.add_argument("alert_id", help=_ALERT_ID_HELP)
    review = commands.add_parser(
        "review", help="confirm or reject an alert (two-person rule: a confirm needs two different reviewers)",
        description="Make the next review step on an alert. A first confirm makes it awaiting_second; a second "
                    "confirm by a different reviewer makes it confirmed; a reject (needs --reason) makes it "
                    "rejected at either step. The step read is sent with the review, so an alert someone else "
                    "reviewed in between is refused (409), not reviewed blind. Needs the reviewer role.")
    review.add_argument("alert_id", help=_ALERT_ID_HELP)
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--confirm", action="store_true", help="the face is the subject's")
    decision.add_argument("--reject", action="store_true", help="the face is not the subject's (needs --reason)")
    review.add_argument("--reason", help=f"why (required with --reject; a note with --confirm; at most "
                                         f"{MAX_REASON_CHARS} characters)")
    for p, func in ((listing, cmd_alerts_list), (show, cmd_alerts_show), (review, cmd_alerts_review)):
        p.add_argument("--api", default=ALERT_API, help="the alert service's base URL (it serves the review API)")
        p.add_argument("--json", action="store_true", help="print the API's objects as JSON")
        p.set_defaults(func=func)
