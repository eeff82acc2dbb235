"""The evaluation report: Markdown and a self-contained HTML page, both from ``metrics.json``.

The report is built once as a list of blocks (headings, paragraphs, tables, code, figures)
and rendered twice, so the two files always say the same. It reads only the metrics dict and
the plot files it names; the HTML page carries the plots as base64 data URIs and needs no
other file.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openlfr.evaluation.plots import data_uri
from openlfr.evaluation.run_common import rate_key

logger = logging.getLogger(__name__)

#: Problems (unreadable files, no face...) listed one by one in the report.
MAX_PROBLEMS_IN_REPORT = 40


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Para:
    text: str


@dataclass(frozen=True, slots=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Code:
    text: str
    language: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    file: str
    title: str


Block = Heading | Para | Bullets | Table | Code | Figure


# -- number formatting -----------------------------------------------------------------------


def pct(value: float | None, *, digits: int = 3) -> str:
    """A rate as a percentage with ``digits`` significant digits; ``n/a`` for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    x = float(value) * 100
    if x == 0:
        return "0%"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}%"


def ci(interval: Sequence[float | None] | None) -> str:
    """A confidence interval of rates as ``[a, b]``; empty when there is none."""
    if not interval or any(v is None for v in interval):
        return ""
    return f"[{pct(interval[0], digits=2)}, {pct(interval[1], digits=2)}]"


def num(value: float | None, digits: int = 4) -> str:
    """A score or other number, ``n/a`` for None."""
    if value is None:
        return "n/a"
    return f"{float(value):.{digits}f}"


def count(value: int | None) -> str:
    """A count with thousands separators."""
    return "n/a" if value is None else f"{int(value):,}"


def _method(point: Mapping[str, Any]) -> str:
    method = point.get("method", "")
    if method == "empirical":
        return "measured"
    if method == "unresolved":
        return "not resolvable on this data"
    return f"extrapolated ({method})"


# -- building the blocks ---------------------------------------------------------------------


def build_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    """The report's content from a ``metrics.json`` dict."""
    blocks: list[Block] = [Heading(1, "OpenLFR accuracy and fairness evaluation")]
    model = metrics.get("model", {})
    data = metrics.get("data", {})
    blocks.append(Para(
        f"Created {metrics.get('created_at', '?')} with model `{model.get('version') or '?'}` "
        f"(detector `{model.get('detector', '?')}`, landmarks `{model.get('landmarks', '?')}`; analysis key "
        f"`{model.get('analysis_key', '?')}`). Data fingerprint `{data.get('fingerprint', '?')}`."
    ))
    if metrics.get("command"):
        blocks.append(Code(metrics["command"], "sh"))
    blocks += _summary(metrics)
    blocks += _inputs(metrics)
    blocks += _verification(metrics)
    blocks += _identification(metrics)
    blocks += _sweep(metrics)
    blocks += _groups(metrics)
    blocks += _tracks(metrics)
    blocks += _calibration(metrics)
    blocks += _normalised(metrics)
    blocks += _method_section(metrics)
    return blocks


def _figure(metrics: Mapping[str, Any], name: str) -> list[Block]:
    plot = metrics.get("plots", {}).get(name)
    return [Figure(plot["file"], plot["title"])] if plot else []


