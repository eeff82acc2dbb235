"""The report, rendered from a hand-made metrics dict: numbers, warnings, escaping, embedding."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from openlfr.evaluation.report import build_blocks, ci, pct, to_markdown, write_reports

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def _metrics() -> dict[str, Any]:
    point = {"threshold": 0.7412, "fnmr": 0.1234, "fmr": 0.001, "achievable": True, "method": "empirical"}
    ident_point = {"threshold": 0.7601, "fnir": 0.25, "fpir": 0.01, "fpir_measured": 0.01, "achievable": True,
                   "method": "empirical"}
    extrapolated = {**ident_point, "fnir": 0.5, "fpir": 1 / 6000, "fpir_measured": 0.0, "achievable": False,
                    "method": "per-comparison:tail-fit:gpd"}
    return {
        "created_at": "2026-11-26T10:00:00+00:00",
        "command": "openlfr evaluate --faces F --out O",
        "model": {"version": "dlib_resnet_v1@abc", "detector": "blazeface_full@def", "landmarks": "sp5@0",
                  "analysis_key": "k"},
        "data": {"fingerprint": "f" * 64},
        "score": "similarity = 1 - d/2",
        "config": {"seed": 7},
        "notes": ["3 identities have one usable image."],
        "inputs": {
            "listed": 12, "images": 11, "used": 9, "skipped": {"not_an_image": 1},
            "failed": {"no_face": 1, "unreadable": 1}, "multiple_faces_largest_used": 0,
            "identities_labelled": 5, "identities_used": 4, "single_image_identities": 3,
            "identities_with_2plus_images": 1, "merged_identities": {"p1": "Ann"},
            "enrolment_policy_would_refuse": {"too_small": 2}, "enrolment_policy_applied": False,
            "problems": [{"path": "x/bad.jpg", "reason": "unreadable", "detail": "corrupt <header>"}],
        },
        "verification": {"available": True, "n_genuine": 40, "n_impostor": 2000, "impostor_sampled": False,
                         "impostor_pairs_total": 2000, "eer": 0.0425, "eer_threshold": 0.6655,
                         "fnmr_at_fmr": {"0.001": point, "0.0001": {**point, "achievable": False,
                                                                     "method": "unresolved", "threshold": None,
                                                                     "fnmr": None, "fmr": None}}},
        "identification": {"available": True, "gallery_size": 20, "gallery_rule": "20 identities drawn with seed 7",
                           "references_per_identity": 1, "n_references": 20, "n_mated": 100, "n_nonmated": 300,
                           "rank1": 0.93, "fnir_at_fpir": {"0.01": ident_point, "1/6000": extrapolated}},
        "fpir_vs_gallery_size": {"available": False, "reason": "no open-set identification"},
        "tracks": {"available": False, "reason": "too few images", "method": "m"},
        "groups": {
            "sex": {
                "available": True, "verification_threshold": 0.74, "verification_threshold_rule": "rule",
                "values": {
                    "female": {"n_images": 50, "n_identities": 10, "eer": 0.05, "warning": None,
                               "verification": {"fmr": 0.002, "fmr_ci": [0.001, 0.004], "n_impostor": 900,
                                                "fnmr": 0.1, "fnmr_ci": [0.05, 0.2], "n_genuine": 30}},
                    "<script>x</script>": {"n_images": 3, "n_identities": 3, "eer": None,
                                           "warning": "only 3 identities (fewer than 5): too few people to say anything",
                                           "verification": {"fmr": 0.01, "fmr_ci": [0.0, 0.03], "n_impostor": 3,
                                                            "fnmr": None, "fnmr_ci": None, "n_genuine": 0}},
                },
                "disparity": {"fmr_ratio": 5.0, "fmr_worst": "<script>x</script>", "fmr_best": "female",
                              "fmr_unbounded": False, "fnmr_ratio": None, "fnmr_unbounded": False,
                              "notes": ["FNMR: fewer than two groups with a FNMR"], "warned_groups": ["<script>x</script>"]},
            },
        },
        "calibration": {"available": True, "threshold": 0.7731, "distance": 0.4538, "target_fpir": 1 / 6000,
                        "gallery_size": 1000, "per_comparison_fmr": 1.7e-7, "method": "tail-fit:gpd",
                        "impostor_source": "impostors", "n_impostor": 5000, "expected_tpir": 0.61,
                        "expected_fpir": 1 / 6000, "tpir_source": "open-set", "n_mated": 100, "prevalence": 1e-4,
                        "wrong_alert_share": 0.7321, "accuracy_per_face": 0.99979, "below_registry_floor": False,
                        "registry_threshold_floor": 0.7, "config": {"threshold": 0.7731},
                        "by_prevalence": [{"prevalence": 1e-4, "wrong_alert_share": 0.7321,
                                           "accuracy_per_face": 0.99979}]},
        "plots": {"scores": {"file": "plots/scores.svg", "title": "Genuine and impostor scores"},
                  "det_identification": {"file": "plots/missing.svg", "title": "gone"}},
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1234, "12.3%"), (0.001, "0.100%"), (1 / 6000, "0.0167%"), (0.0, "0%"), (1.0, "100%"), (None, "n/a")],
)
def test_rates_are_percentages_with_three_significant_digits(value, text: str) -> None:
    assert pct(value) == text


def test_intervals() -> None:
    assert ci([0.05, 0.2]) == "[5.0%, 20%]"
    assert ci(None) == "" and ci([None, 0.1]) == ""


def test_markdown_carries_the_numbers_and_the_warnings() -> None:
    md = to_markdown(build_blocks(_metrics()))
    assert "| 1:1 EER | 4.25% | threshold 0.6655 |" in md
    assert "| 1:1 FNMR at FMR 0.001 | 12.3% | threshold 0.7412, measured |" in md
    assert "| 0.0001 | n/a | n/a | n/a | not resolvable on this data |" in md
    assert "| 1/6000 | 0.7601 | 50.0% | 0.0167% | 0% | extrapolated (per-comparison:tail-fit:gpd) |" in md
    assert "| female | 50 | 10 | 0.200% [0.10%, 0.40%] | 900 | 10.0% [5.0%, 20%] | 30 | 5.00% |" in md
    assert "**warning**: only 3 identities (fewer than 5): too few people to say anything" in md
    assert "FNMR cannot be measured for `<script>x</script>`" in md
    assert "FMR worst/best = 5" in md
    assert "**0.7731**" in md and "73.2%" in md
    assert "not used: unreadable | 1" in md and "x/bad.jpg" in md
    assert "`p1` into `Ann`" in md
    assert "Not available: too few images." in md  # tracks
    assert "![Genuine and impostor scores](plots/scores.svg)" in md


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "scores.svg").write_text(SVG)
    md_path, html_path = write_reports(_metrics(), tmp_path)
    page = html_path.read_text()

    assert md_path.read_text().startswith("# OpenLFR accuracy and fairness evaluation")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "corrupt &lt;header&gt;" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 1 and images[0].startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(images[0].split(",", 1)[1]).decode() == SVG
    assert "(plot missing: plots/missing.svg)" in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<code>dlib_resnet_v1@abc</code>" in page and "<strong>0.7731</strong>" in page


def test_a_metrics_dict_without_any_figure_still_renders(tmp_path: Path) -> None:
    bare = {"inputs": {"listed": 0, "failed": {}}, "verification": {"available": False, "reason": "no genuine pairs"},
            "identification": {"available": False, "reason": "no mated search"}, "calibration": {"available": False},
            "groups": {}, "plots": {}}
    md_path, html_path = write_reports(bare, tmp_path)
    md = md_path.read_text()
    assert "Not available: no genuine pairs." in md and "Not available: no mated search." in md
    assert "No attributes were given" in md
    assert html_path.read_text().endswith("</html>\n")
