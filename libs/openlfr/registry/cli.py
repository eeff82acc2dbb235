"""``openlfr watchlist ...`` and ``openlfr subject ...``: the registry's watchlists and subjects
through the match service's API (token in ``$OPENLFR_TOKEN``).

  watchlist enroll DIR|--csv F   enrol photos (all or nothing per subject: see ``bulk.py``)
  watchlist list | show ID       the watchlists; one with its subjects
  watchlist suspend | resume ID  the whole watchlist out of (back into) search
  watchlist delete ID --yes      a watchlist with its subjects, images and vectors
  subject list WATCHLIST | show ID | suspend ID | resume ID | delete ID --yes

Lists print a table (``--json``: the API's objects). Exit status: 0 done, 1 the API refused
(printed in words) or a part of a watchlist-wide change failed, 2 a bad flag or no token.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openlfr.cli_support import EXIT_USAGE, MATCH_API, fail, folder_layout_problem, refused, token
from openlfr.registry.client import RegistryClient
from openlfr.registry.core import MAX_PAGE
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable
from openlfr.registry.models import CATEGORIES, SubjectPublic, SubjectStatus, SubjectUpdate, WatchlistPublic

_ERRORS = (RegistryApiError, RegistryUnreachable)


def client_for(args: argparse.Namespace) -> RegistryClient | None:
    """A registry client of ``--api`` and ``$OPENLFR_TOKEN``; None (after saying why) without a token."""
    value = token()
    return None if value is None else RegistryClient(args.api, value)


def _run(args: argparse.Namespace, what: str, call: Callable[[RegistryClient], int]) -> int:
    """``call`` with a client; a refusal or an unreachable API printed in words (exit 1)."""
    client = client_for(args)
    if client is None:
        return EXIT_USAGE
    try:
        return call(client)
    except _ERRORS as exc:
        return refused(what, exc)
    finally:
        client.close()


def _all_subjects(client: RegistryClient, watchlist_id: str) -> Iterator[SubjectPublic]:
    offset = 0
    while True:
        page = client.list_subjects(watchlist_id, limit=MAX_PAGE, offset=offset)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def _all_watchlists(client: RegistryClient) -> Iterator[WatchlistPublic]:
    offset = 0
    while True:
        page = client.list_watchlists(limit=MAX_PAGE, offset=offset)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _day(when: datetime) -> str:
    return when.astimezone().isoformat(timespec="minutes")


def _subject_rows(subjects: list[SubjectPublic]) -> str:
    rows = [[s.id, s.display_name, s.category, "expired" if s.expired else s.status, str(len(s.images)),
             _day(s.expires_at)] for s in subjects]
    return _table(rows, ["SUBJECT", "NAME", "CATEGORY", "STATUS", "IMAGES", "EXPIRES"])


def _dump(value: Any) -> None:
    print(json.dumps(value, indent=2))


# -- watchlists ------------------------------------------------------------------------------


def cmd_watchlist_enroll(args: argparse.Namespace) -> int:
    """Enrol a folder tree or a CSV of photos on a watchlist (created when missing)."""
    from openlfr.registry.bulk import SubjectDefaults, bulk_enrol

    what = "watchlist enroll"
    if (args.folder is None) == (args.csv is None):
        return fail(what, "give a folder or --csv, not both", code=EXIT_USAGE)
    if args.folder is not None and not args.folder.is_dir():
        return fail(what, f"{args.folder} is not a directory", code=EXIT_USAGE)
    if args.folder is not None and (layout := folder_layout_problem(args.folder)) is not None:
        return fail(what, f"{args.folder}: {layout}", code=EXIT_USAGE)  # before any call: nothing created
    if not 0 < args.expires_days:
        return fail(what, f"--expires-days: {args.expires_days:g} must be more than 0", code=EXIT_USAGE)

    def enrol(client: RegistryClient) -> int:
        defaults = SubjectDefaults(
            category=args.category, reason=args.reason, legal_basis=args.legal_basis,
            expires_at=datetime.now(UTC) + timedelta(days=args.expires_days), source=args.source_note,
        )
        try:
            report = bulk_enrol(client, watchlist_id=args.watchlist_id, defaults=defaults, folder=args.folder,
                                csv_path=args.csv, progress=not args.no_progress,
                                watchlist_name=args.watchlist_name or args.watchlist_id)
        except ValueError as exc:  # the CSV cannot be read or lacks columns: before any change
            return fail(what, f"{'--csv' if args.csv is not None else 'folder'}: {exc}", code=EXIT_USAGE)
        if report.watchlist_created:
            print(f"watchlist {args.watchlist_id} created", file=sys.stderr)
        print(report.summary())
        return 0 if report.images_enrolled else 1

    return _run(args, what, enrol)


def _watchlist_state(watchlist: WatchlistPublic) -> str:
    """``suspended`` (by whom) for a suspended watchlist, else its embedding status."""
    return f"suspended by {watchlist.suspended_by}" if watchlist.suspended else watchlist.status


def cmd_watchlist_list(args: argparse.Namespace) -> int:
    def call(client: RegistryClient) -> int:
        items = list(_all_watchlists(client))
        if args.json:
            _dump([w.model_dump(mode="json") for w in items])
            return 0
        rows = [[w.id, w.name, str(w.subject_count), _watchlist_state(w), w.created_by, _day(w.created_at)]
                for w in items]
        print(_table(rows, ["WATCHLIST", "NAME", "SUBJECTS", "STATUS", "CREATED_BY", "CREATED"]))
        return 0

    return _run(args, "watchlist list", call)


def cmd_watchlist_show(args: argparse.Namespace) -> int:
    def call(client: RegistryClient) -> int:
        watchlist = client.get_watchlist(args.watchlist_id)
        subjects = list(_all_subjects(client, args.watchlist_id))
        if args.json:
            _dump({"watchlist": watchlist.model_dump(mode="json"),
                   "subjects": [s.model_dump(mode="json") for s in subjects]})
            return 0
        print(f"watchlist {watchlist.id}: {watchlist.name} ({watchlist.subject_count} subjects, "
              f"{_watchlist_state(watchlist)}; "
              f"created by {watchlist.created_by} {_day(watchlist.created_at)})")
        if watchlist.description:
            print(watchlist.description)
        if subjects:
            print(_subject_rows(subjects))
        return 0

    return _run(args, "watchlist show", call)


def _set_watchlist_status(args: argparse.Namespace, status: SubjectStatus) -> int:
    """Suspend a whole watchlist on the registry (no deployment searches it) or resume it; its
    subjects keep their own status."""
    suspend = status == "suspended"
    what = f"watchlist {'suspend' if suspend else 'resume'}"

    def call(client: RegistryClient) -> int:
        before = client.get_watchlist(args.watchlist_id)  # 404 in words before anything
        after = client.suspend_watchlist(args.watchlist_id) if suspend else client.resume_watchlist(args.watchlist_id)
        if before.suspended == after.suspended:
            print(f"watchlist {after.id}: already {'suspended' if suspend else 'active'}; nothing changed")
        elif suspend:
            print(f"watchlist {after.id} suspended: no deployment searches its {after.subject_count} subject(s)")
        else:
            print(f"watchlist {after.id} resumed: its subjects are searched again (each as its own status says)")
        return 0

    return _run(args, what, call)


def cmd_watchlist_suspend(args: argparse.Namespace) -> int:
    return _set_watchlist_status(args, "suspended")


def cmd_watchlist_resume(args: argparse.Namespace) -> int:
    return _set_watchlist_status(args, "active")


def cmd_watchlist_delete(args: argparse.Namespace) -> int:
    what = "watchlist delete"
    if not args.yes:
        return fail(what, f"deleting watchlist {args.watchlist_id} deletes its subjects, their images and vectors "
                          "for good; add --yes to do it", code=EXIT_USAGE)

    def call(client: RegistryClient) -> int:
        count = client.get_watchlist(args.watchlist_id).subject_count
        client.delete_watchlist(args.watchlist_id)
        print(f"watchlist {args.watchlist_id} deleted with its {count} subject(s)")
        return 0

    return _run(args, what, call)


# -- subjects --------------------------------------------------------------------------------


def cmd_subject_list(args: argparse.Namespace) -> int:
    def call(client: RegistryClient) -> int:
        subjects = list(_all_subjects(client, args.watchlist_id))
        if args.json:
            _dump([s.model_dump(mode="json") for s in subjects])
        else:
            print(_subject_rows(subjects))
        return 0

    return _run(args, "subject list", call)


def cmd_subject_show(args: argparse.Namespace) -> int:
    def call(client: RegistryClient) -> int:
        s = client.get_subject(args.subject_id)
        if args.json:
            _dump(s.model_dump(mode="json"))
            return 0
        state = "expired" if s.expired else s.status
        print(f"subject {s.id}: {s.display_name} on watchlist {s.watchlist_id}, {s.category}, {state}")
        print(f"  reason: {s.reason}\n  legal basis: {s.legal_basis}\n  expires: {_day(s.expires_at)}"
              f"\n  added by: {s.added_by} {_day(s.created_at)}")
        for image in s.images:
            print(f"  image {image.id}: quality {image.quality.score:.2f}, added by {image.added_by} "
                  f"{_day(image.added_at)}, source: {image.source}")
        if not s.images:
            print("  no image: not searched for until one is enrolled")
        return 0

    return _run(args, "subject show", call)


def _set_subject_status(args: argparse.Namespace, status: SubjectStatus) -> int:
    what = f"subject {'suspend' if status == 'suspended' else 'resume'}"

    def call(client: RegistryClient) -> int:
        s = client.update_subject(args.subject_id, SubjectUpdate(status=status))
        effect = "no longer searched for" if status == "suspended" else (
            "searched for again" if s.images and not s.expired else
            "active, but not searched for: " + ("it has expired" if s.expired else "it has no image"))
        print(f"subject {s.id} {status}: {effect}")
        return 0

    return _run(args, what, call)


def cmd_subject_suspend(args: argparse.Namespace) -> int:
    return _set_subject_status(args, "suspended")


def cmd_subject_resume(args: argparse.Namespace) -> int:
    return _set_subject_status(args, "active")


def cmd_subject_delete(args: argparse.Namespace) -> int:
    what = "subject delete"
    if not args.yes:
        return fail(what, f"deleting subject {args.subject_id} deletes its images and vectors for good; add --yes "
                          "to do it", code=EXIT_USAGE)

    def call(client: RegistryClient) -> int:
        client.delete_subject(args.subject_id)
        print(f"subject {args.subject_id} deleted with its images and vectors")
        return 0

    return _run(args, what, call)


# -- parsers ---------------------------------------------------------------------------------


def _api(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=MATCH_API, help="the match service's base URL (it serves the registry)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's objects as JSON instead of a table")


def add_watchlist_parser(sub: Any) -> Any:  # noqa: ANN401 - argparse's private subparsers action
    """``openlfr watchlist ...``; returns its subcommands (``reembed`` is added beside them)."""
    watchlist = sub.add_parser("watchlist", help="watchlists through the registry API (token in $OPENLFR_TOKEN)")
    commands = watchlist.add_subparsers(dest="watchlist_command", required=True)
    enroll = commands.add_parser(
        "enroll", help="enrol photos through the registry API (all or nothing per subject)",
        description="Enrol a folder (one folder of photos per subject) or a CSV (path,subject_id[,display_name,"
                    "category,reason,legal_basis,expires_at,source]) on a watchlist through the match service's "
                    "registry API. Every image is checked (one face, size, sharpness); refusals are listed. A "
                    "subject this run creates whose every photo is refused is deleted again, and so is a "
                    "watchlist it creates when nothing is enrolled; the report says so. Exit 1 when nothing was "
                    "enrolled.")
    enroll.add_argument("folder", type=Path, nargs="?", help="a folder with one sub-folder of photos per subject")
    enroll.add_argument("--csv", type=Path, help="a CSV of images instead of a folder")
    _api(enroll)
    enroll.add_argument("--watchlist-id", dest="watchlist_id", default="default",
                        help="the watchlist; created when missing")
    enroll.add_argument("--watchlist-name", dest="watchlist_name",
                        help="the name of a watchlist this run creates (default: its id)")
    enroll.add_argument("--category", default="wanted", choices=CATEGORIES,
                        help="why the subjects are listed, where a CSV row gives none")
    enroll.add_argument("--reason", required=True, help="why these people are on the watchlist")
    enroll.add_argument("--legal-basis", dest="legal_basis", required=True, help="the law or warrant it rests on")
    enroll.add_argument("--expires-days", dest="expires_days", type=float, default=30.0,
                        help="subjects come off the list after this many days")
    enroll.add_argument("--source", dest="source_note", required=True, help="where the photos came from")
    enroll.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    enroll.set_defaults(func=cmd_watchlist_enroll)

    listing = commands.add_parser("list", help="every watchlist with its subject count")
    show = commands.add_parser("show", help="one watchlist and its subjects")
    suspend = commands.add_parser(
        "suspend", help="suspend a whole watchlist (no deployment searches it)",
        description="Suspends the watchlist on the registry (audited): no deployment searches its subjects until "
                    "it is resumed. The subjects keep their own status.")
    resume = commands.add_parser(
        "resume", help="resume a suspended watchlist",
        description="Resumes the watchlist (audited): its subjects are searched again, each as its own status "
                    "says (a subject suspended on its own stays suspended).")
    delete = commands.add_parser(
        "delete", help="delete a watchlist with its subjects, images and vectors (needs --yes)",
        description="Refused (409) while an active deployment searches the watchlist: end the deployment first.")
    for p, func in ((listing, cmd_watchlist_list), (show, cmd_watchlist_show), (suspend, cmd_watchlist_suspend),
                    (resume, cmd_watchlist_resume), (delete, cmd_watchlist_delete)):
        if p is not listing:
            p.add_argument("watchlist_id", help="the watchlist's id")
        _api(p)
        p.set_defaults(func=func)
    _json(listing)
    _json(show)
    delete.add_argument("--yes", action="store_true", help="confirm: the deletion cannot be undone")
    return commands


def add_subject_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """``openlfr subject ...``."""
    subject = sub.add_parser("subject", help="subjects through the registry API (token in $OPENLFR_TOKEN)")
    commands = subject.add_subparsers(dest="subject_command", required=True)
    listing = commands.add_parser("list", help="the subjects of a watchlist")
    listing.add_argument("watchlist_id", help="the watchlist's id")
    show = commands.add_parser("show", help="one subject: grounds, expiry, images")
    suspend = commands.add_parser("suspend", help="stop searching for a subject (kept; resume undoes it)")
    resume = commands.add_parser("resume", help="search for a suspended subject again")
    delete = commands.add_parser("delete", help="delete a subject with its images and vectors (needs --yes)")
    for p in (show, suspend, resume, delete):
        p.add_argument("subject_id", help="the subject's id")
    for p, func in ((listing, cmd_subject_list), (show, cmd_subject_show), (suspend, cmd_subject_suspend),
                    (resume, cmd_subject_resume), (delete, cmd_subject_delete)):
        _api(p)
        p.set_defaults(func=func)
    _json(listing)
    _json(show)
    delete.add_argument("--yes", action="store_true", help="confirm: the deletion cannot be undone")