def _summary(metrics: Mapping[str, Any]) -> list[Block]:
    inputs = metrics.get("inputs", {})
    verification = metrics.get("verification", {})
    identification = metrics.get("identification", {})
    calibration = metrics.get("calibration", {})
    rows: list[tuple[str, ...]] = [
        ("images used / listed", f"{count(inputs.get('used'))} / {count(inputs.get('listed'))}", ""),
        ("identities used", count(inputs.get("identities_used")),
         f"{count(inputs.get('identities_with_2plus_images'))} with 2+ images"),
    ]
    if verification.get("available"):
        rows.append(("1:1 EER", pct(verification["eer"]), f"threshold {num(verification['eer_threshold'])}"))
        for key, point in verification["fnmr_at_fmr"].items():
            rows.append((f"1:1 FNMR at FMR {key}", pct(point["fnmr"]),
                         f"threshold {num(point['threshold'])}, {_method(point)}"))
    if identification.get("available"):
        rows.append(("1:N gallery size", count(identification["gallery_size"]),
                     f"{count(identification['n_mated'])} mated, {count(identification['n_nonmated'])} non-mated searches"))
        rows.append(("1:N rank-1 identification rate", pct(identification["rank1"]), ""))
        for key, point in identification["fnir_at_fpir"].items():
            rows.append((f"1:N FNIR at FPIR {key}", pct(point["fnir"]),
                         f"threshold {num(point['threshold'])}, {_method(point)}"))
    if calibration.get("available"):
        rows.append((
            f"calibrated threshold (FPIR {rate_key(calibration['target_fpir'])}, watchlist {count(calibration['gallery_size'])})",
            num(calibration["threshold"]),
            f"expected TPIR {pct(calibration['expected_tpir'])}, {_method(calibration)}",
        ))
        rows.append((
            f"wrong share of alerts at prevalence {calibration['prevalence']:g}",
            pct(calibration["wrong_alert_share"]),
            f"per-face accuracy {pct(calibration['accuracy_per_face'], digits=6)}",
        ))
    out: list[Block] = [Heading(2, "Summary"), Table(("figure", "value", "detail"), tuple(rows))]
    for note in metrics.get("notes", []):
        out.append(Para(note))
    return out


def _inputs(metrics: Mapping[str, Any]) -> list[Block]:
    inputs = metrics.get("inputs", {})
    rows = [
        ("entries listed (files or label rows)", count(inputs.get("listed"))),
        ("labelled images read", count(inputs.get("images"))),
        ("images used (one face each)", count(inputs.get("used"))),
    ]
    for reason, n in sorted(inputs.get("skipped", {}).items()):
        rows.append((f"skipped before reading: {reason}", count(n)))
    for reason, n in sorted(inputs.get("failed", {}).items()):
        rows.append((f"not used: {reason}", count(n)))
    rows += [
        ("images with several faces (largest used)", count(inputs.get("multiple_faces_largest_used"))),
        ("identities labelled / used", f"{count(inputs.get('identities_labelled'))} / {count(inputs.get('identities_used'))}"),
        ("identities with one usable image (non-mated or gallery only)", count(inputs.get("single_image_identities"))),
    ]
    for reason, n in sorted(inputs.get("enrolment_policy_would_refuse", {}).items()):
        applied = "refused as references" if inputs.get("enrolment_policy_applied") else "counted only"
        rows.append((f"enrolment checks would refuse: {reason} ({applied})", count(n)))
    out: list[Block] = [Heading(2, "Inputs"), Table(("what", "count"), tuple(rows))]
    merged = inputs.get("merged_identities") or {}
    if merged:
        out.append(Para("Identities merged as one person (identity links): "
                        + ", ".join(f"`{a}` into `{b}`" for a, b in sorted(merged.items())) + "."))
    problems = [p for p in inputs.get("problems", []) if p.get("reason") not in ("excluded_kind", "no_identity")]
    if problems:
        shown = problems[:MAX_PROBLEMS_IN_REPORT]
        out.append(Para(f"Entries not used ({len(problems)} listed in metrics.json; first {len(shown)} here, "
                        "label rows of other kinds left out):"))
        out.append(Table(("path", "reason", "detail"), tuple((p["path"], p["reason"], p["detail"]) for p in shown)))
    return out


def _verification(metrics: Mapping[str, Any]) -> list[Block]:
    v = metrics.get("verification", {})
    out: list[Block] = [Heading(2, "1:1 verification")]
    if not v.get("available"):
        return out + [Para(f"Not available: {v.get('reason', 'no data')}.")]
    sampled = (f" (a seeded sample of the {count(v['impostor_pairs_total'])} impostor pairs)"
               if v.get("impostor_sampled") else "")
    out.append(Para(
        f"Every pair of usable images: {count(v['n_genuine'])} genuine pairs (same person) and "
        f"{count(v['n_impostor'])} impostor pairs{sampled}. FMR is the share of impostor pairs scoring at or "
        "above the threshold, FNMR the share of genuine pairs below it. The equal error rate is where the two "
        f"meet: {pct(v['eer'])} at score {num(v['eer_threshold'])}."
    ))
    rows = [
        (key, num(p["threshold"]), pct(p["fnmr"]), pct(p["fmr"]), _method(p))
        for key, p in v["fnmr_at_fmr"].items()
    ]
    out.append(Table(("target FMR", "threshold", "FNMR", "FMR at threshold", "how"), tuple(rows)))
    if any(not p["achievable"] for p in v["fnmr_at_fmr"].values()):
        out.append(Para("A target below 1 / (impostor pairs) cannot be measured: its threshold is extrapolated "
                        "from a generalized Pareto fit of the highest impostor scores, and is an estimate."))
    return out + _figure(metrics, "det_verification") + _figure(metrics, "scores")


