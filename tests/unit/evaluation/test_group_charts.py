"""The cross-group FMR matrix, and the charts: rates by group with intervals, the heatmap, zeros drawn inside the axes."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from openlfr.evaluation import plots
from openlfr.evaluation.groups import cross_group_fmr
from openlfr.evaluation.plots_groups import GroupRate, RatePanel, group_rates, rate_heatmap, rule_of_three

SVG_NS = "{http://www.w3.org/2000/svg}"
GROUPS = ("a", "b", "c")
# (group of one person, group of the other, score); threshold 0.7. -1: a person without a group.
IMPOSTORS = [
    (0, 0, 0.9), (0, 0, 0.2), (0, 0, 0.7), (0, 0, 0.1),  # a-a: 0.9 and 0.7 (at the threshold) match: 2/4
    (0, 1, 0.8), (1, 0, 0.3), (0, 1, 0.69),  # a-b either way round: 0.8 matches: 1/3
    (1, 1, 0.1), (1, 1, 0.2),  # b-b: 0/2
    (2, 0, 0.95),  # c-a: 1/1; c has no pair with b and none within
    (-1, 0, 0.99), (2, -1, 0.99),  # a person without a group: left out
]


def _cross():  # noqa: ANN202 - CrossGroupFMR
    a, b, scores = zip(*IMPOSTORS, strict=True)
    return cross_group_fmr(scores=np.array(scores), group_a=np.array(a), group_b=np.array(b), groups=GROUPS,
                           threshold=0.7)


def test_cross_group_fmr_is_the_hand_counted_one() -> None:
    cross = _cross()
    assert cross.groups == GROUPS and cross.threshold == 0.7
    assert cross.n_impostor.tolist() == [[4, 3, 1], [3, 2, 0], [1, 0, 0]]
    assert cross.false_matches.tolist() == [[2, 1, 1], [1, 0, 0], [1, 0, 0]]
    expected = [[0.5, 1 / 3, 1.0], [1 / 3, 0.0, math.nan], [1.0, math.nan, math.nan]]
    np.testing.assert_allclose(cross.fmr, expected, equal_nan=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_a": np.array([0, 3])}, "indices must be -1 or in"),
        ({"group_b": np.array([0])}, "expected (2,) indices"),
        ({"groups": ()}, "no groups given"),
        ({"scores": np.array([0.5, math.nan])}, "NaN"),
        ({"threshold": math.inf}, "threshold"),
    ],
)
def test_cross_group_fmr_refuses_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"scores": np.array([0.5, 0.8]), "group_a": np.array([0, 1]), "group_b": np.array([1, 1]),
                 "groups": ("x", "y"), "threshold": 0.7, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        cross_group_fmr(**arguments)


# -- SVG geometry ----------------------------------------------------------------------------


def _svg(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # raises on a file that is not well-formed XML


def _group(root: ET.Element, gid: str) -> ET.Element:
    found = root.find(f".//{SVG_NS}g[@id='{gid}']")
    assert found is not None, f"no element with id {gid!r}"
    return found


def _axes_box(root: ET.Element, axes: int = 1) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of an axes' background patch, in SVG units (y grows downwards)."""
    patch = _group(_group(root, f"axes_{axes}"), "patch_2").find(f"{SVG_NS}path")
    xs, ys = _points(patch.get("d"))
    return min(xs), max(xs), min(ys), max(ys)


def _points(d: str) -> tuple[list[float], list[float]]:
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return numbers[0::2], numbers[1::2]


def _texts(root: ET.Element) -> str:
    return " ".join("".join(t.itertext()) for t in root.iter(f"{SVG_NS}text"))


