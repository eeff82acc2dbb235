"""Descriptor distances the face tracker has to tell apart: one person from frame to frame, and
two people, measured on the shared face set with the live analyzer; and the tracker replayed
on the composed scenes with ground truth, at the old and the new settings.

Sources (every face through ``openlfr.vision.factory.build_analyzer``, as ``openlfr faces``
and the detect/embed stages run it; only faces at or above the match stage's quality gate,
``MatchSettings.min_quality``, count, since no other face reaches the tracker):

* **videos**: the shared set's videos (``labels.csv`` ``image_kind=video``) sampled at
  ``--fps`` (5 and 10 by default). Faces of successive sampled frames are one person when
  their boxes overlap (IoU >= 0.5, one to one): that gives the frame-to-frame distance, the
  distance from each face to the mean of the earlier faces of its chain (what the tracker's
  track mean holds), and to the chain's first face. Faces in one frame are different people.
* **load test**: the load generator's first camera (``load-tests/loadgen.py``, 1 camera,
  5 fps, 30 s, seed 7): 3 lanes of walkers; the pasted boxes say whose each face is.
* **chokepoint**: :mod:`openlfr.testing.chokepoint` (seed 7, 16 passes at 8 fps, 1 s each,
  0.25 s apart): one person after another at the same spot. Besides frame to frame, it
  gives the distance from one person's last face (and track mean) to the next person's first.
* **shared set**: the largest face of each identity-labelled image (``labels.csv``, linked
  identities merged; the evaluation's embedding cache, ``build/eval-cache``): every pair of
  different photos of one person (genuine) and of two people (impostor).

Then each scene is replayed through ``FaceTracker`` at the old defaults and the new: for the
composed scenes, tracks holding faces of two people (merges) and passes spread over two tracks
(splits); for the videos, which have no truth per face, how many tracks and how many faces sit
in tracks long enough to reach ``min_votes`` (what splitting costs recognition).

Usage: .venv/bin/python benchmarks/tracker_distances.py [--fps 5 10] [--out benchmarks/results/tracker_distances.json]
Frame analyses are cached under ``build/tracker-distances/``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.evaluation.dataset import load_dataset
from openlfr.evaluation.embeddings import EmbeddingCache, analyse_files, analyzer_version
from openlfr.models.build import build_all
from openlfr.pipeline.match import MatchSettings
from openlfr.pipeline.tracker import FaceTracker, Observation, box_iou
from openlfr.testing.chokepoint import build_chokepoint
from openlfr.testing.loadgen import PoolFrame
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import load_image
from openlfr.vision.video import iter_video_frames

FACES = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
CACHE = paths.build_dir() / "tracker-distances"
MIN_QUALITY = float(MatchSettings.model_fields["min_quality"].default)
MIN_VOTES = int(MatchSettings.model_fields["min_votes"].default)
#: Boxes of successive frames overlapping this much are one face (for the videos, which have no truth).
LINK_IOU = 0.5
QUANTILES = (0.5, 0.9, 0.99, 1.0)
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
#: The tracker's settings before this measurement, and now (FaceTracker's defaults).
OLD = {"max_distance": 0.55, "reacquire_distance": 0.4, "check_mean": False}
#: The two closest people among the photos the scenes are made of (0.52 apart): they queue first.
LOOKALIKES = ("deepface/img35.jpg", "deepface/img31.jpg")
CHOKEPOINT = "chokepoint (16 passes, 8 fps, look-alikes first)"


@dataclass(frozen=True, slots=True)
class FrameFaces:
    """The gated faces of one frame: boxes, embeddings and (for composed scenes) whose they are."""

    ts: float
    boxes: np.ndarray
    embeddings: np.ndarray
    quality: np.ndarray
    who: tuple[str, ...]


def analyse_frames(analyzer: FaceAnalyzer | None, name: str,
                   images: Iterable[tuple[float, np.ndarray, Sequence[tuple[str, tuple[float, ...]]]]],
                   key: str) -> list[FrameFaces]:
    """Every frame's faces at or above the quality gate (cached by name and analysis key);
    ``who`` is the truth id of the pasted box a face overlaps (IoU >= 0.5), else "".

    Raises:
        ValueError: the frames are not cached and there is no analyzer.
    """
    path = CACHE / key / f"{name}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    else:
        if analyzer is None:
            raise ValueError(f"{path} is not cached and no analyzer was given")
        rows: dict[str, list] = {k: [] for k in ("frame", "ts", "boxes", "embeddings", "quality", "who")}
        frames = list(images)
        for start in range(0, len(frames), 8):
            chunk = frames[start:start + 8]
            for offset, ((ts, _, truth), faces) in enumerate(zip(chunk, analyzer.analyze_many([f[1] for f in chunk]))):
                for i in range(len(faces)):
                    box = tuple(float(v) for v in faces.boxes[i])
                    ious = [(box_iou(box, tuple(b)), wid) for wid, b in truth]
                    best = max(ious, default=(0.0, ""))
                    rows["frame"].append(start + offset)
                    rows["ts"].append(ts)
                    rows["boxes"].append(box)
                    rows["embeddings"].append(faces.embeddings[i])
                    rows["quality"].append(float(faces.quality.score[i]))
                    rows["who"].append(best[1] if best[0] >= 0.5 else "")
            print(f"  {name}: {min(start + 8, len(frames))}/{len(frames)} frames", file=sys.stderr, flush=True)
        data = {"frame": np.array(rows["frame"], np.int64), "ts": np.array(rows["ts"], np.float64),
                "boxes": np.array(rows["boxes"], np.float32).reshape(-1, 4),
                "embeddings": np.array(rows["embeddings"], np.float32).reshape(-1, 128),
                "quality": np.array(rows["quality"], np.float32), "who": np.array(rows["who"], dtype=str),
                "frames": np.array([len(frames)]), "frame_ts": np.array([f[0] for f in frames], np.float64)}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    out = []
    for index, ts in enumerate(data["frame_ts"]):
        keep = (data["frame"] == index) & (data["quality"] >= MIN_QUALITY)
        out.append(FrameFaces(float(ts), data["boxes"][keep], data["embeddings"][keep], data["quality"][keep],
                              tuple(str(w) for w in data["who"][keep])))
    return out


def dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def link_by_overlap(frames: Sequence[FrameFaces]) -> list[list[tuple[int, int]]]:
    """Chains of (frame, face) whose boxes overlap from one frame to the next (IoU >= LINK_IOU)."""
    chains: list[list[tuple[int, int]]] = []
    open_chains: dict[int, int] = {}  # face index in the previous frame -> chain
    for f, frame in enumerate(frames):
        now: dict[int, int] = {}
        prev = frames[f - 1] if f else None
        pairs = []
        if prev is not None:
            for i in range(len(frame.boxes)):
                for j in open_chains:
                    iou = box_iou(tuple(frame.boxes[i]), tuple(prev.boxes[j]))
                    if iou >= LINK_IOU:
                        pairs.append((-iou, i, j))
        used_i: set[int] = set()
        used_j: set[int] = set()
        for _, i, j in sorted(pairs):
            if i in used_i or j in used_j:
                continue
            used_i.add(i)
            used_j.add(j)
            chains[open_chains[j]].append((f, i))
            now[i] = open_chains[j]
        for i in range(len(frame.boxes)):
            if i not in used_i:
                chains.append([(f, i)])
                now[i] = len(chains) - 1
        open_chains = now
    return chains


def chain_distances(frames: Sequence[FrameFaces], chains: Iterable[list[tuple[int, int]]]) -> dict[str, list[float]]:
    """Frame-to-frame, to-the-mean-so-far and to-the-first distances along each chain."""
    out: dict[str, list[float]] = {"step": [], "to_mean": [], "to_first": []}
    for chain in chains:
        vectors = [frames[f].embeddings[i] for f, i in chain]
        for k in range(1, len(vectors)):
            out["step"].append(dist(vectors[k], vectors[k - 1]))
            out["to_mean"].append(dist(vectors[k], np.mean(vectors[:k], axis=0)))
            out["to_first"].append(dist(vectors[k], vectors[0]))
    return out


def truth_chains(frames: Sequence[FrameFaces]) -> list[list[tuple[int, int]]]:
    """Chains of the faces of each truth id (a walk or pass), in frame order."""
    chains: dict[str, list[tuple[int, int]]] = {}
    for f, frame in enumerate(frames):
        for i, who in enumerate(frame.who):
            if who:
                chains.setdefault(who, []).append((f, i))
    return list(chains.values())


def with_chains(frames: Sequence[FrameFaces], chains: Sequence[list[tuple[int, int]]]) -> list[FrameFaces]:
    """The frames with each face's chain as its truth id (videos: one chain, one person)."""
    who: dict[tuple[int, int], str] = {face: f"c{k}" for k, chain in enumerate(chains) for face in chain}
    return [FrameFaces(frame.ts, frame.boxes, frame.embeddings, frame.quality,
                       tuple(who[(f, i)] for i in range(len(frame.boxes)))) for f, frame in enumerate(frames)]


