"""The match stage: faces of frames -> tracks -> track-level watchlist decisions.

For each ``Embeddings`` message, the deployment gate (``openlfr.pipeline.deployments``) is
asked which deployment covers its camera at its capture time. With none, the frame is dropped
(``no_deployment``): its faces are not searched, not tracked, not kept. Otherwise, per face:

1. faces below the quality gate are dropped (counted ``low_quality``) and not tracked;
2. the store is searched for the two nearest subjects on the deployment's watchlists, as they
   were when it was authorised (references enrolled later are not searched: the snapshot),
   with their reference vectors and cohort statistics;
3. the face joins a track (``FaceTracker``, event time);
4. the track decides (``decision``):

   * ``template`` (the default): the face is offered to its track's template, the
     quality-weighted mean of the track's best ``template_faces`` faces
     (``openlfr.pipeline.templates``). Once it holds ``min_votes`` faces, and whenever a better
     face enters it, the template is scored against the references its faces' searches found;
     it matches the nearest subject when the score reaches the deployment's threshold, the
     runner-up is ``min_margin_distance`` behind, and, for a deployment with per-subject
     thresholds, the score normalised against the background cohort (``openlfr.cohort``)
     reaches the deployment's normalised threshold;
   * ``votes``: a frame votes for a subject when that subject is its top hit within the
     threshold (and the margin, and the normalised threshold where there is one); the track
     matches once ``min_votes`` frames voted for the subject.

A track yields one ``Match`` per subject. Its probe is the best-quality face (of the template,
or of the voting frames): ``frame_id``, ``capture_ts``, ``trace_id`` and chip are the probe's.
``score`` is ``1 - distance / 2`` clipped to 0..1 (of the template, or of the probe) and
``threshold`` is the deployment's (a score); ``margin`` is the score minus the runner-up
subject's (1.0 when there is none); ``normalised_score``/``normalised_threshold``/``cohort``
are set for per-subject thresholds. A reference without statistics from the loaded cohort never
matches under per-subject thresholds (counted ``openlfr_match_unnormalised_total``). The Match
names its deployment and carries the watchlist reference's chip, so reviewers see the probe
beside the image it matched.

What is kept about people who match no one: nothing is written anywhere. In memory, while a
track is open, it holds its last embedding and the sum of its embeddings (the tracker), its
best ``template_faces`` faces' embeddings, chips and scene crops and the references its searches
found (template decision; with votes, chips and scene crops only of faces with a candidate hit).
A probe's chip and scene crop leave only inside a Match, so only a face that matched has its
scene crop go further than the embeddings topic. Everything goes when the track ends.

Restarts: ``hold`` is, per partition, the first-frame offset of the oldest open track, so the
runner's committed offset lets a restarted stage replay every open track's frames. Tracks and
votes are deterministic in the input order, so the replay gives the same track ids and the
same decisions (alert ids are derived from them, and the alert stage drops repeats).

Re-delivery: a batch the runner hands over again because its outputs were not acknowledged
gives the outcome it gave the first time (``openlfr.pipeline.redelivery``: the Matches of the
latest batch per partition are kept until the next batch moves past them), with no state
changed twice. Any other message already applied (an offset at or below the last one applied
on its partition, or a frame id the camera sent before) is dropped as ``duplicate``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from openlfr.cohort.norm import ScoreNorm, normalise
from openlfr.messages.models import EmbeddedFace, Embeddings, Match
from openlfr.messages.signing import MatchSigner
from openlfr.messages.topics import EMBEDDINGS, MATCHES
from openlfr.pipeline.deployments import ActiveDeployment, DeploymentGate
from openlfr.pipeline.event_time import DEFAULT_MAX_CLOCK_SKEW_S, FutureGuard
from openlfr.pipeline.exceptions import PoisonMessage
from openlfr.pipeline.frame_parts import FrameAssembler, AssemblerState
from openlfr.pipeline.match_metrics import MatchMetrics
from openlfr.prom import metrics_for
from openlfr.pipeline.match_settings import MatchSettings
from openlfr.pipeline.redelivery import Outcome, RedeliveryCache
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage
from openlfr.pipeline.templates import TemplateFace, TrackTemplate
from openlfr.pipeline.tracker import FaceTracker, Observation, Track
from openlfr.watchlist.store import SearchHit, VectorStore

logger = logging.getLogger(__name__)

#: Subjects asked of the store per face: the best and the runner-up for the margin.
SEARCH_LIMIT = 2
#: Frame ids remembered per camera to drop a frame delivered twice.
RECENT_FRAMES = 64


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A face's vote: the top subject and how far ahead of the runner-up it is."""

    hit: SearchHit
    runner_up: SearchHit | None
    chip_jpeg: bytes
    normalised: float | None = None
    scene_jpeg: bytes | None = None

    @property
    def margin(self) -> float:
        if self.runner_up is None:
            return 1.0
        return float(np.clip(self.hit.score - self.runner_up.score, -1.0, 1.0))