def test_a_zero_fnmr_curve_is_drawn_inside_the_axes(tmp_path: Path) -> None:
    fmr = np.array([0.0, 1e-3, 1e-2, 0.1, 1.0])
    path = plots.det_curves(tmp_path / "det.svg", {"no misses": (fmr, np.zeros(5)),
                                                  "some": (fmr, np.array([0.5, 0.2, 0.05, 0.01, 0.0]))},
                            title="DET with a zero curve", x_label="FMR", y_label="FNMR")
    root = _svg(path)
    left, right, top, bottom = _axes_box(root)
    xs, ys = _points(_group(root, "curve-0").find(f"{SVG_NS}path").get("d"))
    # The whole curve lies on one line strictly inside the axes, well above the bottom spine.
    assert len(set(ys)) == 1 and top < ys[0] < bottom - 10
    assert all(left < x <= right for x in xs)
    # Its floored points are marked, inside the axes too.
    marks = [(float(u.get("x")), float(u.get("y"))) for u in _group(root, "zeros-0").iter(f"{SVG_NS}use")]
    assert marks and all(left < x <= right and top < y < bottom - 10 for x, y in marks)
    text = _texts(root)
    assert "DET with a zero curve" in text and "0 drawn on the dashed line" in text
    assert "no misses (0 on the dashed line)" in text


def test_a_curve_of_one_point_is_still_drawn(tmp_path: Path) -> None:
    path = plots.det_curves(tmp_path / "one.svg", {"one": (np.array([0.0]), np.array([0.0]))},
                            title="one point", x_label="FMR", y_label="FNMR")
    root = _svg(path)
    left, right, top, bottom = _axes_box(root)
    marks = [(float(u.get("x")), float(u.get("y"))) for u in _group(root, "zeros-0").iter(f"{SVG_NS}use")]
    assert len(marks) == 1 and left < marks[0][0] < right and top < marks[0][1] < bottom


def test_rates_by_group_show_a_zero_as_its_rule_of_three_bound(tmp_path: Path) -> None:
    panel = RatePanel(name="FMR", title="FMR at 0.8000\nworst/best 3 (b/a)", trials="impostor pairs", rows=(
        GroupRate(group="a", rate=0.001, ci=(0.0005, 0.002), n=10_000),
        GroupRate(group="b", rate=0.003, ci=(0.0, 0.01), n=2_000),
        GroupRate(group="c", rate=0.0, ci=(0.0, 0.0), n=300),
        GroupRate(group="d", rate=None, ci=None, n=0),
    ))
    path = group_rates(tmp_path / "rates.svg", [panel], title="FMR by thing")
    root = _svg(path)
    text = _texts(root)
    assert "FMR by thing" in text and "worst/best 3 (b/a)" in text
    assert "0 of 300 (< 1.0%)" in text and "n/a (no impostor pairs)" in text
    assert "0.10% [0.050%, 0.20%], n=10,000" in text
    left, right, top, bottom = _axes_box(root)
    zero = [(float(u.get("x")), float(u.get("y"))) for u in _group(root, "zero-c").iter(f"{SVG_NS}use")]
    assert len(zero) == 1 and left + 5 < zero[0][0] < right and top < zero[0][1] < bottom
    assert rule_of_three(300) == 0.01 and rule_of_three(0) == 1.0
    with pytest.raises(ValueError, match="no panel"):
        group_rates(tmp_path / "none.svg", [], title="x")


def test_the_heatmap_writes_each_cell(tmp_path: Path) -> None:
    cross = _cross()
    path = rate_heatmap(tmp_path / "heat.svg", groups=cross.groups, rates=cross.fmr, n=cross.n_impostor,
                        errors=cross.false_matches, title="FMR between groups")
    text = _texts(_svg(path))
    assert "FMR between groups" in text
    for cell in ("50%", "2/4", "33%", "1/3", "0/2", "no pairs", "(< 100%)", "log colour"):
        assert cell in text, cell
    with pytest.raises(ValueError, match="expected"):
        rate_heatmap(tmp_path / "bad.svg", groups=("a",), rates=cross.fmr, n=cross.n_impostor,
                     errors=cross.false_matches, title="x")