def _identification(metrics: Mapping[str, Any]) -> list[Block]:
    i = metrics.get("identification", {})
    out: list[Block] = [Heading(2, "1:N open-set identification")]
    if not i.get("available"):
        return out + [Para(f"Not available: {i.get('reason', 'no data')}.")]
    out.append(Para(
        f"Gallery: {i['gallery_rule']}; {i['references_per_identity']} reference image(s) per identity "
        f"({count(i['n_references'])} in all). Mated searches: the other images of enrolled people "
        f"({count(i['n_mated'])}); non-mated searches: every image of people not enrolled ({count(i['n_nonmated'])}). "
        "As NIST measures it: FNIR is the share of mated searches whose mate is not ranked first at or above the "
        "threshold (a tie for first counts as a miss); FPIR the share of non-mated searches whose top score "
        f"reaches it. Rank-1 identification rate (any score): {pct(i['rank1'])}."
    ))
    rows = [
        (key, num(p["threshold"]), pct(p["fnir"]), pct(p["fpir"]), pct(p["fpir_measured"]), _method(p))
        for key, p in i["fnir_at_fpir"].items()
    ]
    out.append(Table(("target FPIR", "threshold", "FNIR", "FPIR", "FPIR measured", "how"), tuple(rows)))
    if any(not p["achievable"] for p in i["fnir_at_fpir"].values()):
        out.append(Para(
            f"With {count(i['n_nonmated'])} non-mated searches an FPIR below 1/{count(i['n_nonmated'])} cannot be "
            "measured. Those rows set the threshold so that the per-comparison FMR is "
            "1-(1-FPIR)^(1/N) and give the FPIR of that model; the FNIR is still measured at the threshold."
        ))
    return out + _figure(metrics, "det_identification")


def _sweep(metrics: Mapping[str, Any]) -> list[Block]:
    s = metrics.get("fpir_vs_gallery_size", {})
    out: list[Block] = [Heading(2, "FPIR and watchlist size")]
    if not s.get("available"):
        return out + [Para(f"Not available: {s.get('reason', 'no data')}.")]
    out.append(Para(
        "Every enrolled person is one more chance for a stranger to look alike, so the false alert rate grows "
        f"with the watchlist. Method: {s['method']}"
    ))
    for index, curve in enumerate(s["curves"]):
        out.append(Heading(3, f"At {curve['label']} (threshold {num(curve['threshold'])})"))
        out.append(Para(f"Per-comparison FMR at this threshold: {pct(curve['fmr1'], digits=3)} ({curve['fmr1_source']})."))
        rows = [(count(p["size"]), pct(p["fpir_measured"]), pct(p["fpir_model"])) for p in curve["points"]]
        out.append(Table(("gallery size", "FPIR measured", "FPIR model"), tuple(rows)))
        rows = [(count(p["size"]), pct(p["fpir_model"])) for p in curve["extrapolated"]]
        out.append(Table(("watchlist size", "FPIR extrapolated (model)"), tuple(rows)))
        out += _figure(metrics, f"fpir_vs_gallery_{index}")
    return out