def same_frame_pairs(frames: Sequence[FrameFaces]) -> list[float]:
    """Distances between two faces of one frame (two people), boxes not overlapping."""
    out = []
    for frame in frames:
        for i in range(len(frame.boxes)):
            for j in range(i + 1, len(frame.boxes)):
                if box_iou(tuple(frame.boxes[i]), tuple(frame.boxes[j])) == 0:
                    out.append(dist(frame.embeddings[i], frame.embeddings[j]))
    return out


def next_person(frames: Sequence[FrameFaces]) -> dict[str, list[float]]:
    """Chokepoint: one pass's last face (and mean) to the next pass's first face."""
    chains = sorted(truth_chains(frames), key=lambda c: c[0][0])
    out: dict[str, list[float]] = {"last_to_next": [], "mean_to_next": []}
    for a, b in zip(chains, chains[1:]):
        last = frames[a[-1][0]].embeddings[a[-1][1]]
        mean = np.mean([frames[f].embeddings[i] for f, i in a], axis=0)
        first = frames[b[0][0]].embeddings[b[0][1]]
        out["last_to_next"].append(dist(last, first))
        out["mean_to_next"].append(dist(mean, first))
    return out


def replay(frames: Sequence[FrameFaces], tracker: FaceTracker) -> dict[str, int]:
    """Run the tracker over a composed scene; merges and splits against the truth."""
    members: dict[str, set[str]] = {}
    sizes: dict[str, int] = {}
    for n, frame in enumerate(frames):
        obs = [Observation(index=i, box=tuple(frame.boxes[i]), embedding=frame.embeddings[i],
                           quality=float(frame.quality[i])) for i in range(len(frame.boxes))]
        update = tracker.update(camera_id="cam", frame_id=f"f{n}", capture_ts=frame.ts, partition=0, offset=n,
                                observations=obs)
        for i, track in enumerate(update.assigned):
            members.setdefault(track.track_id, set()).add(frame.who[i] or "?")
            sizes[track.track_id] = sizes.get(track.track_id, 0) + 1
    truth_ids = {w for frame in frames for w in frame.who if w}
    merged = sum(1 for who in members.values() if len(who - {"?"}) > 1)
    split = sum(1 for w in truth_ids if sum(1 for who in members.values() if w in who) > 1)
    faces = sum(sizes.values())
    voting = sum(n for n in sizes.values() if n >= MIN_VOTES)
    return {"passes": len(truth_ids), "tracks": len(members), "merged_tracks": merged, "split_passes": split,
            "faces": faces, "faces_in_tracks_of_min_votes": voting}


