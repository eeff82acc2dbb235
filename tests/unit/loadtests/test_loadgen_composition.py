"""Frame composition of the load generator: deterministic with a seed, faces where the truth says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from openlfr.testing.loadgen import (
    HEIGHT,
    LANES,
    WIDTH,
    Sprite,
    Walk,
    choose_cast,
    compose_pool,
    make_sprite,
    plan_walks,
    render_frame,
    Person,
)
from pathlib import Path


def _sprite(person: str, enrolled: bool, colour: int) -> Sprite:
    image = np.full((200, 180, 3), colour, np.uint8)
    image[40:150, 35:145] = 255 - colour  # the "face"
    return Sprite(person, enrolled, image, (35.0, 40.0, 145.0, 150.0))


SPRITES = [_sprite("alice", True, 30), _sprite("bob", False, 90), _sprite("carol", True, 150)]
BACKGROUND = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)


def _pool(seed: int):
    return compose_pool(camera="cam-a", background=BACKGROUND, sprites=SPRITES, seed=seed, fps=5, pool_s=12,
                        walk_s=2.0, enrolled_share=0.5)


def test_same_seed_same_pool_byte_for_byte_and_another_seed_differs() -> None:
    first, again, other = _pool(3), _pool(3), _pool(4)
    assert [f.jpeg for f in first] == [f.jpeg for f in again]
    assert [f.faces for f in first] == [f.faces for f in again]
    assert [f.faces for f in first] != [f.faces for f in other]


def test_faces_are_pasted_where_the_truth_says() -> None:
    walks = plan_walks(camera="cam-a", sprites=SPRITES, rng=np.random.default_rng(1), fps=5, pool_frames=60,
                       walk_s=2.0, enrolled_share=0.5)
    seen = 0
    for index in range(60):
        image, faces = render_frame(BACKGROUND, SPRITES, walks, index)
        for face in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in face.box)
            assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
            sprite = next(s for s in SPRITES if s.person_id == face.person_id)
            assert face.enrolled == sprite.enrolled
            # The face region holds the sprite's face colour, not the background.
            patch = image[y1 + 5:y2 - 5, x1 + 5:x2 - 5]
            assert (patch == 255 - sprite.image[0, 0, 0]).all()
            seen += 1
    assert seen > 0


def test_a_walk_stays_in_its_lane_moves_across_and_lasts_its_frames() -> None:
    walk = Walk("cam/w0", 0, 1, start=10, frames=5, left_to_right=True)
    xs = [walk.position(f, 180) for f in range(9, 16)]
    assert xs[0] is None and xs[-1] is None
    assert xs[1:6] == sorted(xs[1:6]) and xs[1] == 0 and xs[5] == WIDTH - 180
    _, faces = render_frame(BACKGROUND, SPRITES, [walk], 12)
    lane_h = HEIGHT // LANES
    assert len(faces) == 1 and lane_h <= faces[0].box[1] and faces[0].box[3] <= 2 * lane_h


@pytest.mark.parametrize(("share", "want_enrolled", "want_strangers"), [(0.0, False, True), (1.0, True, False)])
def test_enrolled_share_decides_who_walks(share: float, want_enrolled: bool, want_strangers: bool) -> None:
    walks = plan_walks(camera="c", sprites=SPRITES, rng=np.random.default_rng(0), fps=5, pool_frames=200,
                       walk_s=2.0, enrolled_share=share)
    kinds = {SPRITES[w.sprite].enrolled for w in walks}
    assert (True in kinds) == want_enrolled and (False in kinds) == want_strangers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nobody_walks_twice_at_once_nor_again_within_the_track_gap(seed: int) -> None:
    from openlfr.testing.loadgen import SAME_PERSON_GAP_S

    fps = 5
    walks = plan_walks(camera="c", sprites=SPRITES, rng=np.random.default_rng(seed), fps=fps, pool_frames=300,
                       walk_s=2.0, enrolled_share=0.5)
    by_person: dict[str, list[Walk]] = {}
    for w in walks:
        by_person.setdefault(SPRITES[w.sprite].person_id, []).append(w)
    assert len(by_person) == 3 and {w.lane for w in walks} == set(range(LANES))
    for passes in by_person.values():
        passes.sort(key=lambda w: w.start)
        for a, b in zip(passes, passes[1:]):
            assert b.start - (a.start + a.frames - 1) > SAME_PERSON_GAP_S * fps


def test_one_person_alone_walks_one_lane_at_a_time() -> None:
    alone = [_sprite("alice", True, 30)]
    walks = plan_walks(camera="c", sprites=alone, rng=np.random.default_rng(0), fps=5, pool_frames=200,
                       walk_s=2.0, enrolled_share=0.5)
    assert len(walks) >= 3
    for a, b in zip(walks, walks[1:]):
        assert b.start >= a.start + a.frames


def test_make_sprite_scales_the_face_to_the_set_width_and_fits_a_lane() -> None:
    rgb = np.zeros((1000, 800, 3), np.uint8)
    sprite = make_sprite(rgb, (300, 300, 500, 520), person_id="p", enrolled=False, face_w=110)
    x1, _, x2, _ = sprite.face_box
    assert abs((x2 - x1) - 110) < 1.0
    assert sprite.image.shape[0] < HEIGHT // LANES


def test_choose_cast_enrols_first_photos_and_walks_the_rest() -> None:
    people = [Person(f"p{i}", tuple(Path(f"/x/p{i}_{j}.jpg") for j in range(1 + i % 3))) for i in range(6)]
    cast = choose_cast(people, seed=5, enrolled_people=2)
    assert len(cast.enrolled) == 2
    for person_id, photos in cast.enrolled.items():
        walking = [p for pid, p, e in cast.walkers if pid == person_id]
        assert all(e for pid, _, e in cast.walkers if pid == person_id)
        assert photos[0] not in walking and walking  # never walks by with the enrolment photo
    assert choose_cast(people, seed=5, enrolled_people=2) == cast
    with pytest.raises(ValueError, match="enrolled_people"):
        choose_cast(people, seed=5, enrolled_people=10)


def test_background_must_be_720p() -> None:
    with pytest.raises(ValueError, match="background"):
        render_frame(cv2.resize(BACKGROUND, (640, 360)), SPRITES, [], 0)
