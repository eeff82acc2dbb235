"""What the ``openlfr`` subcommands share: the token variable, time forms, the help formatter and
how a refusal is printed.

Exit status of every API command: 0 done, 1 the API refused or could not be reached (the
refusal is printed in words), 2 a bad or missing flag or setting (named) before any call.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: The environment variable holding the caller's API token (never taken as an argument).
TOKEN_ENV = "OPENLFR_TOKEN"

EXIT_REFUSED = 1
EXIT_USAGE = 2

#: Default base URLs: the match service serves the registry, the alert service the review API.
MATCH_API = "http://127.0.0.1:8080"
ALERT_API = "http://127.0.0.1:8081"

#: The time forms every time flag takes, for help texts and errors.
TIME_FORMS = (
    "ISO 8601 (2027-05-01T18:00:00+01:00, 2027-05-01T17:00Z; without an offset: this machine's local time) "
    "or now, now+N or now-N with N in s, m, h or d (now+8h, now-30m, now+1.5d)"
)

_RELATIVE = re.compile(r"now(?:([+-])(\d+(?:\.\d+)?)([smhd]))?")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, flag: str) -> datetime:
    """A time flag's value as an aware datetime (see :data:`TIME_FORMS`).

    Raises:
        ValueError: not one of the forms (the message names ``flag`` and the forms).
    """
    value = text.strip()
    match = _RELATIVE.fullmatch(value)
    if match:
        delta = timedelta()
        if match.group(1):
            seconds = float(match.group(2)) * _UNIT_S[match.group(3)]
            delta = timedelta(seconds=seconds if match.group(1) == "+" else -seconds)
        return datetime.now(UTC) + delta
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: not an ISO 8601 time or now+-N; give {TIME_FORMS}") from exc
    return when if when.tzinfo is not None else when.astimezone()  # naive: local time


def iso_time(text: str, *, flag: str) -> str:
    """:func:`parse_time` as ISO 8601 text."""
    return parse_time(text, flag=flag).isoformat()


def local_time(ts: float) -> str:
    """Unix seconds as this machine's local time, to the second, with its offset."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def token() -> str | None:
    """The token in ``$OPENLFR_TOKEN``, or None after printing how to give one."""
    value = os.environ.get(TOKEN_ENV, "")
    if not value:
        print(f"openlfr: set {TOKEN_ENV} to an API token (tokens are never taken as arguments)", file=sys.stderr)
        return None
    return value


def folder_layout_problem(folder: Path) -> str | None:
    """Why a watchlist folder cannot enrol anyone by its layout alone, or None: it must hold a
    folder per subject (hidden ones left out) with at least one file in it. Checked before any
    model is loaded or any API call made; whether the photos are usable is the enrolment's to say.
    """
    from openlfr.watchlist.loader import subject_files

    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")]
    if any(e.is_dir() and subject_files(e) for e in entries):
        return None
    loose = [e.name for e in entries if e.is_file()]
    layout = ("give one folder per subject, named by the subject id, with their photos in it "
              f"({folder}/SUBJECT_ID/photo.jpg)")
    if loose:
        shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
        return f"{len(loose)} file(s) not in a subject's folder ({shown}); {layout}"
    return f"no subject folder with a photo in it; {layout}"


def fail(what: str, message: str, *, code: int = EXIT_REFUSED) -> int:
    """Print ``openlfr WHAT: MESSAGE`` on stderr; ``code``."""
    print(f"openlfr {what}: {message}", file=sys.stderr)
    return code


def refused(what: str, exc: Exception, *, message: str | None = None) -> int:
    """Print an API's refusal (an error with ``status_code`` and ``message``) or a failure to
    reach it in words; :data:`EXIT_REFUSED`. ``message`` replaces the API's own words."""
    status = getattr(exc, "status_code", None)
    if status is None:
        return fail(what, f"the API could not be reached: {exc}")
    if status == 401 and message is None:
        message = (f"the token in ${TOKEN_ENV} is not known to the service (its OPENLFR_API_TOKENS): "
                   f"{getattr(exc, 'message', exc)}")
    return fail(what, f"refused (HTTP {status}): {message if message is not None else getattr(exc, 'message', exc)}")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, adding ``(default: X)`` to an option's help where it has a default
    the help does not already name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def format_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand's parser :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # noqa: SLF001 - argparse exposes subparsers no other way
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                format_everywhere(sub)