@dataclass(frozen=True, slots=True)
class _Probe:
    deployment: ActiveDeployment
    quality: float
    frame_id: str
    capture_ts: float
    trace_id: str
    candidate: _Candidate


@dataclass(slots=True)
class _Votes:
    count: int
    probe: _Probe | None
    published: bool = False


@dataclass(slots=True)
class _TemplateState:
    template: TrackTemplate
    deployment_id: str
    published: set[str] = field(default_factory=set)
    #: subjects whose threshold the template came within the look-alike margin of
    near: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _PlannedFace:
    face: EmbeddedFace
    vector: np.ndarray
    candidate: _Candidate | None
    hits: tuple[SearchHit, ...] = ()
    chip_jpeg: bytes | None = None


@dataclass(frozen=True, slots=True)
class _FramePlan:
    """A frame to apply: the frame (put together from its parts), its first offset, its faces."""

    frame: Incoming[Embeddings]
    first_offset: int
    faces: list[_PlannedFace]
    deployment: ActiveDeployment


@dataclass(frozen=True, slots=True)
class _Step:
    """One input of a batch: its outcome, and the frames it completes, to apply (a part of a
    crowded frame may complete none, and may end the wait for an earlier frame's lost parts)."""

    incoming: Incoming[Embeddings]
    outcome: Outcome
    frames: list[_FramePlan] = field(default_factory=list)
    replayed: bool = False


