"""``openlfr evaluate`` on the shared face set through the real models (the live analyzer).

Runs the whole command (parser, analyzer build, every image through detect -> landmarks ->
chip -> embed with a fresh cache, figures, plots, reports) on the shared set's labelled images
plus its UTKFace crops with their demographics, and checks that the outputs are there and
their numbers are sane. About a minute on two cores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
import subprocess
import sys
from typing import Any

import pytest

from openlfr.evaluation.dataset import shared_set_tables, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def evaluation(faces_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    work = tmp_path_factory.mktemp("evaluate")
    labels, attributes = shared_set_tables(faces_dir)
    write_csv(work / "labels.csv", labels, ["path", "identity", "image_kind"])
    write_csv(work / "attributes.csv", attributes, ["path", "subset", "image_kind", "sex", "ethnicity", "age_band"])
    done = subprocess.run([
        sys.executable, "-m", "openlfr.cli", "evaluate", "--faces", str(faces_dir),
        "--labels", str(work / "labels.csv"), "--attributes", str(work / "attributes.csv"),
        "--out", str(work / "out"), "--cache", str(work / "cache"), "--model-dir", str(model_dir),
        "--bootstrap", "300", "--no-progress",
    ], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "out", json.loads((work / "out" / "metrics.json").read_text())


def test_every_output_file_is_written(evaluation) -> None:
    out, metrics = evaluation
    for name in ("metrics.json", "report.md", "report.html", "calibration.json"):
        assert (out / name).stat().st_size > 0, name
    for plot in metrics["plots"].values():
        assert (out / plot["file"]).stat().st_size > 1000, plot
    assert {"det_verification", "scores", "det_identification", "fpir_vs_gallery_0", "fmr_by_ethnicity"} <= set(
        metrics["plots"])
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/svg+xml;base64,') == len(metrics["plots"])
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_inputs_are_accounted_for(evaluation) -> None:
    _, m = evaluation
    inputs = m["inputs"]
    assert inputs["images"] == 786 + 499
    assert inputs["used"] + sum(inputs["failed"].values()) == inputs["images"]
    assert sum(inputs["failed"].values()) <= 0.01 * inputs["images"]  # stated failure to enrol: under 2%
    assert inputs["merged_identities"] == {
        "deepface/person_01": "Angelina_Jolie", "deepface/person_02": "Jennifer_Aniston",
        "deepface/person_12": "Leonardo_DiCaprio"}
    assert inputs["single_image_identities"] >= 499 - 2
    assert inputs["cache"]["misses"] == inputs["images"]  # a fresh cache: every image through the models
    assert m["model"]["version"].startswith("dlib_resnet_v1@") and len(m["data"]["fingerprint"]) == 64


def test_headline_figures_are_sane(evaluation) -> None:
    _, m = evaluation
    assert 0.0 < m["eer"] < 0.2
    assert 0.5 < m["eer_threshold"] < 0.9
    assert set(m["fnmr_at_fmr"]) == {"0.001", "0.0001"}
    for point in m["fnmr_at_fmr"].values():
        assert point["achievable"] and 0.0 <= point["fnmr"] <= 1.0 and point["fmr"] <= point["target_fmr"]
    assert set(m["fnir_at_fpir"]) == {"0.01", "0.001", "1/6000"}
    assert m["fnir_at_fpir"]["0.01"]["achievable"]  # several hundred non-mated searches resolve 1%
    fnirs = [m["fnir_at_fpir"][k]["fnir"] for k in ("0.01", "0.001", "1/6000")]
    assert fnirs == sorted(fnirs)  # a lower FPIR costs misses
    assert m["rank1"] > 0.8
    assert m["gallery_size"] == 27  # half of the 55 identities with 2+ usable images


def test_groups_report_fmr_where_only_impostors_exist(evaluation) -> None:
    _, m = evaluation
    ethnicity = m["groups"]["ethnicity"]["values"]
    assert set(ethnicity) == {"Asian", "Black", "Indian", "Others", "White"}
    for figures in ethnicity.values():
        v = figures["verification"]
        assert v["n_genuine"] == 0 and v["fnmr"] is None and "no genuine pairs" in figures["warning"]
        assert v["n_impostor"] > 4000 and 0.0 <= v["fmr_ci"][0] <= v["fmr"] <= v["fmr_ci"][1]
    assert m["groups"]["ethnicity"]["disparity"]["fmr_worst"] is not None
    subset = m["groups"]["subset"]["values"]
    assert subset["glint360k_celebs"]["verification"]["n_genuine"] > 1000
    assert "too few people" in subset["facenet_pytorch"]["warning"]


def test_calibration_is_a_deployable_threshold(evaluation) -> None:
    out, m = evaluation
    c = m["calibration"]
    written = json.loads((out / "calibration.json").read_text())
    assert c["available"] and 0.5 < c["threshold"] < 1.0
    assert written["threshold"] == c["threshold"] and written["model_version"] == m["model"]["version"]
    assert c["gallery_size"] == m["gallery_size"] and c["target_fpir"] == pytest.approx(1 / 6000)
    assert 0.0 <= c["expected_tpir"] <= 1.0
    assert 0.0 < c["wrong_alert_share"] < 1.0
    assert m["tracks"]["available"] and m["fpir_vs_gallery_size"]["available"]
