"""Scene crops at the match stage: only the probe of a track that matched has its scene crop
carried on, inside its Match; a passer-by's never reaches a Match (real descriptors, as in
test_match_stage.py: Obama enrolled walks beside a stranger)."""

from __future__ import annotations

import base64

import pytest

from openlfr.messages.codec import encode
from openlfr.messages.models import Embeddings, Match
from openlfr.pipeline.stage import Incoming

from .test_match_stage import FIRST_OFFSET, PARTITION, SIGNER, T0, _face, _frame, _settings, _stage, _store, _walkers
from .test_match_stage import people  # noqa: F401 - the fixture

FRAMES = 8


def _scene(person: str, n: int) -> bytes:
    # A JPEG start-of-image marker and a tag saying whose face of which frame it is.
    return b"\xff\xd8\xff\xe0" + f"scene:{person}:f{n:03d}".encode()


def _walk_with_scenes(people) -> list[Incoming[Embeddings]]:  # noqa: ANN001
    obama, hugh = _walkers(people)
    out = []
    for n in range(FRAMES):
        faces = [
            _face(0, obama[n % len(obama)], (100.0 + 4 * n, 200.0, 220.0 + 4 * n, 340.0))
            .model_copy(update={"scene_jpeg": _scene("obama", n)}),
            _face(1, hugh[n % len(hugh)], (900.0 - 4 * n, 220.0, 1010.0 - 4 * n, 350.0))
            .model_copy(update={"scene_jpeg": _scene("hugh", n)}),
        ]
        out.append(Incoming(_frame(n, faces), PARTITION, FIRST_OFFSET + n))
    return out


@pytest.mark.parametrize("decision", ["votes", "template"])
def test_only_the_matched_probe_carries_its_scene_crop_and_the_strangers_never_leave(people, decision) -> None:  # noqa: F811, ANN001
    stage = _stage(_settings(decision=decision), _store(people))
    outputs = []
    for incoming in _walk_with_scenes(people):
        outputs += stage.handle([incoming], now=T0 + 100).outputs
    matches: list[Match] = [o.message for o in outputs]  # type: ignore[misc]
    assert [m.subject_id for m in matches] == ["Barack_Obama"]
    match = matches[0]
    # The probe's own scene crop: the one of the frame the probe chip comes from, signed with it.
    assert match.scene_jpeg == _scene("obama", int(match.frame_id.removeprefix("f")))
    assert match.v == 3 and SIGNER.verify(match)
    # None of the stranger's scene crops is in any output (on the wire: base64 in the JSON).
    wire = b"".join(encode(o.message) for o in outputs)
    assert base64.b64encode(_scene("obama", int(match.frame_id.removeprefix("f")))) in wire
    for n in range(FRAMES):
        assert base64.b64encode(_scene("hugh", n)) not in wire
