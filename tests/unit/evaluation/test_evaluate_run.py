"""End to end on a tiny set whose embeddings are injected, so every rate is known exactly.

The fake analyzer stands in for the models (the boundary): each image is a flat 8x8 PNG and
its first pixel's value picks a descriptor ``(x, 0, ..., 0)``, so the distance of two images is
``|x1 - x2|`` and their score ``1 - |x1 - x2| / 2`` (0 beyond a distance of 2). Positions are
binary fractions, so every score below is exact in floating point.

    alice  a1 x=0     a2 x=0.25        (genuine score 0.875)
    bob    b1 x=1     b2 x=1.5         (genuine 0.75)   + corrupt.jpg (unreadable)
    dave   d1 x=0.5                    (one image)
    erin   e1 x=5     e2 x=5.25        (genuine 0.875)
    frank  noface.png                  (no face: frank has no usable image)
    alice  a2copy.png                  (byte copy of a2: a duplicate)

Impostor scores (18 pairs): a1-b1 .5, a1-b2 .25, a1-d1 .75, a2-b1 .625, a2-b2 .375, a2-d1 .875,
b1-d1 .75, b2-d1 .5, and 10 pairs with erin at 0.

1:N with alice and bob enrolled (references a1, b1): mated searches a2 (mate .875, other .625)
and b2 (mate .75, other .25); non-mated d1 (top .75), e1 and e2 (top 0).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.evaluation.cli import add_evaluate_parser, cmd_evaluate
from openlfr.evaluation.dataset import load_dataset, write_csv
from openlfr.evaluation.embeddings import AnalysisVersion, EmbeddingCache
from openlfr.evaluation.run import EvaluationConfig, rate_key, run_evaluation
from openlfr.vision.faces import EMBEDDING_DIM, FaceQuality, Faces

POSITIONS = {1: 0.0, 2: 0.25, 3: 1.0, 4: 1.5, 5: 0.5, 6: 5.0, 7: 5.25}
NO_FACE = 255
VERSION = AnalysisVersion.of({"fake": "positions-v1"})


class PositionAnalyzer:
    """Stands in for ``FaceAnalyzer``: the first pixel's value picks the descriptor."""

    def __init__(self) -> None:
        self.calls = 0

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[Faces]:
        self.calls += 1
        out = []
        for image in images:
            value = int(image[0, 0, 0])
            if value == NO_FACE:
                out.append(Faces.empty())
                continue
            embedding = np.zeros((1, EMBEDDING_DIM), np.float32)
            embedding[0, 0] = POSITIONS[value]
            one = np.ones(1, np.float32)
            out.append(Faces(
                boxes=np.array([[0, 0, 8, 8]], np.float32), scores=one * 0.9,
                landmarks=np.zeros((1, 5, 2), np.float32),
                quality=FaceQuality(one * 8, one * 50, one * 100, one * 0, one * 0, one * 0.9, one * 0.9),
                embeddings=embedding,
            ))
        return out


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def _make_tiny(tmp_path: Path) -> Path:
    faces = tmp_path / "faces"
    for rel, value in {"alice/a1.png": 1, "alice/a2.png": 2, "bob/b1.png": 3, "bob/b2.png": 4,
                       "dave/d1.png": 5, "erin/e1.png": 6, "erin/e2.png": 7, "frank/noface.png": NO_FACE}.items():
        _png(faces / rel, value)
    shutil.copyfile(faces / "alice/a2.png", faces / "alice/a2copy.png")
    (faces / "bob" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a jpeg")
    write_csv(tmp_path / "attributes.csv",
              [{"identity": i, "cohort": g} for i, g in
               (("alice", "g1"), ("dave", "g1"), ("bob", "g2"), ("erin", "g2"))],
              ["identity", "cohort"])
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set, built once per module (tests only read it, or write under their own names)."""
    return _make_tiny(tmp_path_factory.mktemp("tiny"))


CONFIG = EvaluationConfig(
    enrolled=("alice", "bob"),
    fmr_targets=(0.1, 0.2),
    fpir_targets=(0.5, 0.3),
    target_fpir=0.4375,
    watchlist_size=2,
    prevalence=0.5,
    group_fmr=0.2,
    track_length=1,
    min_votes=1,
    n_boot=200,
)


@pytest.fixture(scope="module")
def result(tiny: Path):
    dataset = load_dataset(tiny / "faces", attributes=tiny / "attributes.csv")
    analyzer = PositionAnalyzer()
    output = run_evaluation(
        dataset, out_dir=tiny / "out", analyzer=analyzer, cache=EmbeddingCache(tiny / "cache", VERSION),
        version=VERSION, config=CONFIG, model_version="fake@positions", command="openlfr evaluate (test)",
        progress=False,
    )
    return output


def test_bad_inputs_are_counted_with_reasons(result) -> None:
    inputs = json.loads(result.metrics_path.read_text())["inputs"]
    assert inputs["images"] == 10
    assert inputs["used"] == 7
    assert inputs["failed"] == {"duplicate": 1, "no_face": 1, "unreadable": 1}
    reasons = {p["path"]: p["reason"] for p in inputs["problems"]}
    assert reasons == {"alice/a2copy.png": "duplicate", "bob/corrupt.jpg": "unreadable",
                       "frank/noface.png": "no_face"}
    assert inputs["identities_labelled"] == 5
    assert inputs["identities_used"] == 4
    assert inputs["identities_without_usable_image"] == 1  # frank
    assert inputs["single_image_identities"] == 1  # dave: impostor pairs and non-mated searches only


def test_verification_rates_are_the_hand_computed_ones(result) -> None:
    m = json.loads(result.metrics_path.read_text())
    v = m["verification"]
    assert (v["n_genuine"], v["n_impostor"]) == (3, 18)
    # FMR 0.1 of 18 impostors: at most 1 may reach the threshold -> just above the 2nd highest
    # impostor (.75): only a2-d1 (.875) passes; bob's genuine .75 falls below.
    p = m["fnmr_at_fmr"]["0.1"]
    assert p["threshold"] == pytest.approx(0.75) and p["threshold"] > 0.75
    assert p["fmr"] == pytest.approx(1 / 18)
    assert p["fnmr"] == pytest.approx(1 / 3)
    # FMR 0.2: at most 3 -> just above .625: .875, .75, .75 pass; every genuine pair passes.
    p = m["fnmr_at_fmr"]["0.2"]
    assert p["threshold"] == pytest.approx(0.625) and p["threshold"] > 0.625
    assert p["fmr"] == pytest.approx(3 / 18)
    assert p["fnmr"] == 0.0
    assert 0.0 < m["eer"] < 1 / 3
    assert 0.75 <= m["eer_threshold"] <= 0.875


def test_identification_rates_are_the_hand_computed_ones(result) -> None:
    m = json.loads(result.metrics_path.read_text())
    i = m["identification"]
    assert (i["gallery_size"], i["n_mated"], i["n_nonmated"]) == (2, 2, 3)
    assert i["rank1"] == 1.0
    # FPIR 0.5 of 3 non-mated searches: 1 may alert -> threshold just above 0: dave alerts (.75).
    p = m["fnir_at_fpir"]["0.5"]
    assert p["achievable"] and p["fpir"] == pytest.approx(1 / 3) and p["fnir"] == 0.0
    # FPIR 0.3: none may alert -> just above .75: bob's mate (.75) is missed.
    p = m["fnir_at_fpir"]["0.3"]
    assert p["threshold"] > 0.75 and p["fpir"] == 0.0 and p["fnir"] == pytest.approx(0.5)


def test_groups_are_the_hand_computed_ones(result) -> None:
    groups = json.loads(result.metrics_path.read_text())["groups"]["cohort"]
    g1, g2 = groups["values"]["g1"], groups["values"]["g2"]
    # Shared 1:1 threshold just above .625 (FMR 0.2 overall). Impostors within the group only:
    # g1 = alice-dave pairs (.75, .875) both pass; g2 = bob-erin pairs (0) none does.
    assert groups["verification_threshold"] == pytest.approx(0.625)
    assert g1["verification"]["fmr"] == 1.0 and g1["verification"]["n_impostor"] == 2
    assert g2["verification"]["fmr"] == 0.0 and g2["verification"]["n_impostor"] == 4
    assert g1["verification"]["fnmr"] == 0.0 and g2["verification"]["fnmr"] == 0.0
    # 1:N at the FPIR 0.5 threshold (just above 0): dave alerts, erin's two searches do not.
    assert g1["identification"]["fpir"] == 1.0 and g2["identification"]["fpir"] == 0.0
    assert g1["identification"]["fnir"] == 0.0 and g2["identification"]["fnir"] == 0.0
    assert groups["disparity"]["fmr_unbounded"] is True
    # Two people per group: every group is flagged as too small to say anything.
    assert "too few people" in g1["warning"] and "too few people" in g2["warning"]
    for rate in ("fmr_ci", "fnmr_ci"):
        low, high = g1["verification"][rate]
        assert 0.0 <= low <= high <= 1.0


def test_cross_group_fmr_is_the_hand_computed_one(result) -> None:
    cross = json.loads(result.metrics_path.read_text())["groups"]["cohort"]["cross_group_fmr"]
    # Just above .625: g1-g1 = alice-dave (.75, .875): 2/2; g2-g2 = bob-erin (0 x4): 0/4; g1-g2 =
    # alice-bob (.5, .25, .625, .375), alice-erin (0 x4), dave-bob (.75, .5), dave-erin (0 x2): 1/12.
    assert cross["groups"] == ["g1", "g2"] and cross["threshold"] == pytest.approx(0.625)
    assert cross["n_impostor"] == [[2, 12], [12, 4]]
    assert cross["false_matches"] == [[2, 1], [1, 0]]
    assert cross["fmr"] == [[1.0, pytest.approx(1 / 12)], [pytest.approx(1 / 12), 0.0]]
    assert cross["impostor_sampled"] is False and "diagonal" in cross["rule"]


def test_group_charts_are_written_and_reported(result) -> None:
    import xml.etree.ElementTree as ET

    m = json.loads(result.metrics_path.read_text())
    md, page = result.report_md.read_text(), result.report_html.read_text()
    rates, heat = m["plots"]["rates_by_cohort"], m["plots"]["cross_fmr_by_cohort"]
    # g2 has no false match: the FMR ratio is unbounded, with the rule of three's bound (1.0 / (3/4)).
    assert rates["title"] == ("FMR, FNMR, FPIR, FNIR by cohort with 95% CIs (FMR worst/best unbounded (g2 has 0; "
                              "at least 1.33 by the rule of three))")
    assert heat["title"] == "FMR between groups of cohort at 0.6250 (diagonal: within the group)"
    for plot in (rates, heat):
        root = ET.parse(result.out_dir / plot["file"]).getroot()
        text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
        assert plot["title"].split(" (")[0].split(" with")[0] in text
        assert f"![{plot['title']}]({plot['file']})" in md
        assert f'alt="{plot["title"]}"' in page
        if plot is rates:
            assert "at least 1.33 by the rule of three" in text and "0 of 4 (< 75%)" in text


def test_calibration_is_the_hand_computed_one(result) -> None:
    m = json.loads(result.metrics_path.read_text())
    c = m["calibration"]
    # FPIR 0.4375 on 2 identities -> per-comparison FMR 1 - sqrt(1 - 0.4375) = 0.25; the 8
    # search-identity impostor scores (0, 0, 0, 0, .25, .625, .75, .75) allow 2 -> just above .625.
    assert c["per_comparison_fmr"] == pytest.approx(0.25)
    assert c["threshold"] == pytest.approx(0.625) and c["threshold"] > 0.625
    assert c["method"] == "empirical"
    assert c["expected_fpir"] == pytest.approx(0.4375)
    assert c["expected_tpir"] == 1.0
    # Half the crowd on the watchlist: 0.4375 * 0.5 / (0.4375 * 0.5 + 1.0 * 0.5).
    assert c["wrong_alert_share"] == pytest.approx(0.21875 / 0.71875)
    written = json.loads(result.calibration_path.read_text())
    assert written["threshold"] == c["threshold"]
    assert written["model_version"] == "fake@positions"


def test_report_files_carry_the_numbers(result) -> None:
    md = result.report_md.read_text()
    page = result.report_html.read_text()
    assert "| 0.1 | 0.7500 | 33.3% | 5.56% | measured |" in md
    assert "| 0.5 | 0.0000 | 0% | 33.3% | 33.3% | measured |" in md
    assert "frank/noface.png" in md and "no_face" in md
    assert "30.4%" in md  # wrong share of alerts
    assert "<table>" in page and "33.3%" in page
    assert 'src="http' not in page and "<link" not in page
    m = json.loads(result.metrics_path.read_text())
    for plot in m["plots"].values():
        assert (result.out_dir / plot["file"]).is_file()
    assert page.count('src="data:image/svg+xml;base64,') == len(m["plots"]) >= 3
    assert m["model"]["version"] == "fake@positions"
    assert len(m["data"]["fingerprint"]) == 64


def test_tracks_and_gallery_sweep_are_reported(result) -> None:
    m = json.loads(result.metrics_path.read_text())
    assert m["tracks"]["available"] and m["tracks"]["n_tracks_mated"] == 2
    sweep = m["fpir_vs_gallery_size"]
    assert sweep["available"] and [p["size"] for p in sweep["curves"][0]["points"]] == [1, 2]


def test_a_rerun_hits_the_cache_and_gives_the_same_numbers(tiny: Path, result) -> None:
    dataset = load_dataset(tiny / "faces", attributes=tiny / "attributes.csv")
    cache = EmbeddingCache(tiny / "cache", VERSION)
    again = run_evaluation(dataset, out_dir=tiny / "out2", analyzer=None, cache=cache, version=VERSION,
                           config=CONFIG, model_version="fake@positions", progress=False)
    # Every decodable image (the byte copy too) is a hit; only the corrupt file, never cached, is
    # a miss, and it fails at decoding without needing the analyzer.
    assert (cache.hits, cache.misses) == (9, 1)
    first, second = result.metrics, again.metrics
    for key in ("eer", "fnmr_at_fmr", "fnir_at_fpir", "calibration", "groups"):
        assert json.dumps(first[key], sort_keys=True) == json.dumps(second[key], sort_keys=True)
    assert first["data"]["fingerprint"] == second["data"]["fingerprint"]


def test_default_gallery_is_half_of_the_people_with_two_images(tiny: Path) -> None:
    dataset = load_dataset(tiny / "faces")
    output = run_evaluation(dataset, out_dir=tiny / "out3", analyzer=PositionAnalyzer(), cache=None,
                            version=VERSION, config=EvaluationConfig(seed=3, n_boot=50), progress=False)
    identification = output.metrics["identification"]
    assert identification["gallery_size"] == 1  # 3 people with 2+ images -> 1 enrolled
    assert "seed 3" in identification["gallery_rule"]
    assert set(output.metrics["fnir_at_fpir"]) == {rate_key(r) for r in (0.01, 0.001, 1 / 6000)} == {
        "0.01", "0.001", "1/6000"}


def test_data_with_no_genuine_pair_still_writes_a_report(tmp_path: Path) -> None:
    for name, value in (("ann/1.png", 1), ("ben/1.png", 3), ("cat/1.png", NO_FACE)):
        _png(tmp_path / "faces" / name, value)
    output = run_evaluation(load_dataset(tmp_path / "faces"), out_dir=tmp_path / "out", analyzer=PositionAnalyzer(),
                            cache=None, version=VERSION, config=EvaluationConfig(n_boot=50), progress=False)
    m = output.metrics
    assert m["verification"]["available"] is False and "no genuine pairs" in m["verification"]["reason"]
    assert m["identification"]["available"] is False
    assert m["eer"] is None and m["fnmr_at_fmr"] == {}
    assert "Not available" in output.report_md.read_text()
    assert output.report_html.is_file()


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="openlfr")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["evaluate", *argv])


def test_cli_refuses_an_empty_folder_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cmd_evaluate(_args("--faces", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))) == 2
    assert "no labelled face images" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-fpir", "2"], "a rate must be in (0, 1)"),
        (["--target-fpir", "one in six thousand"], "not a rate"),
        (["--gallery-size", "0"], "must be >= 1"),
    ],
)
def test_cli_rejects_bad_flags(tmp_path: Path, argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _args("--faces", str(tmp_path), "--out", str(tmp_path / "out"), *argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_parses_rates_as_fractions(tmp_path: Path) -> None:
    args = _args("--faces", str(tmp_path), "--out", str(tmp_path), "--target-fpir", "1/6000", "--prevalence", "1e-5")
    assert math.isclose(args.target_fpir, 1 / 6000) and args.prevalence == 1e-5


# -- per-subject (cohort-normalised) figures: --cohort --------------------------------------------


def _position_cohort(model: str = "fake@positions"):  # noqa: ANN202 - Cohort
    from openlfr.cohort.cohort import CohortFace, make_cohort

    faces = []
    for i, x in enumerate(np.linspace(-2.0, 7.0, 80)):
        v = np.zeros(EMBEDDING_DIM, np.float32)
        v[0] = x
        v[1] = 0.05 * (i % 7)  # a little spread off the line, so no two cohort faces coincide
        faces.append(CohortFace(vector=v, sha256=f"{i:064x}"))
    return make_cohort(faces, model_version=model)


def test_a_cohort_adds_the_per_subject_figures(tiny: Path) -> None:
    from openlfr.cohort.norm import normalise_arrays, score_matrix
    from openlfr.cohort.policy import operating_point

    cohort = _position_cohort()
    dataset = load_dataset(tiny / "faces", attributes=tiny / "attributes.csv")
    output = run_evaluation(
        dataset, out_dir=tiny / "out-cohort", analyzer=PositionAnalyzer(), cache=EmbeddingCache(tiny / "cache", VERSION),
        version=VERSION, config=CONFIG, model_version="fake@positions", progress=False, cohort=cohort,
    )
    m = output.metrics
    n = m["normalised"]
    assert n["available"] and n["cohort"] == cohort.short_id
    # The same pairs and searches as the raw figures, scored differently.
    assert n["verification"]["n_genuine"] == m["verification"]["n_genuine"] == 3
    assert n["verification"]["n_impostor"] == m["verification"]["n_impostor"]
    assert (n["identification"]["n_mated"], n["identification"]["n_nonmated"]) == (2, 3)
    # The operating point is the one a deployment of this size and target would take.
    expected = operating_point(cohort.calibration, watchlist_size=2, target_fpir=CONFIG.target_fpir)
    assert n["operating_point"]["threshold"] == pytest.approx(expected.threshold)
    # ... and its measured FPIR is the share of the three strangers whose best normalised score reaches it.
    norm = cohort.norm()
    refs = np.zeros((2, EMBEDDING_DIM), np.float32)
    refs[:, 0] = [0.0, 1.0]  # a1, b1
    strangers = np.zeros((3, EMBEDDING_DIM), np.float32)
    strangers[:, 0] = [0.5, 5.0, 5.25]  # d1, e1, e2
    mu_r, sd_r = norm.stats_arrays(refs)
    mu_p, sd_p = norm.stats_arrays(strangers)
    z = normalise_arrays(score_matrix(refs, strangers).astype(np.float64), mu_r, sd_r, mu_p, sd_p)
    assert n["operating_point"]["measured_fpir"] == pytest.approx(float((z.max(axis=0) >= expected.threshold).mean()))
    assert n["groups"]["cohort"]["available"]
    report = output.report_md.read_text()
    assert "## Per-subject thresholds (cohort-normalised scores)" in report and cohort.short_id in report


def test_cli_refuses_a_cohort_of_another_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path) -> None:
    path = tmp_path / "cohort.npz"
    _position_cohort(model="another_model@123").save(path)
    code = cmd_evaluate(_args("--faces", str(tiny / "faces"), "--out", str(tmp_path / "out"), "--cohort", str(path)))
    assert code == 2
    err = capsys.readouterr().err
    assert "--cohort" in err and "another_model@123" in err and not (tmp_path / "out").exists()
