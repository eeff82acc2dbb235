"""The ``openlfr`` entry point itself: its version, and ``-v`` wherever it is given."""

from __future__ import annotations

import logging

import pytest

from openlfr import cli
from openlfr.registry.exceptions import RegistryApiError


def test_version_names_the_package_and_the_embedder(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("openlfr ") and "(embedder dlib_resnet_v1@" in out


@pytest.mark.parametrize("argv", [["-v", "cohort", "show", "/nonexistent.npz"],
                                  ["cohort", "show", "/nonexistent.npz", "-v"],
                                  ["cohort", "-v", "show", "/nonexistent.npz"]])
def test_verbose_is_taken_before_or_after_the_subcommand(argv: list[str], monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    cli.main(argv)  # the cohort does not exist: the command fails, after logging was set up
    assert seen["level"] == logging.DEBUG


def test_without_verbose_logging_is_quiet(monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    cli.main(["cohort", "show", "/nonexistent.npz"])
    assert seen["level"] == logging.WARNING


def test_an_api_refusal_reads_as_words_not_a_python_repr() -> None:
    detail = [{"type": "value_error", "loc": ["body", "end_at"], "msg": "the most is 31 days"}]
    error = RegistryApiError(422, detail, method="POST", path="/v1/deployments")
    assert str(error) == "POST /v1/deployments: HTTP 422: body.end_at: the most is 31 days"
    assert "{" not in str(error) and "[" not in str(error)


def _parsers(parser, path=("openlfr",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    """Help on every option and argument; a default that means something is printed with it."""
    import argparse

    missing = []
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")
    assert missing == []
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["deployment"]
    create = help_text._subparsers._group_actions[0].choices["create"].format_help()
    assert "(default: now+8h)" in " ".join(create.split()) and "(default: http://127.0.0.1:8080)" in create


@pytest.mark.parametrize("command", [["watchlist"], ["subject"], ["deployment"], ["alerts"]])
def test_the_api_commands_are_listed(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([*command, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    expected = {"watchlist": ["enroll", "list", "show", "suspend", "resume", "delete", "reembed"],
                "subject": ["list", "show", "suspend", "resume", "delete"],
                "deployment": ["create", "show", "update", "end", "list"],
                "alerts": ["list", "show", "review"]}[command[0]]
    assert all(name in out for name in expected), out


@pytest.mark.parametrize(
    ("text", "offset_s"),
    [("now", 0.0), ("now+2h", 7200.0), ("now-30m", -1800.0), ("now+1.5d", 129600.0), ("now-10s", -10.0)],
)
def test_relative_time_forms(text: str, offset_s: float) -> None:
    import time

    from openlfr.cli_support import parse_time

    assert parse_time(text, flag="--end").timestamp() - time.time() == pytest.approx(offset_s, abs=2.0)


def test_absolute_time_forms() -> None:
    from datetime import datetime, timezone

    from openlfr.cli_support import parse_time

    assert parse_time("2027-05-01T17:00Z", flag="--end") == datetime(2027, 5, 1, 17, tzinfo=timezone.utc)
    assert parse_time("2027-05-01T18:00:00+01:00", flag="--end") == datetime(2027, 5, 1, 17, tzinfo=timezone.utc)
    local = parse_time("2027-05-01T18:00", flag="--end")  # no offset: this machine's local time
    assert local.tzinfo is not None and local == datetime(2027, 5, 1, 18).astimezone()
    for bad in ("tomorrow", "now+2", "now+h", "8h", "2027-13-01"):
        with pytest.raises(ValueError) as refused:
            parse_time(bad, flag="--end")
        assert str(refused.value).startswith(f"--end '{bad}': not an ISO 8601 time or now+-N; give ISO 8601")


@pytest.mark.parametrize(("name", "settings"), [
    ("detect", ["OPENLFR_BOOTSTRAP (required)", "OPENLFR_DETECTOR (default full)", "OPENLFR_BATCH_SIZE (default "]),
    ("match", ["OPENLFR_API_TOKENS (required)", "OPENLFR_AUDIT_LOG (required)", "OPENLFR_REGISTRY_DB_PATH (required)",
               "OPENLFR_MATCH_SIGNING_KEY (required)"]),
    ("ingest", ["OPENLFR_CAMERAS (", "OPENLFR_SAMPLE_FPS (default "]),
])
def test_service_help_lists_every_setting_with_its_default(name: str, settings: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["service", name, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "--check-config" in out and "settings (environment variables; --env-file may hold them too):" in out
    for line in settings:
        assert line in out, (line, out)
    assert "OPENLFR_API_OPENLFR" not in out
    assert out.startswith(f"usage: openlfr service {name} [-h]"), out[:120]


def test_a_service_option_error_names_the_service_command(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["service", "embed", "--no-such-option"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "usage: openlfr service embed [-h]" in err
    assert "openlfr service embed: error: unrecognized arguments: --no-such-option" in err


@pytest.mark.parametrize("argv", [["service", "detect", "-v", "--check-config"],
                                  ["service", "detect", "--check-config", "--verbose"],
                                  ["-v", "service", "detect", "--check-config"]])
def test_verbose_reaches_a_service_as_its_log_level(argv: list[str], monkeypatch, capsys) -> None:
    """``-v`` before or after ``service NAME`` is the service's OPENLFR_LOG_LEVEL=DEBUG (it was
    refused as an unknown argument after NAME, and ignored before it), over the environment's."""
    from openlfr.service.settings import ServiceSettings, load_settings

    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("OPENLFR_LOG_LEVEL", "WARNING")
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == "settings ok\n"
    assert load_settings(ServiceSettings).log_level == "DEBUG"


def test_without_verbose_a_service_keeps_its_log_level(monkeypatch, capsys) -> None:
    from openlfr.service.settings import ServiceSettings, load_settings

    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("OPENLFR_LOG_LEVEL", "WARNING")
    assert cli.main(["service", "detect", "--check-config"]) == 0, capsys.readouterr().err
    assert load_settings(ServiceSettings).log_level == "WARNING"