def _groups(metrics: Mapping[str, Any]) -> list[Block]:
    groups = metrics.get("groups", {})
    out: list[Block] = [Heading(2, "By group")]
    if not groups:
        return out + [Para("No attributes were given (`--attributes`), so there are no figures by group.")]
    out.append(Para(
        "Each group's figures are read at one shared threshold, as a deployment uses one threshold for everyone "
        "(as NIST's demographic report does). Intervals are 95% bootstrap intervals that resample people, not "
        "pairs. The ratio of the worst to the best group's rate is the disparity NIST reports; a group with a "
        "warning is too small, or lacks the pairs, for its figure to say much."
    ))
    for column, section in groups.items():
        out.append(Heading(3, f"By {column}"))
        if not section.get("available"):
            out.append(Para(f"Not available: {section.get('reason')}."))
            continue
        out.append(Para(
            f"1:1 figures at score {num(section.get('verification_threshold'))}: "
            f"{section.get('verification_threshold_rule', '')}. "
            + (f"1:N figures at score {num(section['identification_threshold'])}: "
               f"{section['identification_threshold_rule']}." if "identification_threshold" in section else "")
        ))
        rows = []
        for group, entry in section["values"].items():
            v = entry.get("verification", {})
            i = entry.get("identification", {})
            rows.append((
                group, count(entry["n_images"]), count(entry["n_identities"]),
                f"{pct(v.get('fmr'))} {ci(v.get('fmr_ci'))}".strip() if v else "n/a",
                count(v.get("n_impostor")) if v else "0",
                f"{pct(v.get('fnmr'))} {ci(v.get('fnmr_ci'))}".strip() if v else "n/a",
                count(v.get("n_genuine")) if v else "0",
                pct(entry.get("eer")),
                f"{pct(i.get('fpir'))} {ci(i.get('fpir_ci'))}".strip() if i else "n/a",
                f"{pct(i.get('fnir'))} {ci(i.get('fnir_ci'))}".strip() if i else "n/a",
                ("**warning**: " + entry["warning"]) if entry.get("warning") else "",
            ))
        out.append(Table(
            ("group", "images", "people", "FMR [95% CI]", "impostor pairs", "FNMR [95% CI]", "genuine pairs",
             "EER", "FPIR [95% CI]", "FNIR [95% CI]", "warning"),
            tuple(rows),
        ))
        no_genuine = [g for g, e in section["values"].items() if not e.get("verification", {}).get("n_genuine")]
        if no_genuine:
            out.append(Para(
                "FNMR cannot be measured for " + ", ".join(f"`{g}`" for g in no_genuine) + ": these groups have "
                "no genuine pair (for example UTKFace crops, one image per person), so only their FMR is known."
            ))
        for key, label, rates in (("disparity", "1:1", ("fmr", "fnmr")), ("identification_disparity", "1:N", ("fpir", "fnir"))):
            d = section.get(key)
            if not d:
                continue
            parts = []
            for rate in rates:
                ratio = d.get(f"{rate}_ratio")
                if ratio is not None:
                    parts.append(f"{rate.upper()} worst/best = {ratio:.3g} (`{d[f'{rate}_worst']}` / `{d[f'{rate}_best']}`)")
                elif d.get(f"{rate}_unbounded"):
                    parts.append(f"{rate.upper()} ratio unbounded (`{d[f'{rate}_best']}` has none)")
            text = "; ".join(parts) or "no ratio defined"
            notes = "; ".join(d.get("notes", []))
            warned = d.get("warned_groups") or []
            out.append(Para(f"{label} disparity: {text}." + (f" {notes}." if notes else "")
                            + (f" Groups with warnings: {', '.join(warned)}." if warned else "")))
        cross = section.get("cross_group_fmr")
        if cross:
            out.append(Para(f"FMR between groups at score {num(cross['threshold'])} (the heatmap): {cross['rule']}."))
        for kind in ("rates", "cross_fmr", "fmr", "det"):
            out += _figure(metrics, f"{kind}_by_{column}")
    return out


def _tracks(metrics: Mapping[str, Any]) -> list[Block]:
    t = metrics.get("tracks", {})
    out: list[Block] = [Heading(2, "Track-level decisions")]
    if not t.get("available"):
        return out + [Para(f"Not available: {t.get('reason', 'no data')}. {t.get('method', '')}")]
    out.append(Para(
        f"{count(t['n_tracks_mated'])} mated and {count(t['n_tracks_nonmated'])} non-mated tracks. {t['method']}"
    ))
    rows = [
        (r["label"], num(r["threshold"]), str(r["min_votes"]), pct(r["frame_tpir"]), pct(r["track_tpir"]),
         pct(r["frame_fpir"]), pct(r["track_fpir"]))
        for r in t["results"]
    ]
    out.append(Table(("threshold", "score", "votes needed", "TPIR per frame", "TPIR per track",
                      "FPIR per frame", "FPIR per track"), tuple(rows)))
    return out


