"""Load on the HTTP APIs: enrolment (registry, on the match service) and alert review (alert service).

Two user classes, each against its own service:

* ``EnrolmentUser`` (registry API): creates a subject on a watchlist of its own and uploads a
  reference image (a real face photo from ``../shared/data/faces``), reads subjects back;
  every subject it creates is deleted when it stops.
* ``ReviewUser`` (review API): lists alerts (newest first, by status), opens one, and reviews
  pending alerts: the first step, ``confirm`` or ``reject`` with a reason.

Settings, from the environment (tokens are never arguments, so they stay out of shell history):

* ``OPENLFR_LOCUST_REGISTRY_URL``: the match service (``http://127.0.0.1:8081``);
* ``OPENLFR_LOCUST_REVIEW_URL``: the alert service (``http://127.0.0.1:8084``);
* ``OPENLFR_LOCUST_ADMIN_TOKEN``: a ``watchlist_admin`` token (enrolment);
* ``OPENLFR_LOCUST_REVIEWER_TOKEN``: a ``reviewer`` token (reads and reviews);
* ``OPENLFR_LOCUST_PHOTOS``: optional, a folder of face photos (default: the Obama photos of the face set).

Loopback only: a URL whose host is not 127.0.0.1 or localhost is refused at start.

Run (headless, bounded)::

    OPENLFR_LOCUST_REGISTRY_URL=... OPENLFR_LOCUST_REVIEW_URL=... \\
    OPENLFR_LOCUST_ADMIN_TOKEN=... OPENLFR_LOCUST_REVIEWER_TOKEN=... \\
    .venv/bin/locust -f load-tests/locustfile.py --headless -u 10 -r 2 -t 60s --csv build/locust/http
"""

from __future__ import annotations

import os
import random
import threading
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from locust import HttpUser, between, events, task

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DEFAULT_PHOTOS = FACES_DIR / "face_recognition" / "examples" / "knn_examples" / "train"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WATCHLIST = f"locust-{uuid.uuid4().hex[:8]}"
_watchlist_ready = threading.Lock()
_watchlist_made = False


def _url(name: str) -> str:
    url = os.environ.get(name, "")
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"{name}={url!r}: set it to a loopback URL (http://127.0.0.1:PORT)")
    return url.rstrip("/")


def _token(name: str) -> str:
    token = os.environ.get(name, "")
    if not token:
        raise SystemExit(f"{name} is not set")
    return token


def _photos() -> list[tuple[str, bytes]]:
    folder = Path(os.environ.get("OPENLFR_LOCUST_PHOTOS", DEFAULT_PHOTOS))
    suffixes = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
    photos = [(suffixes[p.suffix.lower()], p.read_bytes()) for p in sorted(folder.rglob("*"))
              if p.suffix.lower() in suffixes]
    if not photos:
        raise SystemExit(f"no .jpg/.png photo under {folder}")
    return photos


@events.init_command_line_parser.add_listener
def _describe(parser) -> None:  # type: ignore[no-untyped-def]
    parser.epilog = "Settings come from OPENLFR_LOCUST_* (see load-tests/locustfile.py)."


class EnrolmentUser(HttpUser):
    """A watchlist administrator enrolling people."""

    wait_time = between(0.5, 2.0)
    weight = 1
    # HttpUser needs its host when it is made; checked for loopback in on_start.
    host = os.environ.get("OPENLFR_LOCUST_REGISTRY_URL", "http://127.0.0.1:8081")

    def on_start(self) -> None:
        global _watchlist_made
        _url("OPENLFR_LOCUST_REGISTRY_URL")
        self.client.headers["Authorization"] = f"Bearer {_token('OPENLFR_LOCUST_ADMIN_TOKEN')}"
        self.photos = _photos()
        self.subjects: list[str] = []
        with _watchlist_ready:
            if not _watchlist_made:
                with self.client.post("/v1/watchlists", json={"id": WATCHLIST, "name": "locust load test"},
                                      name="/v1/watchlists", catch_response=True) as resp:
                    if resp.status_code in (201, 409):  # 409: another user made it first
                        resp.success()
                        _watchlist_made = True

    @task(3)
    def enrol(self) -> None:
        """Create a subject and upload one reference photo."""
        subject = {
            "id": f"lc-{uuid.uuid4().hex[:12]}",
            "display_name": "Load test subject",
            "category": "wanted",
            "reason": "load test of the enrolment API",
            "legal_basis": "test fixture, no real person is sought",
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        }
        resp = self.client.post(f"/v1/watchlists/{WATCHLIST}/subjects", json=subject,
                                name="/v1/watchlists/{id}/subjects")
        if resp.status_code != 201:
            return
        self.subjects.append(subject["id"])
        content_type, data = random.choice(self.photos)
        with self.client.post(f"/v1/subjects/{subject['id']}/images", params={"source": "locust load test"},
                              data=data, headers={"Content-Type": content_type},
                              name="/v1/subjects/{id}/images", catch_response=True) as upload:
            if upload.status_code in (201, 409, 422):  # 409 duplicate, 422 refused face: the API answered
                upload.success()

    @task(2)
    def list_subjects(self) -> None:
        self.client.get(f"/v1/watchlists/{WATCHLIST}/subjects", params={"limit": 50},
                        name="/v1/watchlists/{id}/subjects [list]")

    def on_stop(self) -> None:
        for subject_id in self.subjects:
            self.client.delete(f"/v1/subjects/{subject_id}", name="/v1/subjects/{id} [cleanup]")


class ReviewUser(HttpUser):
    """A reviewer working through alerts."""

    wait_time = between(0.5, 2.0)
    weight = 2
    host = os.environ.get("OPENLFR_LOCUST_REVIEW_URL", "http://127.0.0.1:8084")

    def on_start(self) -> None:
        _url("OPENLFR_LOCUST_REVIEW_URL")
        self.client.headers["Authorization"] = f"Bearer {_token('OPENLFR_LOCUST_REVIEWER_TOKEN')}"
        self.pending: list[str] = []

    @task(5)
    def list_alerts(self) -> None:
        resp = self.client.get("/v1/alerts", params={"limit": 50}, name="/v1/alerts")
        if resp.ok:
            self.pending = [a["alert_id"] for a in resp.json().get("items", []) if a.get("status") == "pending"]

    @task(2)
    def list_pending(self) -> None:
        self.client.get("/v1/alerts", params={"status": "pending", "limit": 20}, name="/v1/alerts?status=pending")

    @task(2)
    def open_alert(self) -> None:
        if self.pending:
            self.client.get(f"/v1/alerts/{random.choice(self.pending)}", name="/v1/alerts/{id}")

    @task(1)
    def review(self) -> None:
        if not self.pending:
            return
        alert_id = self.pending.pop(random.randrange(len(self.pending)))
        body = ({"decision": "confirm", "step": 1} if random.random() < 0.5
                else {"decision": "reject", "reason": "load test: not the subject", "step": 1})
        with self.client.post(f"/v1/alerts/{alert_id}/reviews", json=body, name="/v1/alerts/{id}/reviews",
                              catch_response=True) as resp:
            if resp.status_code in (200, 409):  # 409: another reviewer took that step first
                resp.success()
