"""The chokepoint scene: who passes in which order, one face at a time at one spot, ground truth."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from openlfr.pipeline.tracker import box_iou
from openlfr.testing.chokepoint import Chokepoint, Passer, cast_with, choose_passers, compose_chokepoint
from openlfr.testing.loadgen import HEIGHT, WIDTH, Person

PEOPLE = [Person(f"p{k}", tuple(Path(f"/faces/p{k}/{i}.jpg") for i in range(3 if k < 4 else 1))) for k in range(8)]
BACKGROUND = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)


def _passer(person: str, colour: int, enrolled: bool = False) -> Passer:
    rgb = np.full((400, 300, 3), colour, np.uint8)
    rgb[100:260, 70:230] = 255 - colour  # the "face"
    return Passer(person, enrolled, Path(f"/faces/{person}.jpg"), rgb, (70.0, 100.0, 230.0, 260.0))


def test_cast_with_enrols_the_named_people_with_their_first_photo() -> None:
    cast = cast_with(PEOPLE, ["p1", "p3"])
    assert cast.enrolled == {"p1": PEOPLE[1].photos[:1], "p3": PEOPLE[3].photos[:1]}
    assert all(photo not in cast.enrolled.get(pid, ()) for pid, photo, _ in cast.walkers)
    with pytest.raises(ValueError, match="p5"):
        cast_with(PEOPLE, ["p5"])  # one photo: nothing left to walk with


def test_the_queue_passes_first_then_everyone_enrolled_and_strangers_nobody_twice() -> None:
    cast = cast_with(PEOPLE, ["p1", "p3"])
    queue = [PEOPLE[6].photos[0], PEOPLE[1].photos[2]]
    chosen = choose_passers(cast, seed=3, passes=6, queue=queue)
    assert [(p, photo) for p, photo, _ in chosen[:2]] == [("p6", queue[0]), ("p1", queue[1])]
    people = [p for p, _, _ in chosen]
    assert len(people) == len(set(people)) == 6 and "p3" in people
    assert [e for p, _, e in chosen] == [p in ("p1", "p3") for p in people]
    assert chosen == choose_passers(cast, seed=3, passes=6, queue=queue)


@pytest.mark.parametrize(
    ("passes", "queue", "message"),
    [
        (1, (), "passes=1"),  # fewer than the enrolled people
        (9, (), "passes=9"),  # more than the people
        (4, (PEOPLE[1].photos[0],), "not a walking photo"),  # p1's enrolment photo
        (4, (PEOPLE[2].photos[1], PEOPLE[2].photos[2]), "twice"),
    ],
)
def test_impossible_queues_are_refused(passes, queue, message) -> None:
    with pytest.raises(ValueError, match=message):
        choose_passers(cast_with(PEOPLE, ["p1", "p3"]), seed=1, passes=passes, queue=queue)


def test_one_face_at_a_time_at_one_spot_growing_then_a_gap() -> None:
    passers = [_passer("a", 30, enrolled=True), _passer("b", 90), _passer("c", 150)]
    passes, frames = compose_chokepoint(passers=passers, background=BACKGROUND, fps=8, pass_s=1.0, gap_s=0.25)
    assert [(p.pass_id, p.person_id, p.start, p.frames) for p in passes] == [
        ("p00", "a", 4, 8), ("p01", "b", 14, 8), ("p02", "c", 24, 8)]
    assert len(frames) == 34 and [f.index for f in frames] == list(range(34))
    on = {f.index: f.faces for f in frames if f.faces}
    assert sorted(on) == [i for p in passes for i in range(p.start, p.start + p.frames)]
    assert all(len(faces) == 1 for faces in on.values())
    widths = [on[i][0].box[2] - on[i][0].box[0] for i in range(4, 12)]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    first_boxes = [on[p.start][0].box for p in passes]
    assert all(box_iou(x, y) > 0.9 for x, y in zip(first_boxes, first_boxes[1:]))
    assert [on[p.start][0].walk_id for p in passes] == ["p00", "p01", "p02"]
    again = compose_chokepoint(passers=passers, background=BACKGROUND, fps=8, pass_s=1.0, gap_s=0.25)[1]
    assert [f.jpeg for f in frames] == [f.jpeg for f in again]


def test_truth_and_source_give_the_frames_their_capture_times() -> None:
    passes, frames = compose_chokepoint(passers=[_passer("a", 30, True), _passer("b", 90)], background=BACKGROUND,
                                        fps=5, pass_s=0.6, gap_s=0.2)
    scene = Chokepoint(fps=5, passes=tuple(passes), frames=tuple(frames), enrolled={})
    truth = scene.truth("cam", 100.0)
    assert {k: (a.person_id, a.first_ts, a.last_ts, a.frames) for (_, k), a in truth.appearances.items()} == {
        "p00#0": ("a", 100.4, 100.8, 3), "p01#0": ("b", 101.2, 101.6, 3)}
    read = list(scene.source(100.0).frames(threading.Event()))
    assert [round(f.capture_ts, 6) for f in read] == [round(100.0 + i / 5, 6) for i in range(len(frames))]
    assert read[0].image.shape == (HEIGHT, WIDTH, 3)