def _calibration(metrics: Mapping[str, Any]) -> list[Block]:
    c = metrics.get("calibration", {})
    out: list[Block] = [Heading(2, "Calibration: the threshold for a false-alert target")]
    if not c.get("available"):
        return out + [Para(f"Not available: {c.get('reason', 'no data')}.")]
    out.append(Para(
        f"Target: FPIR {rate_key(c['target_fpir'])} (one false alert per {count(round(1 / c['target_fpir']))} strangers "
        f"searched) on a watchlist of {count(c['gallery_size'])} people. Each search makes one comparison per "
        f"enrolled person, so one comparison may pass with probability {c['per_comparison_fmr']:.3g} "
        f"(1-(1-FPIR)^(1/N)); the threshold is the lowest score that keeps {c['impostor_source']} at or under "
        f"that: **{num(c['threshold'])}** (descriptor distance {num(c['distance'], 3)}), {_method(c)} from "
        f"{count(c['n_impostor'])} impostor comparisons. Expected TPIR there: **{pct(c['expected_tpir'])}** "
        f"({c['tpir_source']}, {count(c['n_mated'])} searches); expected FPIR {pct(c['expected_fpir'])}."
    ))
    if c.get("below_registry_floor"):
        out.append(Para(
            f"**Note:** this threshold is below the registry's floor ({num(c['registry_threshold_floor'], 2)}, "
            "`OPENLFR_REGISTRY_THRESHOLD_FLOOR`): a deployment at it would be refused; the floor is stricter."
        ))
    out.append(Para("What a deployment's configuration reads (`calibration.json`; `threshold` is "
                    "`DeploymentCreate.threshold`, e.g. `openlfr deployment create --threshold`):"))
    out.append(Code(json.dumps(c.get("config", {}), indent=2), "json"))
    out.append(Para(
        f"Why most alerts can be wrong although almost every face is judged right: with "
        f"{c['prevalence']:g} of the faces passing the camera on the watchlist, strangers outnumber "
        "wanted people so heavily that their few false alerts outnumber the true ones. "
        f"At the calibrated threshold, {pct(c['wrong_alert_share'])} of alerts would be wrong, while the share "
        f"of faces decided correctly is {pct(c['accuracy_per_face'], digits=6)}. Every alert therefore goes to "
        "two reviewers before anyone acts on it."
    ))
    rows = [(f"{p['prevalence']:g}", pct(p["wrong_alert_share"]), pct(p["accuracy_per_face"], digits=6))
            for p in c.get("by_prevalence", [])]
    out.append(Table(("share of faces on the watchlist", "alerts that are wrong", "faces decided correctly"),
                     tuple(rows)))
    sizes = c.get("by_watchlist_size") or []
    if sizes:
        out.append(Para(
            f"The same target on other watchlist sizes: a larger watchlist needs a higher threshold, which costs "
            f"true matches (wrong share of alerts at prevalence {c['prevalence']:g}; the TPIR is measured on the "
            "evaluation gallery, so for a much larger watchlist it is optimistic):"
        ))
        rows = [
            (count(r["gallery_size"]), num(r["threshold"]), f"{r['per_comparison_fmr']:.3g}", pct(r["expected_tpir"]),
             pct(r["wrong_alert_share"]), _method(r))
            if r.get("available") else (count(r["gallery_size"]), "n/a", "", "", "", r.get("reason", ""))
            for r in sizes
        ]
        out.append(Table(("watchlist size", "threshold", "per-comparison FMR", "expected TPIR",
                          "alerts that are wrong", "how"), tuple(rows)))
    return out


