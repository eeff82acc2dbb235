"""Sample input the embedded mode can build on a fresh machine from the shared face set.

A watchlist folder (one folder per subject, enrolment photos) and a 1280x720 video in which
people walk across a real arcade scene: two enrolled subjects (photos other than their
enrolment photos) and one person who is not on the watchlist. Running the pipeline on it must
raise exactly one alert per enrolled subject and none for the stranger.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from openlfr.vision.images import load_image

#: subject id -> enrolment photos (relative to the face set).
WATCHLIST = {
    "barack_obama": ("face_recognition/examples/knn_examples/train/obama/obama.jpg",
                     "face_recognition/examples/knn_examples/train/obama/obama2.jpg"),
    "joe_biden": ("face_recognition/examples/knn_examples/train/biden/biden2.jpg",),
    "kit_harington": ("face_recognition/examples/knn_examples/train/kit_harington/john1.jpeg",
                      "face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg"),
}
#: (photo, subject id or None for a stranger) in order of appearance.
WALKERS = (
    ("face_recognition/examples/obama-720p.jpg", "barack_obama"),
    ("face_recognition/examples/lin-manuel-miranda.png", None),
    ("face_recognition/examples/biden.jpg", "joe_biden"),
)
BACKGROUND_VIDEO = "facenet_pytorch/examples/video.mp4"

WIDTH, HEIGHT, FPS = 1280, 720, 25
WALK_S = 2.4
#: Width of each walker's face box in the video, pixels (inter-eye distance about 45 px).
FACE_W = 120


@dataclass(frozen=True, slots=True)
class Samples:
    """Paths of the built sample input and the alerts it should raise."""

    video: Path
    watchlist: Path
    expected_subjects: tuple[str, ...]


def _background(faces_dir: Path) -> np.ndarray:
    """A real scene without the faces of its own pedestrians dominating: blurred lightly."""
    cap = cv2.VideoCapture(str(faces_dir / BACKGROUND_VIDEO))
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        return np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    # Blur the arcade's own pedestrians beyond recognition: the sample's faces are the walkers.
    return cv2.GaussianBlur(cv2.resize(bgr, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), (0, 0), 8)


def _head_and_shoulders(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The photo cropped around its face and scaled so the face box is ``FACE_W`` wide."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    scale = FACE_W / w
    cx = (x1 + x2) / 2
    left, right = int(max(cx - 1.2 * w, 0)), int(min(cx + 1.2 * w, rgb.shape[1]))
    top, bottom = int(max(y1 - 0.8 * w, 0)), int(min(y2 + 1.6 * w, rgb.shape[0]))
    crop = rgb[top:bottom, left:right]
    size = (max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def build_samples(
    faces_dir: Path, out_dir: Path, *, locate: Callable[[np.ndarray], np.ndarray], force: bool = False
) -> Samples:
    """Write the watchlist folder and the video under ``out_dir`` (idempotent).

    ``locate`` gives the face box [x1, y1, x2, y2] of a photo (the analyzer's largest face), so
    each walker is cropped to head and shoulders with a face of a set size.

    Raises:
        FileNotFoundError: the shared face set is not at ``faces_dir``.
    """
    video = out_dir / "walk-by.mp4"
    watchlist = out_dir / "watchlist"
    expected = tuple(s for _, s in WALKERS if s)
    if video.is_file() and watchlist.is_dir() and not force:
        return Samples(video, watchlist, expected)
    missing = [p for p in [*sum(WATCHLIST.values(), ()), *(w for w, _ in WALKERS)] if not (faces_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"sample photos missing under {faces_dir}: {missing}")
    if watchlist.exists():
        shutil.rmtree(watchlist)
    for subject, photos in WATCHLIST.items():
        (watchlist / subject).mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(faces_dir / photo, watchlist / subject / Path(photo).name)
    background = _background(faces_dir)
    tmp = out_dir / "walk-by.tmp.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    try:
        steps = int(WALK_S * FPS)
        for photo, _ in WALKERS:
            rgb = load_image(faces_dir / photo)
            person = _head_and_shoulders(rgb, locate(rgb))
            person = cv2.cvtColor(person, cv2.COLOR_RGB2BGR)[: HEIGHT - 20, : WIDTH // 2]
            ph, pw = person.shape[:2]
            y = (HEIGHT - ph) // 2
            for step in range(steps):
                frame = background.copy()
                x = int(step / (steps - 1) * (WIDTH - pw))
                frame[y : y + ph, x : x + pw] = person
                writer.write(frame)
            for _ in range(FPS // 2):  # half a second of empty scene between walkers
                writer.write(background)
    finally:
        writer.release()
    tmp.replace(video)
    return Samples(video, watchlist, expected)


#: People of the shared set who appear in the sample (enrolled or walking): never in its cohort.
SAMPLE_IDENTITIES = ("Barack_Obama", "Joe_Biden", "Kit_Harington", "Lin-Manuel_Miranda")
#: The shared set's folder of faces of different people, one each.
ONE_PER_PERSON_FOLDER = "utkface_balanced"


def build_sample_cohort(
    faces_dir: Path, out: Path, *, analyzer: object, settings: object, model_version: str, force: bool = False
) -> Path:
    """The demo's background cohort from the shared face set (idempotent): every labelled person
    except the sample's own, plus the UTKFace crops (a person each). Returns the file's path.

    The shared set is a test set, small and mostly of celebrities and cropped faces: enough to
    show the mechanism and to test it, not a cohort for a real deployment (operators build
    theirs with ``openlfr cohort build`` from faces like their cameras see).

    Raises:
        FileNotFoundError: the shared face set or its labels are not at ``faces_dir``.
    """
    from openlfr.cohort.build import CohortInput, embed_cohort, folder_inputs
    from openlfr.cohort.cohort import Cohort
    from openlfr.cohort.exceptions import CohortError
    from openlfr.evaluation.dataset import load_dataset
    from openlfr.evaluation.embeddings import EmbeddingCache, analyzer_version
    from openlfr.paths import build_dir

    if out.is_file() and not force:
        try:
            if Cohort.load(out).fits(model_version, embed_mirror=settings.embed_mirror):  # type: ignore[attr-defined]
                return out
        except CohortError:
            pass  # unreadable or of an old schema: rebuilt below
    labels = faces_dir / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"the shared face set's labels.csv is missing under {faces_dir}")
    dataset = load_dataset(faces_dir, labels=labels)
    inputs = [CohortInput(image.path, image.identity) for image in dataset.images]
    inputs += folder_inputs(faces_dir / ONE_PER_PERSON_FOLDER, one_per_person=True)
    cache = EmbeddingCache(build_dir() / "eval-cache", analyzer_version(settings))
    built = embed_cohort(
        inputs,
        analyzer=analyzer,  # type: ignore[arg-type]
        cache=cache,
        model_version=model_version,
        embed_mirror=settings.embed_mirror,  # type: ignore[attr-defined]
        exclude_identities=SAMPLE_IDENTITIES,
        meta={"source": f"shared face set at {faces_dir} (sample cohort: labelled people but the sample's, "
                        f"and {ONE_PER_PERSON_FOLDER})"},
    )
    built.cohort.save(out)
    return out
