"""``openlfr watchlist reembed``: start moving the registry's references to the running
embedder (``POST /v1/reembed``) and follow it with a progress bar until it ends.

Ctrl-C stops waiting, not the job (it runs in the match service); ``GET /v1/reembed`` or the
command again with ``--wait`` only (``--attach``) follows it later.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from tqdm import tqdm

from openlfr.registry.client import RegistryClient
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable
from openlfr.registry.models import ReembedStatus

#: The environment variable holding the caller's API token (as every registry command).
TOKEN_ENV = "OPENLFR_TOKEN"

_WHAT = "watchlist reembed"

#: What an error status means for this command.
_MEANING = {
    401: f"the token in ${TOKEN_ENV} is not known to the match service (OPENLFR_API_TOKENS)",
    403: "the token lacks the watchlist_admin role, which re-embedding needs",
    409: "a re-embedding is already running; follow it with --attach",
}


def add_reembed_parser(watchlist: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Add ``reembed`` to the ``watchlist`` subcommands."""
    reembed = watchlist.add_parser(
        "reembed", help="move every reference to the running embedder (token in $OPENLFR_TOKEN)",
        description="After changing OPENLFR_EMBEDDER (and OPENLFR_REGISTRY_COHORT) and restarting, re-embed the "
                    "registry's references into the new embedder's store from the kept chips. Deployments over "
                    "watchlists awaiting it do not match until it completes. Ctrl-C stops waiting, not the job.")
    reembed.add_argument("--api", default="http://127.0.0.1:8080", help="the match service's base URL")
    reembed.add_argument("--wait", action="store_true", help="show progress until it ends and print the report")
    reembed.add_argument("--attach", action="store_true",
                         help="do not start one: follow the running (or show the last) re-embedding")
    reembed.add_argument("--poll-s", dest="poll_s", type=float, default=1.0, help="seconds between progress polls")
    reembed.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    reembed.set_defaults(func=cmd_watchlist_reembed)


def report_lines(status: ReembedStatus) -> list[str]:
    """The re-embedding's report as lines of text."""
    lines = [
        f"re-embedding into {status.model_version}: {status.state} "
        f"({status.done}/{status.total} references; {len(status.subjects_moved)} subjects moved, "
        f"{len(status.failed)} references failed, {len(status.lost_subjects)} subjects lost)"
    ]
    lines += [f"  failed: subject {f.subject_id} reference {f.reference_image_id}: {f.reason}" for f in status.failed]
    lines += [f"  lost (no reference could be moved, not searchable): subject {s}" for s in status.lost_subjects]
    if status.error:
        lines.append(f"  error: {status.error}")
    if status.watchlists_needing:
        waiting = ", ".join(f"{w} ({n} subjects)" for w, n in status.watchlists_needing.items())
        lines.append(f"  still awaiting re-embedding (their deployments do not match): {waiting}")
    return lines


def _follow(client: RegistryClient, status: ReembedStatus, *, poll_s: float, progress: bool) -> ReembedStatus:
    with tqdm(total=status.total, initial=status.done, desc="re-embedding", unit="ref", file=sys.stderr,
              disable=not progress) as bar:
        while status.state == "running":
            time.sleep(poll_s)
            status = client.reembed_status()
            bar.total = status.total
            bar.update(status.done - bar.n)
    return status


def cmd_watchlist_reembed(args: argparse.Namespace) -> int:
    """Start (or follow) the re-embedding; 0 when it completed with nothing failed."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"openlfr {_WHAT}: set {TOKEN_ENV} to an API token (tokens are never taken as arguments)",
              file=sys.stderr)
        return 2
    if not args.poll_s > 0:
        print(f"openlfr {_WHAT}: --poll-s must be > 0, got {args.poll_s}", file=sys.stderr)
        return 2
    with RegistryClient(args.api, token) as client:
        try:
            status = client.reembed_status() if args.attach else client.start_reembed()
            if not args.attach:
                print(f"re-embedding started by you: {status.total} references into {status.model_version}",
                      file=sys.stderr)
            if args.wait or args.attach:
                try:
                    status = _follow(client, status, poll_s=args.poll_s, progress=not args.no_progress)
                except KeyboardInterrupt:
                    print(f"openlfr {_WHAT}: stopped waiting; the re-embedding goes on in the match service "
                          f"(follow it with: openlfr watchlist reembed --attach --api {args.api})", file=sys.stderr)
                    return 130
        except RegistryApiError as exc:
            meaning = _MEANING.get(exc.status_code)
            print(f"openlfr {_WHAT}: refused (HTTP {exc.status_code}): "
                  f"{meaning + ': ' if meaning else ''}{exc.detail}", file=sys.stderr)
            return 1
        except RegistryUnreachable as exc:
            print(f"openlfr {_WHAT}: cannot reach the match service at {args.api}: {exc}", file=sys.stderr)
            return 1
    print("\n".join(report_lines(status)))
    if status.state == "running":
        return 0
    return 0 if status.state == "completed" and not status.failed and not status.lost_subjects else 1