def _normalised(metrics: Mapping[str, Any]) -> list[Block]:
    """Per-subject thresholds: the figures on cohort-normalised scores (``--cohort``)."""
    n = metrics.get("normalised")
    if not n:
        return []
    out: list[Block] = [Heading(2, "Per-subject thresholds (cohort-normalised scores)")]
    if not n.get("available"):
        return out + [Para(f"Not available: {n.get('reason', 'no data')}.")]
    out.append(Para(
        f"Cohort `{n['cohort']}` ({count(n.get('cohort_faces'))} faces of {count(n.get('cohort_people'))} people, "
        f"from {n.get('cohort_source') or '?'}); statistics over each face's top {n['top_k']} cohort scores. "
        f"Score: {n['score']}."
    ))
    raw = metrics.get("fnir_at_fpir", {})
    ident_n = n.get("identification", {})
    if ident_n.get("available"):
        rows = []
        for key, point in ident_n["fnir_at_fpir"].items():
            before = raw.get(key, {})
            rows.append((key, pct(before.get("fnir")), pct(point.get("fnir")), _method(point)))
        out.append(Table(("FPIR", "FNIR, raw score", "FNIR, per-subject", "how (per-subject)"), tuple(rows)))
    op = n["operating_point"]
    measured = (f" Measured on this set at that threshold: FPIR {pct(op.get('measured_fpir'))}, FNIR "
                f"{pct(op.get('measured_fnir'))} ({op.get('measured_on')})." if op.get("measured_fpir") is not None else "")
    miss = pct(op.get("expected_fnmr")) if op.get("expected_fnmr") is not None else "unknown (no genuine pairs in the cohort)"
    out.append(Para(
        f"Operating point a deployment would take from this cohort: FPIR target {num(op['target_fpir'], 6)} at a "
        f"watchlist of {count(op['watchlist_size'])}: normalised threshold {num(op['threshold'])} ({op['method']}), "
        f"expected FPIR {num(op['expected_fpir'], 6)}, expected miss rate {miss}.{measured}"
    ))
    rows = []
    for column, figures in n.get("groups", {}).items():
        if not figures.get("available"):
            continue
        values = figures.get("values", {})
        cells = "; ".join(
            f"{group} {pct(v['verification'].get('fmr'))} {ci(v['verification'].get('fmr_ci'))}"
            for group, v in values.items() if v.get("verification", {}).get("n_impostor")
        )
        d = figures.get("disparity") or {}
        ratio = "unbounded" if d.get("fmr_unbounded") else num(d.get("fmr_ratio"), 2)
        rows.append((column, cells, ratio))
    if rows:
        out.append(Para("FMR by group at the normalised threshold where FMR over all impostor pairs is the group "
                        "target (pairs within one group, 95% intervals by identity):"))
        out.append(Table(("attribute", "FMR by group", "worst/best"), tuple(rows)))
    return out


def _method_section(metrics: Mapping[str, Any]) -> list[Block]:
    config = metrics.get("config", {})
    return [
        Heading(2, "Method and limits"),
        Bullets((
            "Every image goes through the live path (`FaceAnalyzer`: BlazeFace detection, dlib 5-point landmarks, "
            "150x150 chip, quality, dlib ResNet embedding); the largest face of each image is used. Aligned crops "
            "go through the detector too (its close-up crop finds faces that fill the image).",
            f"Score: {metrics.get('score', '')}.",
            f"Seed {config.get('seed')}: the gallery, the gallery-size sweep, impostor sampling and every bootstrap "
            "are drawn from it, so a rerun gives the same numbers.",
            "Images of one person in these sets are often from one photo shoot or source; real probes from a "
            "camera differ more from their reference, so these FNMR/FNIR are likely optimistic for live video.",
            "Rates measured on few people have wide intervals; the identity-resampled intervals show it, and a "
            "group with fewer than 5 people is marked as saying nothing.",
            "Thresholds for rates below 1/(negatives) are extrapolated from a tail model and labelled so; check "
            "them on more data before relying on them.",
        )),
    ]


# -- rendering --------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown (figures link to their files)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("| " + " | ".join("---" for _ in block.headers) + " |")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Code):
            lines += [f"```{block.language}", block.text, "```", ""]
        elif isinstance(block, Figure):
            lines += [f"![{block.title}]({block.file})", ""]
    return "\n".join(lines).rstrip() + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        if match.group(1) is not None:
            out.append(f"<code>{html.escape(match.group(1))}</code>")
        else:
            out.append(f"<strong>{html.escape(match.group(2))}</strong>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1b1b;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.88em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top}
th{background:#f1f1f1}
code,pre{background:#f5f5f5;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.9em}
pre{padding:0.7em;overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}
"""


def to_html(blocks: Sequence[Block], *, base: Path) -> str:
    """The blocks as one self-contained HTML page; figures are embedded from files under ``base``."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "OpenLFR evaluation")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif isinstance(block, Figure):
            path = base / block.file
            if path.is_file():
                src = data_uri(path)
                parts.append(f'<figure><img src="{src}" alt="{html.escape(block.title)}">'
                             f"<figcaption>{html.escape(block.title)}</figcaption></figure>")
            else:
                logger.warning('plot file missing path="%s"', path)
                parts.append(f"<p><em>(plot missing: {html.escape(block.file)})</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(metrics: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` from a metrics dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(metrics)
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, base=out_dir), encoding="utf-8")
    return md, page