def shared_set(analyzer: FaceAnalyzer, settings: ModelSettings) -> dict[str, list[float]]:
    """Genuine and impostor distances over the identity-labelled images (largest gated face)."""
    dataset = load_dataset(FACES, labels=FACES / "labels.csv")
    cache = EmbeddingCache(paths.build_dir() / "eval-cache", analyzer_version(settings))
    results = analyse_files([image.path for image in dataset.images], analyzer=analyzer, cache=cache)
    ids, vectors = [], []
    for image, result in zip(dataset.images, results, strict=True):
        faces = result.faces
        if faces is None or not len(faces):
            continue
        k = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))
        if faces.quality.score[k] >= MIN_QUALITY:
            ids.append(image.identity)
            vectors.append(faces.embeddings[k])
    v = np.asarray(vectors, np.float64)
    d = np.sqrt(np.maximum(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1), 0.0))
    same = np.array(ids)[:, None] == np.array(ids)[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    return {"genuine": d[same & upper].tolist(), "impostor": d[~same & upper].tolist(),
            "_images": [float(len(ids)), float(len(set(ids)))]}


def summary(values: Sequence[float]) -> dict[str, object]:
    a = np.asarray(values, np.float64)
    out: dict[str, object] = {"n": int(a.size)}
    if a.size:
        out.update({f"p{int(q * 100) if q < 1 else 'max'}": round(float(np.quantile(a, q)), 4) for q in QUANTILES})
        out["min"] = round(float(a.min()), 4)
        out["share_above"] = {f"{t:g}": round(float((a > t).mean()), 5) for t in THRESHOLDS}
        out["share_at_or_below"] = {f"{t:g}": round(float((a <= t).mean()), 5) for t in THRESHOLDS}
    return out


def frames_of_pool(pool: Sequence[PoolFrame], fps: float) -> list[tuple[float, np.ndarray, list]]:
    out = []
    for f in pool:
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append((f.index / fps, rgb, [(face.walk_id, face.box) for face in f.faces]))
    return out


def loadtest_pool() -> tuple[list[PoolFrame], float]:
    """The load generator's first camera as ``load-tests/loadgen.py`` composes it (5 fps, 30 s, seed 7)."""
    sys.path.insert(0, str(paths.REPO_ROOT / "load-tests"))
    import loadgen

    parser = argparse.ArgumentParser()
    loadgen.add_scenario_args(parser)
    with tempfile.TemporaryDirectory() as work:
        scenario = loadgen.build_scenario(parser.parse_args(["--cameras", "1", "--fps", "5", "--pool-s", "30",
                                                             "--seed", "7", "--work-dir", work]))
    return scenario.pools[scenario.cameras[0]], scenario.fps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, nargs="+", default=[5.0, 10.0], help="video sampling rates")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    settings = ModelSettings()
    build_all(settings.model_dir)
    analyzer = build_analyzer(settings)
    key = analyzer_version(settings).key
    videos = [FACES / row for row in (
        "face_recognition/examples/short_hamilton_clip.mp4", "facenet_pytorch/examples/video.mp4",
        "face_api_js/test/media/video.mp4", "dlib/dlib/test/ffmpeg_data/MOT20-05-raw_even_shorter.mp4")]
    same: dict[str, dict[str, list[float]]] = {}
    other: dict[str, dict[str, list[float]]] = {}
    scenes: dict[str, list[FrameFaces]] = {}
    video_scenes: dict[str, list[FrameFaces]] = {}
    for fps in args.fps:
        pooled: dict[str, list[float]] = {"step": [], "to_mean": [], "to_first": []}
        together: list[float] = []
        for video in videos:
            frames = analyse_frames(analyzer, f"{video.parent.name}-{video.stem}@{fps:g}fps",
                                    ((f.time_s, f.image, []) for f in iter_video_frames(video, sample_fps=fps)),
                                    key)
            chains = link_by_overlap(frames)
            for name, values in chain_distances(frames, chains).items():
                pooled[name] += values
            if any(len(c) > 1 for c in chains):
                video_scenes[f"{video.relative_to(FACES)} @ {fps:g} fps"] = with_chains(frames, chains)
            together += same_frame_pairs(frames)
        same[f"videos @ {fps:g} fps"] = pooled
        other[f"videos @ {fps:g} fps: two faces of one frame"] = {"pairs": together}
    if not (CACHE / key / "loadtest@5fps.npz").is_file():
        pool, fps = loadtest_pool()
    else:
        pool, fps = [], 5.0  # cached: the frames are not needed
    scenes["load test (3 lanes, 5 fps)"] = analyse_frames(analyzer, "loadtest@5fps", frames_of_pool(pool, fps), key)

    def locate(rgb: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(rgb)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))] if len(faces) else None

    choke = build_chokepoint(FACES, locate=locate, load=load_image, seed=7, passes=16, enrolled_people=4,
                             queue=LOOKALIKES, fps=8.0)
    scenes[CHOKEPOINT] = analyse_frames(analyzer, "chokepoint@8fps-16passes-seed7-lookalikes", frames_of_pool(choke.frames, choke.fps), key)
    for name, frames in scenes.items():
        same[name] = chain_distances(frames, truth_chains(frames))
        other[f"{name}: two faces of one frame"] = {"pairs": same_frame_pairs(frames)}
    other["chokepoint: next person"] = next_person(scenes[CHOKEPOINT])
    shared = shared_set(analyzer, settings)
    images, identities = shared.pop("_images")
    other[f"shared set ({int(images)} images, {int(identities)} people)"] = shared

    new = FaceTracker()
    replays = {name: {"old": replay(frames, FaceTracker(max_distance=OLD["max_distance"],
                                                        reacquire_distance=OLD["reacquire_distance"],
                                                        check_mean=False)),
                      "new": replay(frames, FaceTracker())} for name, frames in {**scenes, **video_scenes}.items()}
    report = {
        "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                 "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": sys.version.split()[0],
                 "analysis": key, "min_quality": MIN_QUALITY, "video_fps": args.fps, "link_iou": LINK_IOU},
        "same_person": {src: {k: summary(v) for k, v in d.items()} for src, d in same.items()},
        "different_people": {src: {k: summary(v) for k, v in d.items()} for src, d in other.items()},
        "tracker": {"old": OLD, "new": {"max_distance": new.max_distance, "reacquire_distance": new.reacquire_distance,
                                        "check_mean": new.check_mean}, "replays": replays},
    }
    print("\n| one person | measure | n | p50 | p90 | p99 | max |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for src, d in report["same_person"].items():
        for k, s in d.items():
            if s["n"]:
                print(f"| {src} | {k} | {s['n']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['pmax']} |")
    print("\n| two people | measure | n | min | p50 | share <= 0.35 / 0.40 / 0.45 / 0.55 |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for src, d in report["different_people"].items():
        for k, s in d.items():
            if s["n"]:
                b = s["share_at_or_below"]
                print(f"| {src} | {k} | {s['n']} | {s['min']} | {s['p50']} | "
                      f"{b['0.35']:.4f} / {b['0.4']:.4f} / {b['0.45']:.4f} / {b['0.55']:.4f} |")
    print("\n| scene | settings | passes | tracks | merged tracks | split passes | faces in tracks of "
          f">= {MIN_VOTES} |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in replays.items():
        for which, row in r.items():
            truth = name in scenes
            print(f"| {name} | {which} | {row['passes'] if truth else '-'} | {row['tracks']} | "
                  f"{row['merged_tracks'] if truth else '-'} | {row['split_passes'] if truth else '-'} | "
                  f"{row['faces_in_tracks_of_min_votes']}/{row['faces']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
