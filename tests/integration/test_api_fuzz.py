"""Property-based fuzz of the HTTP APIs from their own OpenAPI documents (schemathesis): the match
service (registry, look-alikes) and the alert service (review, reports), as separate processes
over the real broker, with a token of every role. Each operation gets a bounded number of
valid and of invalid requests (``EXAMPLES`` each); none may answer 5xx or drop the connection.

The counts of one run are printed (``-s``) and recorded in docs/operations.md ("API fuzz").
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import ROLES, ServiceStack

pytestmark = pytest.mark.integration

#: Examples per operation and generation mode (valid, invalid): the run's budget.
EXAMPLES = 25
#: Every role, so that the fuzz gets past authorisation into each operation.
ALL_ROLES = sorted({role for roles in ROLES.values() for role in roles})


@pytest.fixture
def fuzzed_stack(kafka_broker: KafkaBroker, tmp_path: Path, faces_dir: Path) -> Iterator[tuple[ServiceStack, str]]:
    stack = ServiceStack(kafka_broker.bootstrap, tmp_path / "stack")
    token = secrets.token_urlsafe(24)
    tokens = json.loads(stack.env["OPENLFR_API_TOKENS"])
    stack.env["OPENLFR_API_TOKENS"] = json.dumps([*tokens, {"name": "fuzzer", "roles": ALL_ROLES, "token": token}])
    try:
        stack.start_ready("match")
        stack.start_ready("alert")
        yield stack, token
    finally:
        stack.stop_all()


def _fuzz(base_url: str, token: str) -> tuple[Counter[str], list[str]]:
    """Every operation of the service at ``base_url``: (status counts, server errors found)."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    counts: Counter[str] = Counter()
    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # A live stream (text/event-stream) never ends: its status and headers are what is checked.
        streams = "text/event-stream" in str(operation.definition.raw.get("responses", {}).get("200", {}))
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=2 * EXAMPLES, database=None, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def call(case) -> None:  # noqa: ANN001 - a schemathesis Case
            try:
                if streams:  # only the status and headers: the body never ends
                    kwargs = case.as_transport_kwargs(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
                    with requests.request(**kwargs, stream=True, timeout=30) as response:
                        pass
                else:
                    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            except Exception as exc:  # noqa: BLE001 - a dropped connection is a server error too
                counts["no answer"] += 1
                errors.append(f"{operation.label}: {type(exc).__name__}: {exc}")
                return
            counts[str(response.status_code)] += 1
            if response.status_code >= 500:
                errors.append(f"{operation.label}: {response.status_code} {'' if streams else response.text[:300]} "
                              f"(path {case.formatted_path}, query {case.query}, body {str(case.body)[:200]})")

        call()
        counts["operations"] += 1
    return counts, errors


def test_no_request_the_apis_document_gets_a_server_error(fuzzed_stack) -> None:
    stack, token = fuzzed_stack
    report = {}
    all_errors = []
    for name in ("match", "alert"):
        counts, errors = _fuzz(stack.services[name].base_url, token)
        report[name] = dict(sorted(counts.items()))
        all_errors += errors
    print("API fuzz:", json.dumps(report))
    assert sum(sum(c.values()) for c in report.values()) > 0
    assert not all_errors, "\n".join(all_errors[:40])
    for name in ("match", "alert"):
        assert stack.services[name].proc.poll() is None, stack.services[name].log_tail()
