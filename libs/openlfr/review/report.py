"""The per-deployment report a force publishes: what ran, where, when, and how often it was wrong.

:func:`build_report` joins the registry's deployment record (``GET /v1/deployments/{id}``) with
the review store's tallies and, where the match service serves it, the deployment's look-alike
watch (``GET /v1/deployments/{id}/look-alikes``: per subject, the tracks that came within a
margin of its threshold without matching, since the match process started; counts only);
:func:`render_markdown` writes it for people. Every field the registry did not give reads
``"unknown"`` (the report never guesses), and a report built without the registry says that
the deployment's details are unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from openlfr.review.store import Tallies

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"

#: The keys a registry may use for the authorised window, in order of preference.
_START_KEYS = ("start_at", "start_ts", "starts_ts", "starts_at", "start", "valid_from")
_END_KEYS = ("end_at", "end_ts", "ends_ts", "ends_at", "end", "valid_until", "expires_ts")


def iso_utc(ts: float) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_text(value: object) -> str:
    if isinstance(value, bool):
        return UNKNOWN
    if isinstance(value, (int, float)):
        try:
            return iso_utc(float(value))
        except (OverflowError, OSError, ValueError):
            return UNKNOWN
    if isinstance(value, str) and value.strip():
        return value.strip()
    return UNKNOWN


def _window_end(deployment: Mapping[str, Any]) -> str:
    for key in _END_KEYS:
        if key in deployment:
            value = deployment[key]
            return "open (no end set)" if value is None else _time_text(value)
    return UNKNOWN


def _window_start(deployment: Mapping[str, Any]) -> str:
    for key in _START_KEYS:
        if key in deployment and deployment[key] is not None:
            return _time_text(deployment[key])
    return UNKNOWN


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return UNKNOWN


def _number(value: object) -> float | str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return UNKNOWN


def _count(value: object) -> int | str:
    """A count from an int, a list (its length) or a mapping of counts (their sum)."""
    if isinstance(value, bool):
        return UNKNOWN
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return len(value)
    counts = list(value.values()) if isinstance(value, Mapping) else []
    if counts and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        return sum(counts)
    return UNKNOWN


def _ids(value: object) -> list[str] | str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return UNKNOWN


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary_line(tallies: Tallies) -> str:
    """The figures in plain words ("Of 42 alerts adjudicated, 34 were wrong ...")."""
    waiting = tallies.unadjudicated
    waiting_text = f"; {_plural(waiting, 'alert awaits', 'alerts await')} review" if waiting else ""
    if not tallies.adjudicated:
        if not tallies.alerts:
            return "No alert was raised."
        return f"No alert has been adjudicated yet{waiting_text}."
    wrong = tallies.rejected
    share = round(100 * wrong / tallies.adjudicated)
    return (
        f"Of {_plural(tallies.adjudicated, 'alert', 'alerts')} adjudicated, "
        f"{wrong} {'was' if wrong == 1 else 'were'} wrong ({share}%) and "
        f"{tallies.confirmed} {'was' if tallies.confirmed == 1 else 'were'} confirmed by two reviewers"
        f"{waiting_text}."
    )


#: Why the look-alike watch reads unknown when nobody said otherwise.
NOT_ASKED = "the registry was not asked"

#: Whence the look-alike counts come, and since when.
LOOK_ALIKES_SOURCE = "from the match service, counted since its match process started"


def _look_alike_subjects(value: object) -> list[dict[str, Any]] | None:
    """The subjects of a look-alike answer, or None where any is not as expected."""
    if not isinstance(value, (list, tuple)):
        return None
    subjects = []
    for entry in value:
        if not isinstance(entry, Mapping):
            return None
        subject_id, n = entry.get("subject_id"), entry.get("near_miss_tracks")
        attracts = entry.get("attracts_strangers")
        if not (isinstance(subject_id, str) and subject_id and isinstance(n, int) and not isinstance(n, bool)
                and n >= 1 and isinstance(attracts, bool)):
            return None
        subjects.append({"subject_id": subject_id, "near_miss_tracks": n, "attracts_strangers": attracts})
    return subjects


def look_alike_section(answer: Mapping[str, Any] | None, deployment_id: str, *,
                       unknown_reason: str = NOT_ASKED) -> dict[str, Any]:
    """The report's look-alike watch from the match service's answer.

    Args:
        answer: ``GET /v1/deployments/{id}/look-alikes`` (``LookAlikes``), or None when it was
            not asked or not served.
        deployment_id: the report's deployment (an answer naming another is not used).
        unknown_reason: why there is no answer (read only when ``answer`` is None).

    Returns:
        ``watch`` (where the counts come from, or ``"unknown (reason)"``), the margins
        (``score_margin`` raw, ``z_margin`` normalised), ``min_tracks``,
        ``subjects_with_near_misses`` and ``attracting_strangers`` (each ``{subject_id,
        near_miss_tracks}``, most first); every field ``"unknown"`` without a usable answer.
    """
    section: dict[str, Any] = {
        "watch": f"{UNKNOWN} ({unknown_reason})",
        "score_margin": UNKNOWN,
        "z_margin": UNKNOWN,
        "min_tracks": UNKNOWN,
        "subjects_with_near_misses": UNKNOWN,
        "attracting_strangers": UNKNOWN,
    }
    if answer is None:
        return section
    subjects = _look_alike_subjects(answer.get("subjects"))
    named = answer.get("deployment_id")
    if named is not None and named != deployment_id:
        section["watch"] = f"{UNKNOWN} (the match service answered for deployment {named!r})"
        logger.warning('report: look-alikes of another deployment asked="%s" answered="%s"', deployment_id, named)
        return section
    if subjects is None:
        section["watch"] = f"{UNKNOWN} (the match service's answer is not as expected)"
        logger.warning('report: look-alikes answer not as expected deployment_id="%s"', deployment_id)
        return section
    attracting = sorted((s for s in subjects if s["attracts_strangers"]),
                        key=lambda s: (-s["near_miss_tracks"], s["subject_id"]))
    min_tracks = answer.get("min_tracks")
    section.update(
        watch=LOOK_ALIKES_SOURCE,
        score_margin=_number(answer.get("score_margin")),
        z_margin=_number(answer.get("z_margin")),
        min_tracks=min_tracks if isinstance(min_tracks, int) and not isinstance(min_tracks, bool) else UNKNOWN,
        subjects_with_near_misses=len(subjects),
        attracting_strangers=[{"subject_id": s["subject_id"], "near_miss_tracks": s["near_miss_tracks"]}
                              for s in attracting],
    )
    return section


def build_report(
    deployment: Mapping[str, Any] | None,
    tallies: Tallies,
    *,
    generated_ts: float,
    look_alikes: Mapping[str, Any] | None = None,
    look_alikes_unknown: str = NOT_ASKED,
) -> dict[str, Any]:
    """The report of one deployment.

    Args:
        deployment: the registry's record (``GET /v1/deployments/{id}``), or None when the
            registry was not asked; missing keys read ``"unknown"``.
        tallies: the store's counts for the deployment (zeros if it has had no alert).
        generated_ts: when the report is made (epoch seconds).
        look_alikes: the match service's look-alike watch of the deployment
            (``GET /v1/deployments/{id}/look-alikes``), or None when it was not asked, not
            served or could not be read.
        look_alikes_unknown: why ``look_alikes`` is None ("the registry does not serve it", the
            registry's error); read only then.

    Returns:
        A JSON-ready dict: the deployment's purpose, authority, cameras, window, threshold,
        watchlists and their size at the snapshot, model version, faces processed and tracks,
        then alerts, adjudicated, confirmed, rejected, pending, awaiting_second, precision,
        false_alert_share, a plain-words ``summary`` and ``look_alikes``
        (:func:`look_alike_section`).
    """
    known = deployment is not None
    d: Mapping[str, Any] = deployment or {}
    snapshot = _mapping(d.get("snapshot"))
    stats = _mapping(d.get("stats"))
    point = _mapping(d.get("operating_point"))
    cameras = _ids(d.get("camera_ids", d.get("cameras")))
    watchlists = _ids(d.get("watchlist_ids", d.get("watchlists")))
    report: dict[str, Any] = {
        "deployment_id": _text(d.get("id", d.get("deployment_id"))) if known else tallies.deployment_id,
        "generated_ts": generated_ts,
        "generated_at": iso_utc(generated_ts),
        "deployment_details": "from the registry" if known else "unknown (the registry was not asked)",
        "purpose": _text(d.get("purpose")),
        "authorised_by": _text(d.get("authorised_by")),
        "status": _text(d.get("status")),
        "cameras": cameras,
        "window": {"start": _window_start(d), "end": _window_end(d)},
        "threshold": _number(d.get("threshold")),
        "threshold_mode": _text(d.get("threshold_mode")),
        "target_fpir": _number(point.get("target_fpir")),
        "normalised_threshold": _number(point.get("normalised_threshold")),
        "expected_false_alerts_per_10000": _number(point.get("expected_false_alerts_per_10000")),
        "expected_miss_rate": _number(point.get("expected_fnmr")),
        "cohort": _text(point.get("cohort")),
        "watchlist_ids": watchlists,
        "watchlist_size": _count(snapshot.get("active_subjects", snapshot.get("subjects"))),
        "reference_images": _count(snapshot.get("reference_images")),
        "snapshot_at": _time_text(snapshot["snapshot_ts"]) if "snapshot_ts" in snapshot else UNKNOWN,
        "snapshot_fingerprint": _text(snapshot.get("fingerprint")),
        "model_version": _text(d.get("model_version")),
        "faces_processed": _count(stats.get("faces")),
        "tracks": _count(stats.get("tracks")),
        "alerts": tallies.alerts,
        "adjudicated": tallies.adjudicated,
        "confirmed": tallies.confirmed,
        "rejected": tallies.rejected,
        "pending": tallies.unadjudicated,
        "awaiting_second": tallies.awaiting_second,
        "precision": tallies.precision,
        "false_alert_share": tallies.false_alert_share,
        "alerts_per_1000_faces": UNKNOWN,
        "summary": summary_line(tallies),
    }
    if report["deployment_id"] == UNKNOWN:
        report["deployment_id"] = tallies.deployment_id
    faces = report["faces_processed"]
    if isinstance(faces, int) and faces > 0:
        report["alerts_per_1000_faces"] = round(1000 * tallies.alerts / faces, 3)
    report["look_alikes"] = look_alike_section(look_alikes, report["deployment_id"], unknown_reason=look_alikes_unknown)
    return report


def _percent(value: object) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, float) else "none adjudicated yet"


def _cell(value: object) -> str:
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value) if value else "none"
    elif value is None:
        text = UNKNOWN
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _margins(section: Mapping[str, Any]) -> str:
    score, z = section.get("score_margin", UNKNOWN), section.get("z_margin", UNKNOWN)
    return (f"{score} below the subject's score threshold (and, under per-subject thresholds, "
            f"{z} below its normalised one)")


def _attracting(value: object) -> str:
    if not isinstance(value, list):
        return UNKNOWN
    if not value:
        return "none"
    return ", ".join(
        f"{s.get('subject_id')} ({s.get('near_miss_tracks')} tracks)" for s in value if isinstance(s, Mapping)
    )


def _look_alike_lines(section: Mapping[str, Any]) -> list[str]:
    """The look-alike watch section of the Markdown page."""
    watch = section.get("watch", f"{UNKNOWN} ({NOT_ASKED})")
    rows: list[tuple[str, object]] = [("Look-alike watch", watch)]
    if watch == LOOK_ALIKES_SOURCE:
        rows += [
            ("Near-miss margin", _margins(section)),
            ("Subjects with near-miss tracks", section.get("subjects_with_near_misses")),
            ("Near-miss tracks at which a subject attracts strangers", section.get("min_tracks")),
            ("Subjects that attract strangers (near-miss tracks)", _attracting(section.get("attracting_strangers"))),
        ]
    return [
        "## Look-alike watch",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {_cell(value)} |" for name, value in rows),
        "",
        "A near miss is the track of a passer-by who raised no alert but whose best score came within "
        "the margin of a watchlist subject's threshold. Only these counts are kept, per subject and "
        "since the match process started: no image, face or template of a passer-by. A subject that "
        "keeps drawing strangers close to its threshold looks like many of the people passing, so "
        "strangers are likelier to be wrongly alerted on it: its reference images should be reviewed.",
        "",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown page for publication."""
    window = _mapping(report.get("window"))
    rows = [
        ("Purpose", report.get("purpose")),
        ("Authorised by", report.get("authorised_by")),
        ("Status", report.get("status")),
        ("Cameras", report.get("cameras")),
        ("Window", f"{window.get('start', UNKNOWN)} to {window.get('end', UNKNOWN)}"),
        ("Threshold mode", report.get("threshold_mode")),
        ("Threshold (score 0..1; under per-subject thresholds, the floor)", report.get("threshold")),
        ("Target false alerts per stranger (FPIR)", report.get("target_fpir")),
        ("Per-subject (normalised) threshold", report.get("normalised_threshold")),
        ("Expected false alerts per 10,000 passers-by", report.get("expected_false_alerts_per_10000")),
        ("Expected miss rate (from the cohort)", report.get("expected_miss_rate")),
        ("Cohort the thresholds were calibrated on", report.get("cohort")),
        ("Watchlists", report.get("watchlist_ids")),
        ("Watchlist size (subjects at the snapshot)", report.get("watchlist_size")),
        ("Snapshot taken", report.get("snapshot_at")),
        ("Model version", report.get("model_version")),
        ("Faces processed", report.get("faces_processed")),
        ("Tracks", report.get("tracks")),
    ]
    figures = [
        ("Alerts", report.get("alerts")),
        ("Alerts per 1000 faces", report.get("alerts_per_1000_faces")),
        ("Adjudicated", report.get("adjudicated")),
        ("Confirmed (by two reviewers)", report.get("confirmed")),
        ("Rejected (wrong)", report.get("rejected")),
        ("Not yet adjudicated", report.get("pending")),
        ("of which awaiting the second review", report.get("awaiting_second")),
        ("Precision (confirmed / adjudicated)", _percent(report.get("precision"))),
        ("False alerts (rejected / adjudicated)", _percent(report.get("false_alert_share"))),
    ]
    lines = [
        f"# Live facial recognition deployment {_cell(report.get('deployment_id'))}",
        "",
        f"**{report.get('summary', '')}**",
        "",
        f"Generated {report.get('generated_at', UNKNOWN)}. Deployment details: "
        f"{report.get('deployment_details', UNKNOWN)}.",
        "",
        "## Deployment",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {_cell(value)} |" for name, value in rows),
        "",
        "## Alerts and their review",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {_cell(value)} |" for name, value in figures),
        "",
        "Every alert is reviewed by people before anyone acts on it: an alert is confirmed only when "
        "two different reviewers confirm it, and rejected when either rejects it with a reason.",
        "",
        *_look_alike_lines(_mapping(report.get("look_alikes"))),
    ]
    return "\n".join(lines)
