"""The ACL table: it covers what each stage reads and writes, grants nothing more, and renders the
same rules for the admin API, kafka-acls.sh and Strimzi."""

from __future__ import annotations

import pytest

from openlfr.kafka import acls
from openlfr.kafka.acls import SERVICES, Grant, grants, service_grants, strimzi_acls
from openlfr.messages.topics import ALL_TOPICS, DEADLETTER, FRAMES, MATCHES
from openlfr.pipeline.alert import AlertStage
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.match import MatchStage
from openlfr.service.settings import ServiceSettings

STAGES = {"detect": DetectStage, "embed": EmbedStage, "match": MatchStage, "alert": AlertStage}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_may_do_what_its_runner_does(name: str) -> None:
    stage, access = STAGES[name], SERVICES[name]
    assert stage.name == name
    assert stage.input_topic in access.reads
    assert set(stage.output_topics) | {DEADLETTER} <= set(access.writes)  # the runner dead-letters
    assert access.group == ServiceSettings(bootstrap="k:1").consumer_group(stage.name)


def test_each_topic_has_exactly_the_writers_and_readers_of_the_pipeline() -> None:
    writers = {spec.name: sorted(n for n, a in SERVICES.items() if spec in a.writes) for spec in ALL_TOPICS}
    readers = {spec.name: sorted(n for n, a in SERVICES.items() if spec in a.reads) for spec in ALL_TOPICS}
    assert writers == {
        "openlfr.frames.v1": ["ingest"],
        "openlfr.faces.v1": ["detect"],
        "openlfr.embeddings.v1": ["embed"],
        "openlfr.matches.v1": ["match"],  # a forged match needs the match service's password
        "openlfr.alerts.v1": ["alert"],
        "openlfr.deadletter.v1": ["alert", "detect", "embed", "match"],
        "openlfr.audit-checkpoints.v1": ["alert", "match"],
    }
    assert readers == {
        "openlfr.frames.v1": ["detect"],  # nobody else sees a passer-by's frame
        "openlfr.faces.v1": ["embed"],
        "openlfr.embeddings.v1": ["match"],
        "openlfr.matches.v1": ["alert"],
        "openlfr.alerts.v1": ["alert"],  # restored at start
        "openlfr.deadletter.v1": [],  # operators read dead letters as admin
        "openlfr.audit-checkpoints.v1": ["alert", "match"],
    }


def test_no_service_may_create_alter_or_delete() -> None:
    assert {rule.operation for rule in grants()} == {"READ", "WRITE", "DESCRIBE"}
    assert {rule.resource_type for rule in grants()} == {"TOPIC", "GROUP"}


def test_the_detect_user_may_read_frames_and_write_faces_and_nothing_of_matches() -> None:
    rules = service_grants("detect")
    assert Grant("User:openlfr-detect", "TOPIC", FRAMES.name, "LITERAL", "READ") in rules
    assert not [r for r in rules if r.resource_name == MATCHES.name]


def test_a_sites_topic_names_are_used() -> None:
    rules = service_grants("alert", topic_name=lambda spec: "site-a." + spec.name)
    assert all(r.resource_name.startswith("site-a.") for r in rules if r.resource_type == "TOPIC")


def test_renderings() -> None:
    rule = Grant("User:openlfr-match", "GROUP", "openlfr-replay-", "PREFIXED", "READ")
    assert rule.cli_args() == [
        "--add", "--allow-principal", "User:openlfr-match", "--operation", "Read", "--group", "openlfr-replay-",
        "--resource-pattern-type", "prefixed",
    ]
    binding = rule.binding()
    assert (binding.name, binding.principal, binding.host) == ("openlfr-replay-", "User:openlfr-match", "*")
    assert {"resource": {"type": "topic", "name": FRAMES.name, "patternType": "literal"}, "operations": ["Read"],
            "host": "*"} in strimzi_acls("detect")
    assert acls.username("detect") == "openlfr-detect"
    with pytest.raises(ValueError, match="unknown service"):
        acls.username("attacker")
    assert acls.all_users()[:2] == ["openlfr-broker", "openlfr-admin"]


def test_the_operations_guide_shows_the_table_the_broker_gets() -> None:
    from openlfr import paths

    assert acls.table(grants()) in (paths.REPO_ROOT / "docs" / "operations.md").read_text()
