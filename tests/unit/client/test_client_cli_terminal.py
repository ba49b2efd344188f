"""Text a server or another caller chose is shown escaped on the terminal, never obeyed by it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from videodag_client import Job, JobState, RunOptions
from videodag_client._errors import NotFound
from videodag_client._pipelines import PipelineInfo
from videodag_client.cli import jobs as jobs_cli
from videodag_client.cli import pipelines as pipelines_cli
from videodag_client.cli.__init__ import _print_error
from videodag_client.cli._terminal import terminal_safe

# A terminal title, a cleared screen, red text, a carriage return and a forged line.
HOSTILE = "clip\x1b]0;owned\x07\x1b[2J\x1b[31mred\rhidden\nerror: forged\x9b31m"


def _printable(text: str) -> bool:
    return all(character == "\n" or character.isprintable() for character in text)


def test_control_characters_are_shown_escaped() -> None:
    assert terminal_safe("a\x1b[2Jb\tc\nd") == "a\\x1b[2Jb\tc\nd"
    assert terminal_safe("a\nb\r\x9b", one_line=True) == "a\\nb\\r\\x9b"
    assert terminal_safe("naïve — ok") == "naïve — ok"


def _job() -> Job:
    return Job(
        id="01j\x1b[2J", state=JobState.SUCCEEDED, pipeline_id="frame_stats_v1", options=RunOptions(),
        file_name=HOSTILE, size_bytes=10, sha256="", idempotency_key="key\x1b]0;x\x07",
        created_at=datetime(2026, 12, 5, tzinfo=UTC), started_at=None, ended_at=None, expires_at=None,
        frames_done=1, frames_total=1, attempt=1, video=None, summary=None,
    )


def test_a_job_another_caller_submitted_is_shown_without_its_escapes() -> None:
    shown = jobs_cli.format_job(_job())
    assert _printable(shown)
    assert "error: forged" not in shown.splitlines()[3:]  # the file name adds no line
    assert "\\x1b]0;owned\\x07" in shown
    assert _printable(jobs_cli._job_table([_job()]))


def test_pipelines_of_a_hostile_server_are_shown_without_their_escapes() -> None:
    pipeline = PipelineInfo(id="x\x1b[2J", version="1\r", description=HOSTILE, nodes=(), outputs=())
    table = pipelines_cli._pipeline_table([pipeline])
    assert _printable(table) and len(table.splitlines()) == 2
    assert _printable(pipelines_cli.format_pipeline(pipeline))


def test_an_error_message_cannot_drive_the_terminal_or_add_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    _print_error(NotFound(HOSTILE))
    said = capsys.readouterr().err
    assert _printable(said) and said.count("\n") == 1
    assert said.startswith("error: NOT_FOUND: clip\\x1b]0;owned\\x07")


def test_a_description_written_over_several_lines_keeps_them_in_the_detail_view() -> None:
    description = "Statistiques — luminosité.\nUsage:\n\t1. submit"
    pipeline = PipelineInfo(id="camera_stats", version="1", description=description, nodes=(), outputs=())
    assert pipelines_cli.format_pipeline(pipeline).splitlines()[:4] == [
        "camera_stats (version 1)", "  Statistiques — luminosité.", "  Usage:", "  \t1. submit",
    ]


def test_a_jobs_times_are_shown_alike_in_the_listing_and_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing showed local time, one job's lines UTC: the same moment looked like two."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        created = next(line for line in jobs_cli.format_job(_job()).splitlines() if "created:" in line)
        assert created == "  created:   2026-12-05 05:30:00+05:30"
        assert "2026-12-05 05:30:00+05:30" in jobs_cli._job_table([_job()])
    finally:
        monkeypatch.undo()
        time.tzset()
