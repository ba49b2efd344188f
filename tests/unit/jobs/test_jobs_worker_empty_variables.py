"""`videodag-worker` takes a logging variable set empty as unset, as the server does.

A manifest or chart that templates VIDEODAG_LOG_LEVEL or VIDEODAG_LOG_FORMAT from a value left
blank sets them empty: the server, which counts an empty variable as unset, started, and its
workers in the same deployment exited 2 ("got ''") at every restart.
"""

from __future__ import annotations

import pytest

from videodag_service.jobs.worker_command import build_parser


@pytest.mark.parametrize("variable", ["VIDEODAG_LOG_LEVEL", "VIDEODAG_LOG_FORMAT"])
def test_an_empty_logging_variable_keeps_the_default(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "")
    arguments = build_parser().parse_args([])
    assert (arguments.log_level, arguments.log_format) == ("INFO", "json")


def test_a_set_logging_variable_is_still_read_and_a_flag_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEODAG_LOG_LEVEL", "debug")
    monkeypatch.setenv("VIDEODAG_LOG_FORMAT", "text")
    assert (build_parser().parse_args([]).log_level, build_parser().parse_args([]).log_format) == ("DEBUG", "text")
    flagged = build_parser().parse_args(["--log-level", "error", "--log-format", "json"])
    assert (flagged.log_level, flagged.log_format) == ("ERROR", "json")
