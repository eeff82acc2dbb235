"""The cohort file on real faces of the shared set: split, calibration, save and load, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openlfr.cohort.cohort import MIN_COHORT, Cohort, CohortFace, fingerprint, make_cohort, split_parts
from openlfr.cohort.exceptions import CohortError

MODEL = "dlib_resnet_v1@test"


def test_split_keeps_each_person_on_one_side_and_balances(shared_cohort_faces: list[CohortFace]) -> None:
    parts = split_parts(shared_cohort_faces)
    for person in {f.identity for f in shared_cohort_faces if f.identity}:
        sides = {int(p) for f, p in zip(shared_cohort_faces, parts, strict=True) if f.identity == person}
        assert len(sides) == 1, person
    people = {(f.identity or f.sha256): int(p) for f, p in zip(shared_cohort_faces, parts, strict=True)}
    assert abs(sum(people.values()) - len(people) / 2) <= 1
    # The order the files came in does not matter.
    reordered = split_parts(shared_cohort_faces[::-1])[::-1]
    np.testing.assert_array_equal(parts, reordered)


def test_fingerprint_is_order_free_and_model_bound(shared_cohort_faces: list[CohortFace]) -> None:
    assert fingerprint(shared_cohort_faces, MODEL) == fingerprint(shared_cohort_faces[::-1], MODEL)
    assert fingerprint(shared_cohort_faces, MODEL) != fingerprint(shared_cohort_faces, MODEL + "x")
    assert fingerprint(shared_cohort_faces, MODEL) != fingerprint(shared_cohort_faces[1:], MODEL)


def test_made_cohort_calibrates_from_held_out_pairs(shared_cohort_faces: list[CohortFace]) -> None:
    cohort = make_cohort(shared_cohort_faces, model_version=MODEL)
    n_cal = int((cohort.parts == 1).sum())
    cal = cohort.calibration
    assert cal.n_impostor + cal.n_genuine == n_cal * (n_cal - 1) // 2
    assert cal.n_genuine > 0, "the johns on the calibration side give genuine pairs"
    # Genuine pairs score far above impostors, raw and normalised.
    assert np.median(cal.genuine_raw) > np.quantile(cal.impostor_raw, 0.99)
    assert np.median(cal.genuine_z) > np.quantile(cal.impostor_z, 0.99)
    # A stricter target gives a higher threshold.
    assert cal.z_threshold(1e-5).threshold > cal.z_threshold(1e-3).threshold > cal.z_threshold(1e-2).threshold


def test_save_and_load_round_trip(tmp_path: Path, shared_cohort_faces: list[CohortFace]) -> None:
    cohort = make_cohort(shared_cohort_faces, model_version=MODEL, meta={"source": "test"})
    path = tmp_path / "c.npz"
    cohort.save(path)
    loaded = Cohort.load(path)
    assert loaded.fingerprint == cohort.fingerprint and loaded.model_version == MODEL
    assert loaded.short_id == f"cohort@{cohort.fingerprint[:12]}"
    np.testing.assert_array_equal(loaded.vectors, cohort.vectors)
    np.testing.assert_array_equal(loaded.parts, cohort.parts)
    assert loaded.identities == cohort.identities and loaded.meta["source"] == "test"
    assert loaded.calibration.z_threshold(1e-3).threshold == pytest.approx(cohort.calibration.z_threshold(1e-3).threshold, abs=1e-5)
    probe = shared_cohort_faces[0].vector
    assert loaded.norm().stats(probe) == pytest.approx(cohort.norm().stats(probe))
    assert loaded.norm().cohort_id == cohort.short_id


def test_load_refuses_what_is_not_a_cohort(tmp_path: Path, shared_cohort_faces: list[CohortFace]) -> None:
    with pytest.raises(CohortError, match="--cohort: no cohort file"):
        Cohort.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CohortError, match="not a readable cohort file"):
        Cohort.load(junk, setting="OPENLFR_MATCH_COHORT")
    cohort = make_cohort(shared_cohort_faces, model_version=MODEL)
    old = tmp_path / "old.npz"
    cohort.save(old)
    with np.load(old) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    header["schema"] = "openlfr.cohort/0"
    arrays["header"] = np.array(json.dumps(header))
    np.savez(old, **arrays)
    with pytest.raises(CohortError, match="schema"):
        Cohort.load(old)


def test_a_cohort_is_bound_to_its_model(shared_cohort_faces: list[CohortFace]) -> None:
    cohort = make_cohort(shared_cohort_faces, model_version=MODEL)
    cohort.check_model(MODEL, embed_mirror=True)
    with pytest.raises(CohortError, match="rebuild it with `openlfr cohort build`"):
        cohort.check_model("mobilefacenet@abc", embed_mirror=True)


def test_too_small_a_cohort_is_refused(shared_cohort_faces: list[CohortFace]) -> None:
    with pytest.raises(CohortError, match=f"at least {MIN_COHORT}"):
        make_cohort(shared_cohort_faces[: MIN_COHORT - 1], model_version=MODEL)


def test_subject_with_look_alikes_gets_a_higher_threshold(shared_cohort_faces: list[CohortFace]) -> None:
    """Two real people enrolled against the same cohort: the one whose face has more close
    look-alikes among the cohort's people needs a higher raw score to alert (for the same probe)."""
    strangers = [f for f in shared_cohort_faces if not f.identity]
    cohort_faces, candidates = strangers[:120], strangers[120:]
    cohort = make_cohort(cohort_faces, model_version=MODEL)
    norm = cohort.norm()
    z_star = cohort.calibration.z_threshold(1e-4).threshold
    stats_vectors = norm.vectors

    def look_alikes(face: CohortFace) -> int:
        d = np.linalg.norm(stats_vectors - face.vector[None, :], axis=1)
        return int((1 - d / 2 >= 0.72).sum())

    ranked = sorted(candidates, key=look_alikes)
    sparse, crowded = ranked[0], ranked[-1]
    assert look_alikes(crowded) > look_alikes(sparse)
    probe = norm.stats(ranked[len(ranked) // 2].vector)

    def raw_threshold(face: CohortFace) -> float:
        ref = norm.stats(face.vector)
        # Solve 0.5 * ((s - mu_r) / sd_r + (s - mu_p) / sd_p) = z_star for s.
        return (2 * z_star + ref.mu / ref.sd + probe.mu / probe.sd) / (1 / ref.sd + 1 / probe.sd)

    assert raw_threshold(crowded) > raw_threshold(sparse) + 0.01


def test_a_cohort_embedded_another_way_is_refused_naming_the_setting(shared_cohort_faces) -> None:
    """Its statistics are of its own vectors: with or without mirrored views is part of the model."""
    mirrored = make_cohort(shared_cohort_faces, model_version=MODEL)
    single = make_cohort(shared_cohort_faces, model_version=MODEL, embed_mirror=False)
    assert mirrored.embed_mirror and not single.embed_mirror
    assert mirrored.fingerprint != single.fingerprint
    mirrored.check_model(MODEL, embed_mirror=True)
    assert mirrored.fits(MODEL, embed_mirror=True) and not mirrored.fits(MODEL, embed_mirror=False)
    with pytest.raises(CohortError, match="OPENLFR_EMBED_MIRROR=false.*openlfr cohort build"):
        mirrored.check_model(MODEL, embed_mirror=False, setting="OPENLFR_REGISTRY_COHORT")
    with pytest.raises(CohortError, match="^--cohort: .*without mirrored views"):
        single.check_model(MODEL, embed_mirror=True)


def test_each_view_keeps_its_own_demo_cohort() -> None:
    from openlfr.cohort.cli import default_cohort_path

    assert default_cohort_path("dlib_resnet_v1@abc").name == "default.npz"
    assert default_cohort_path("dlib_resnet_v1@abc", embed_mirror=False).name == "default-single.npz"
    assert default_cohort_path("faceres_v1@abc", embed_mirror=False).name == "default-faceres_v1-single.npz"
