"""The match stage's Prometheus metrics: faces, tracks, unnormalised hits and the look-alike watch.

Labels are bounded sets only (deployment, reason): never a person, subject or track id. Which
subjects attract strangers is in the deployment report, behind the API's roles.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MatchMetrics:
    """Faces searched and tracks started per deployment (Prometheus), one set per registry (``metrics_for(MatchMetrics, registry)``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.faces = Counter(
            "openlfr_deployment_faces_total",
            "Faces searched against the watchlists, per deployment.",
            ["deployment"],
            registry=registry,
        )
        self.tracks = Counter(
            "openlfr_deployment_tracks_total",
            "Face tracks started, per deployment.",
            ["deployment"],
            registry=registry,
        )
        self.near_miss_tracks = Counter(
            "openlfr_match_near_miss_tracks_total",
            "Tracks that ended without a match after their template came within the look-alike margin "
            "of some subject's threshold, per deployment (who and which subject is in the deployment report).",
            ["deployment"],
            registry=registry,
        )
        self.look_alike_subjects = Gauge(
            "openlfr_match_look_alike_subjects",
            "Subjects of a deployment with at least OPENLFR_MATCH_LOOK_ALIKE_MIN_TRACKS near-miss tracks: "
            "subjects that attract strangers.",
            ["deployment"],
            registry=registry,
        )
        self.unnormalised = Counter(
            "openlfr_match_unnormalised_total",
            "Faces whose top hit passed the floor but could not be normalised against the cohort "
            "(no cohort loaded, or a reference without statistics from it), so were not matched.",
            ["deployment", "reason"],
            registry=registry,
        )

    def count(self, deployment_id: str, *, faces: int, tracks: int) -> None:
        if faces:
            self.faces.labels(deployment_id).inc(faces)
        if tracks:
            self.tracks.labels(deployment_id).inc(tracks)