class MatchStage(Stage[Embeddings]):
    """Embeddings -> Matches, one per track and subject.

    Args:
        settings: voting, quality and tracker settings.
        store: the watchlist's vector store (closed by ``close``).
        gate: which deployment covers a frame (watchlists, threshold, snapshot).
        registry: where the per-deployment counters are registered.
        norm: the background cohort's normaliser (``openlfr.cohort``). A deployment with a
            normalised threshold needs it: without it, or for a reference stored without
            statistics from this cohort, no face is matched (counted in
            ``openlfr_match_unnormalised_total``), since no threshold could be justified.
        signer: signs every Match (``OPENLFR_MATCH_SIGNING_KEY``), so the alert stage can tell
            them from records anyone else wrote on the matches topic.
        max_clock_skew_s: an input whose capture time is more than this ahead of the stage's
            clock is dead-lettered before it reaches the tracker (``openlfr.pipeline.event_time``):
            trusted, it would end every track of its partition and keep its camera's tracks from
            ever growing. None turns the check off (files replayed faster than real time).
    """

    name = "match"
    input_topic = EMBEDDINGS
    output_topics = (MATCHES,)
    input_model = Embeddings
    output_topic = MATCHES

    def __init__(
        self,
        settings: MatchSettings,
        *,
        store: VectorStore,
        gate: DeploymentGate,
        signer: MatchSigner,
        registry: CollectorRegistry | None = None,
        norm: ScoreNorm | None = None,
        max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gate = gate
        self.norm = norm
        self.signer = signer
        self._metrics = metrics_for(MatchMetrics, registry)
        self._future = FutureGuard(stage=self.name, max_skew_s=max_clock_skew_s, registry=registry)
        self.tracker = FaceTracker(
            max_gap_s=settings.track_max_gap_s,
            max_track_s=settings.track_max_s,
            min_iou=settings.track_min_iou,
            max_distance=settings.track_max_distance,
            reacquire_distance=settings.track_reacquire_distance,
            camera_idle_s=settings.track_camera_idle_s,
        )
        self._votes: dict[str, dict[str, _Votes]] = {}
        self._templates: dict[str, _TemplateState] = {}
        self._near_misses: dict[str, dict[str, int]] = {}
        self._near_misses_lock = threading.Lock()  # the HTTP thread reads what the stage writes
        self._applied: dict[int, int] = {}
        self._recent: dict[str, deque[str]] = {}
        self._redelivery = RedeliveryCache()
        self._parts = FrameAssembler(max_wait_s=settings.track_max_gap_s)

    def handle(self, batch: Sequence[Incoming[Embeddings]], *, now: float) -> BatchResult:
        """Search every face first, then change state: a store failure (``BackendUnavailable``)
        leaves the stage as it was, so the runner can retry the same batch. An input handled
        before (the runner re-delivers a batch whose outputs were not acknowledged) gives
        the outcome it gave then, without counting its faces again."""
        result = BatchResult()
        steps, parts = self._plan(batch, now=now)
        self._parts.commit(parts)
        self._redelivery.forget_before(batch)
        for step in steps:
            if not step.replayed:
                for plan in step.frames:
                    self._apply(plan, step.outcome)
                self._redelivery.put(step.incoming, step.outcome)
            step.outcome.add_to(result, step.incoming)
        result.hold = self.tracker.hold()
        for partition, offset in self._parts.hold().items():  # frames still waiting for parts
            result.hold[partition] = min(offset, result.hold.get(partition, offset))
        return result

    # -- phase 1: read only ------------------------------------------------------------------

    def _plan(self, batch: Sequence[Incoming[Embeddings]], *, now: float) -> tuple[list[_Step], AssemblerState]:
        applied = dict(self._applied)
        recent: dict[str, set[str]] = {}
        parts = self._parts.begin()
        steps: list[_Step] = []
        for incoming in batch:
            replay = self._redelivery.get(incoming)
            if replay is not None:
                steps.append(_Step(incoming, replay, replayed=True))
                continue
            step = _Step(incoming, Outcome())
            assembly = self._parts.add(parts, incoming)
            if assembly.duplicate:
                step.outcome.drop("duplicate")
            for frame in assembly.frames:
                if frame.partial:
                    step.outcome.drop("partial_frame")
                # The input's own frame takes its outcome; an earlier frame whose wait for lost
                # parts it ended adds its outputs and counts (its rejection only as a count).
                own = frame.incoming.offset == incoming.offset
                outcome = step.outcome if own else Outcome()
                plan = self._plan_frame(frame.incoming, frame.first_offset, outcome, applied, recent, now=now)
                if not own:
                    step.outcome.outputs.extend(outcome.outputs)
                    for reason, count in outcome.dropped.items():
                        step.outcome.drop(reason, count)
                    if outcome.rejected is not None:
                        step.outcome.drop("rejected_partial_frame")
                if plan is not None:
                    step.frames.append(plan)
            steps.append(step)
        return steps, parts

    def _plan_frame(
        self,
        incoming: Incoming[Embeddings],
        first_offset: int,
        outcome: Outcome,
        applied: dict[int, int],
        recent: dict[str, set[str]],
        now: float,
    ) -> _FramePlan | None:
        """Search one frame's faces (read only): what to apply, or None (the outcome says why)."""
        message = incoming.message
        deployment = self.gate.active_for(message.camera_id, message.capture_ts)
        if deployment is None:
            # No deployment authorises matching here and now: nothing is searched or kept.
            outcome.drop("no_deployment")
            return None
        # After the gate, so only cameras a deployment covers are counted (a bounded label set).
        ahead = self._future.refuse(camera_id=message.camera_id, capture_ts=message.capture_ts, now=now)
        if ahead is not None:
            outcome.rejected = ahead
            return None
        seen = recent.setdefault(message.camera_id, set(self._recent.get(message.camera_id, ())))
        last = applied.get(incoming.partition)
        # A frame put together from parts is applied when its last part comes, which may be
        # after later frames of other cameras: its parts' offsets were checked on arrival.
        seek_back = last is not None and incoming.offset <= last and first_offset == incoming.offset
        if seek_back or message.frame_id in seen:
            # Already in the state (a seek back past the latest batch, or a frame sent twice).
            outcome.drop("duplicate")
            return None
        pinned = self.store.model_version
        if pinned is not None and message.embedder_model != pinned:
            # Vectors of another embedder are not comparable with the watchlist's: never searched.
            outcome.rejected = (f"embedder_model {message.embedder_model!r} is not the watchlist's "
                                f"{pinned!r}: the embed and match services run different embedders")
            return None
        indexes = [face.index for face in message.faces]
        if len(set(indexes)) != len(indexes):
            outcome.rejected = f"face indexes repeat within the frame: {indexes}"
            return None
        faces: list[_PlannedFace] = []
        try:
            for face in message.faces:
                if face.quality.score < self.settings.min_quality:
                    outcome.drop("low_quality")
                    continue
                vector = face.vector()
                hits = self.store.search(
                    vector,
                    limit=SEARCH_LIMIT,
                    watchlist_ids=deployment.watchlist_ids,
                    enrolled_before=deployment.snapshot_ts,
                )
                if self.settings.decision == "template":
                    faces.append(_PlannedFace(face, vector, None, tuple(hits), self._chip_jpeg(face)))
                else:
                    faces.append(_PlannedFace(face, vector, self._candidate(face, vector, hits, deployment)))
        except PoisonMessage as exc:
            outcome.rejected = str(exc)
            return None
        applied[incoming.partition] = max(incoming.offset, applied.get(incoming.partition, incoming.offset))
        seen.add(message.frame_id)
        return _FramePlan(incoming, first_offset, faces, deployment)

    def _candidate(
        self, face: EmbeddedFace, vector: np.ndarray, hits: Sequence[SearchHit], deployment: ActiveDeployment
    ) -> _Candidate | None:
        if not hits or hits[0].distance > deployment.max_distance:
            return None
        runner_up = hits[1] if len(hits) > 1 else None
        if runner_up is not None and runner_up.distance - hits[0].distance < self.settings.min_margin_distance:
            return None
        normalised = None
        if deployment.norm_threshold is not None:
            normalised = self._normalised(vector, hits[0], deployment)
            if normalised is None or normalised < deployment.norm_threshold:
                return None
        return _Candidate(hit=hits[0], runner_up=runner_up, chip_jpeg=self._chip_jpeg(face), normalised=normalised,
                          scene_jpeg=face.scene_jpeg)

    def _normalised(self, vector: np.ndarray, hit: SearchHit, deployment: ActiveDeployment) -> float | None:
        """The top hit's score normalised by the reference's and the probe's cohort statistics;
        None (counted) when either cannot be had: then no threshold can be justified."""
        if self.norm is None:
            self._metrics.unnormalised.labels(deployment.deployment_id, "no_cohort").inc()
            return None
        if hit.norm is None or hit.norm_cohort != self.norm.cohort_id:
            self._metrics.unnormalised.labels(deployment.deployment_id, "reference_without_stats").inc()
            return None
        return float(normalise(hit.score, hit.norm, self.norm.stats(vector)))

    def _chip_jpeg(self, face: EmbeddedFace) -> bytes:
        chip = cv2.imdecode(np.frombuffer(face.chip_png, np.uint8), cv2.IMREAD_COLOR)
        if chip is None:
            raise PoisonMessage(f"face {face.index}: chip_png is not a decodable image")
        ok, jpeg = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, self.settings.probe_jpeg_quality])
        if not ok:
            raise PoisonMessage(f"face {face.index}: chip could not be encoded as JPEG")
        return jpeg.tobytes()

    # -- phase 2: state ----------------------------------------------------------------------

    def _apply(self, plan: _FramePlan, outcome: Outcome) -> None:
        incoming, faces, deployment = plan.frame, plan.faces, plan.deployment
        message = incoming.message
        update = self.tracker.update(
            camera_id=message.camera_id,
            frame_id=message.frame_id,
            capture_ts=message.capture_ts,
            partition=incoming.partition,
            offset=plan.first_offset,
            observations=[
                Observation(
                    index=p.face.index,
                    box=p.face.box,
                    embedding=p.vector,
                    quality=p.face.quality.score,
                    chip=p.candidate.chip_jpeg if p.candidate is not None else None,
                )
                for p in faces
            ],
        )
        for track, _reason in update.ended:
            self._votes.pop(track.track_id, None)
            ended = self._templates.pop(track.track_id, None)
            if ended is not None:
                self._count_near_misses(ended)
        self._metrics.count(deployment.deployment_id, faces=len(faces), tracks=len(update.started))
        self.gate.record_activity(deployment.deployment_id, faces=len(faces), tracks=len(update.started))
        self._applied[incoming.partition] = max(incoming.offset, self._applied.get(incoming.partition, incoming.offset))
        self._recent.setdefault(message.camera_id, deque(maxlen=RECENT_FRAMES)).append(message.frame_id)
        for planned, track in zip(faces, update.assigned, strict=True):
            if self.settings.decision == "template":
                match = self._template_step(track, planned, message, deployment)
            elif planned.candidate is not None:
                match = self._vote(track, planned, message, deployment)
            else:
                match = None
            if match is not None:
                outcome.outputs.append(Outgoing(topic=MATCHES, key=message.camera_id, message=match))

    def _template_step(
        self, track: Track, planned: _PlannedFace, message: Embeddings, deployment: ActiveDeployment
    ) -> Match | None:
        """Add the face to its track's template and decide again when the template changed."""
        state = self._templates.get(track.track_id)
        if state is None:
            state = self._templates[track.track_id] = _TemplateState(
                TrackTemplate(max_faces=self.settings.template_faces), deployment.deployment_id
            )
        if planned.chip_jpeg is None:  # planned in template mode: never
            return None
        face = TemplateFace.of(planned.vector, quality=planned.face.quality.score, chip_jpeg=planned.chip_jpeg,
                               frame_id=message.frame_id, capture_ts=message.capture_ts, trace_id=message.trace_id,
                               scene_jpeg=planned.face.scene_jpeg)
        if not state.template.add(face, planned.hits):
            return None
        decision = state.template.decide(
            floor_score=deployment.threshold,
            min_margin=self.settings.min_margin_distance / 2.0,  # a distance lead, in score units
            min_faces=self.settings.min_votes,
            norm=self.norm,
            norm_threshold=deployment.norm_threshold,
            exclude=state.published,
        )
        if decision.outcome == "unnormalised":
            reason = "no_cohort" if self.norm is None else "reference_without_stats"
            self._metrics.unnormalised.labels(deployment.deployment_id, reason).inc()
            return None
        if decision.outcome != "match" or decision.hit is None or decision.probe is None:
            if decision.hit is not None and self._near_miss(decision.score, decision.normalised, deployment):
                state.near.add(decision.hit.subject_id)
            return None
        hit, probe = decision.hit, decision.probe
        state.published.add(hit.subject_id)
        reference_chip = self.gate.reference_chip(hit.subject_id, hit.reference_image_id) if hit.reference_image_id else None
        match = self.signer.build(
            camera_id=message.camera_id,
            frame_id=probe.frame_id,
            capture_ts=probe.capture_ts,
            trace_id=probe.trace_id,
            track_id=track.track_id,
            subject_id=hit.subject_id,
            watchlist_id=hit.watchlist_id,
            score=float(np.clip(decision.score, 0.0, 1.0)),
            margin=decision.margin,
            votes=decision.faces,
            track_frames=track.frames,
            threshold=deployment.threshold,
            first_seen_ts=track.first_ts,
            probe_chip_jpeg=probe.chip_jpeg,
            reference_image_id=hit.reference_image_id,
            embedder_model=message.embedder_model,
            deployment_id=deployment.deployment_id,
            reference_chip_jpeg=reference_chip or None,
            normalised_score=decision.normalised,
            normalised_threshold=deployment.norm_threshold if decision.normalised is not None else None,
            cohort=self.norm.cohort_id if decision.normalised is not None and self.norm is not None else None,
            lateness_s=message.lateness_s,
            scene_jpeg=probe.scene_jpeg,
        )
        logger.info(
            'match decided camera_id="%s" track_id="%s" watchlist_id="%s" score="%.3f" template_faces="%d" frames="%d"',
            match.camera_id, match.track_id, match.watchlist_id, match.score, match.votes, match.track_frames,
        )
        return match

    def _near_miss(self, score: float, normalised: float | None, deployment: ActiveDeployment) -> bool:
        """Whether a template that did not match came within the look-alike margin of matching."""
        if score < deployment.threshold - self.settings.look_alike_score_margin:
            return False
        if deployment.norm_threshold is None:
            return True
        return normalised is not None and normalised >= deployment.norm_threshold - self.settings.look_alike_z_margin

    def _count_near_misses(self, state: _TemplateState) -> None:
        """At a track's end: one near miss for each subject it came close to and did not match."""
        missed = state.near - state.published
        if not missed:
            return
        with self._near_misses_lock:
            counts = self._near_misses.setdefault(state.deployment_id, {})
            for subject_id in missed:
                counts[subject_id] = counts.get(subject_id, 0) + 1
        self._metrics.near_miss_tracks.labels(state.deployment_id).inc()
        attracting = sum(1 for n in counts.values() if n >= self.settings.look_alike_min_tracks)
        self._metrics.look_alike_subjects.labels(state.deployment_id).set(attracting)

    def look_alikes(self, deployment_id: str) -> dict[str, int]:
        """Per subject, the tracks of this deployment that came within the look-alike margin of
        its threshold and did not match it (since this process started). Counts only."""
        with self._near_misses_lock:
            counts = dict(self._near_misses.get(deployment_id, {}))
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def _vote(
        self, track: Track, planned: _PlannedFace, message: Embeddings, deployment: ActiveDeployment
    ) -> Match | None:
        candidate = planned.candidate
        if candidate is None:
            return None
        subject_id = candidate.hit.subject_id
        votes = self._votes.setdefault(track.track_id, {}).setdefault(subject_id, _Votes(count=0, probe=None))
        if votes.published:
            return None
        votes.count += 1
        quality = planned.face.quality.score
        if votes.probe is None or quality > votes.probe.quality:
            votes.probe = _Probe(deployment, quality, message.frame_id, message.capture_ts, message.trace_id, candidate)
        if votes.count < self.settings.min_votes:
            return None
        probe = votes.probe
        votes.published = True
        votes.probe = None  # the chip is in the Match now; keep no copy
        hit = probe.candidate.hit
        reference_chip = (
            self.gate.reference_chip(hit.subject_id, hit.reference_image_id) if hit.reference_image_id else None
        )
        match = self.signer.build(
            camera_id=message.camera_id,
            frame_id=probe.frame_id,
            capture_ts=probe.capture_ts,
            trace_id=probe.trace_id,
            track_id=track.track_id,
            subject_id=subject_id,
            watchlist_id=probe.candidate.hit.watchlist_id,
            score=probe.candidate.hit.score,
            margin=probe.candidate.margin,
            votes=votes.count,
            track_frames=track.frames,
            threshold=probe.deployment.threshold,
            first_seen_ts=track.first_ts,
            probe_chip_jpeg=probe.candidate.chip_jpeg,
            reference_image_id=probe.candidate.hit.reference_image_id,
            embedder_model=message.embedder_model,
            deployment_id=probe.deployment.deployment_id,
            reference_chip_jpeg=reference_chip or None,
            normalised_score=probe.candidate.normalised,
            normalised_threshold=probe.deployment.norm_threshold if probe.candidate.normalised is not None else None,
            cohort=self.norm.cohort_id if probe.candidate.normalised is not None and self.norm is not None else None,
            lateness_s=message.lateness_s,
            scene_jpeg=probe.candidate.scene_jpeg,
        )
        logger.info(
            'match decided camera_id="%s" track_id="%s" watchlist_id="%s" score="%.3f" votes="%d" frames="%d"',
            match.camera_id, match.track_id, match.watchlist_id, match.score, match.votes, match.track_frames,
        )
        return match

    def ready(self) -> tuple[bool, str]:
        return self.store.ready()

    def close(self) -> None:
        self.store.close()
