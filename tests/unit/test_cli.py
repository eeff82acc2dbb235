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
