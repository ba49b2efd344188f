"""What a hostile server chooses cannot drive the terminal through the JSON Lines results, make one
id or file name look like another, or run a command from a hint the user pastes into a shell."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    frame_response,
    summary_response,
    video_info_response,
)

from videodag_client import FrameResult, Job, JobState, RunOptions
from videodag_client._pipelines import PipelineInfo
from videodag_client.cli import _exit_codes, build_parser, main
from videodag_client.cli import jobs as jobs_cli
from videodag_client.cli import pipelines as pipelines_cli
from videodag_client.cli import submit as submit_cli
from videodag_client.cli._results import JsonLinesOutput
from videodag_client.cli._terminal import terminal_safe

# Bidi overrides and isolates, the zero-width space, direction marks, line and paragraph separators.
INVISIBLE = [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u200b", "\u200e", "\u200f", "\u2060", "\ufeff", "\u061c", "\u2028", "\u2029",
    # Other characters that print nothing: soft hyphen, grapheme joiner, invisible operators,
    # deprecated format characters, Hangul fillers (printable to Python), a musical format character (past U+FFFF).
    "\u00ad", "\u034f", "\u2061", "\u2063", "\u206a", "\u206f", "\u115f", "\u3164", "\uffa0", "\U0001d173",
]
# DEL and C1 controls (an 8-bit CSI clearing the screen, an 8-bit OSC setting the title, NEL) and the above.
RAW_IN_JSON = ["\x7f", "\x80", "\x85", "\x9b", "\x9c", "\x9d", "\x9f", *INVISIBLE]
# What review's fake server sent: a title set and the screen cleared with 8-bit controls, a
# reversed file name.
LABEL = "person\x9d0;PWNED-TITLE\x9c\x9b2J\x9bHall 120 frames OK\x7f \u202etxt.exe"
# The zero-width non-joiner of a Persian word and the joiner of an emoji sequence stay.
READABLE = ("Ωmega naïve 行人 🚶 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f469\u200d\U0001f52c "
            # And the tags of England's flag, and a variant kanji's selector (Katsushika).
            "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f \u845b\U000e0100\u98fe\u533a")


@pytest.mark.parametrize("character", INVISIBLE)
def test_bidi_and_invisible_characters_are_shown_escaped(character: str) -> None:
    shown = terminal_safe(f"id{character}x")
    code = ord(character)
    escaped = {"\u00ad": "\\xad"}.get(character, f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    assert shown == f"id{escaped}x"
    assert terminal_safe(f"id{character}x", one_line=True) == shown


def test_letters_of_any_script_stay_readable_on_the_terminal() -> None:
    assert terminal_safe(READABLE) == READABLE


def _job(job_id: str, *, pipeline_id: str = "p", file_name: str = "clip.mp4") -> Job:
    return Job(
        id=job_id, state=JobState.QUEUED, pipeline_id=pipeline_id, options=RunOptions(), file_name=file_name,
        size_bytes=10, sha256="", idempotency_key="", created_at=datetime(2026, 12, 5, tzinfo=UTC),
        started_at=None, ended_at=None, expires_at=None, frames_done=0, frames_total=0, attempt=1,
        video=None, summary=None,
    )


def test_a_reversed_file_name_in_a_job_shows_its_override() -> None:
    job = _job("01j\u200b", pipeline_id="p\u2066", file_name="invoice\u202efdp.exe")
    for shown in (jobs_cli.format_job(job), jobs_cli._job_table([job])):
        assert "invoice\\u202efdp.exe" in shown and "01j\\u200b" in shown
        assert not any(character in shown for character in INVISIBLE)


def test_a_pipeline_description_cannot_add_a_line_with_a_unicode_separator() -> None:
    pipeline = PipelineInfo(id="p", version="1", description="safe\u2028FORGED\u2029x", nodes=(), outputs=())
    table = pipelines_cli._pipeline_table([pipeline])
    assert "safe\\u2028FORGED\\u2029x" in table
    assert len(table.splitlines()) == 2  # str.splitlines takes U+2028 as a line end, as some terminals do


def _frame(label: str) -> FrameResult:
    return FrameResult(frame_index=0, timestamp_seconds=0.0, result={"label": label, label: [label]})


def _assert_terminal_safe_json_line(line: str, label: str) -> None:
    assert not any(character in line for character in RAW_IN_JSON)
    assert READABLE in line  # ensure_ascii=False kept: letters are not \u-escaped
    assert json.loads(line)["result"] == {"label": label, label: [label]}  # the same value


@pytest.mark.parametrize("character", RAW_IN_JSON)
def test_results_to_stdout_escape_what_a_terminal_would_obey(
    character: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watch -o -` (and `run -o -`) writes through this: DEL and C1 controls went out raw."""
    label = f"{READABLE} {character}"
    with JsonLinesOutput("-") as output:
        output.write(_frame(label))
    line = capsys.readouterr().out
    assert json.dumps(character)[1:-1] in line  # past U+FFFF, as a surrogate pair
    _assert_terminal_safe_json_line(line, label)


def test_run_dash_o_writes_no_c1_control_of_the_servers_results(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    label = f"{LABEL} {READABLE}"
    servicer.run_script = [
        AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=1),
        frame_response(0, 25.0, {"label": label, label: [label]}), summary_response(1),
    ]
    assert main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-q", "-o", "-"]) == 0
    out = capsys.readouterr().out
    _assert_terminal_safe_json_line(out.splitlines()[0], label)
    assert "\\u009d0;PWNED-TITLE\\u009c\\u009b2J" in out and "\\u202etxt.exe" in out


def test_results_written_to_a_file_are_escaped_alike(tmp_path: Path) -> None:
    """A results file is read with `cat` or `tail -f` too."""
    path = tmp_path / "results.jsonl"
    with JsonLinesOutput(str(path)) as output:
        output.write(_frame(LABEL + READABLE))
    _assert_terminal_safe_json_line(path.read_text(encoding="utf-8"), LABEL + READABLE)


# Each would touch `pwned` in the shell's directory, pasted unquoted; the dashed ones would be options.
HOSTILE_IDS = [
    "abc;touch${IFS}pwned;#", "a$(touch pwned)", "a`touch pwned`b", "a|touch pwned", "a&&touch pwned",
    "it's", "a b", "-o/tmp/x", "--output=pwned",
]


class _Submitting:
    """Stands in for the client: submit_job answers with a job of the id a hostile server chose."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def __enter__(self) -> _Submitting:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def submit_job(self, *args: Any, **kwargs: Any) -> Job:
        return _job(self.job_id)


def _serve_job_id(monkeypatch: pytest.MonkeyPatch, job_id: str) -> None:
    monkeypatch.setattr(submit_cli, "connect", lambda args: _Submitting(job_id))


def _pasted_into_bash(said: str, directory: Path) -> list[str]:
    """The arguments `videodag` gets when the hint's command line (after "follow it with: ") is
    pasted into bash, in `directory`; bash runs nothing else, or `pwned` is there."""
    command_line = said.split("follow it with: ", 1)[1].splitlines()[0]
    assert command_line.startswith("videodag ")
    shell = subprocess.run(
        ["bash", "-c", f"videodag() {{ printf '%s\\0' \"$@\"; }}\n{command_line}"],
        cwd=directory, capture_output=True, text=True, check=False,
    )
    assert not (directory / "pwned").exists()
    return shell.stdout.split("\0")[:-1]


def _names_the_job(pasted: list[str], job_id: str) -> bool:
    """Whether videodag's own parser takes the pasted arguments as `watch` of that very job."""
    return pasted[0] == "watch" and build_parser().parse_args(pasted).job_id == job_id


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
def test_submits_hint_pasted_into_a_shell_watches_that_job_and_runs_nothing_else(
    job_id: str, video_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _serve_job_id(monkeypatch, job_id)
    assert main(["submit", str(video_path), "--pipeline", "p"]) == 0
    printed = capsys.readouterr()
    assert printed.out == f"{job_id}\n"  # the id itself, for scripts, as before
    assert _names_the_job(_pasted_into_bash(printed.err, tmp_path), job_id)


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_the_hint_after_a_failed_write_is_quoted_too(
    video_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve_job_id(monkeypatch, HOSTILE_IDS[0])
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(["submit", str(video_path), "--pipeline", "p", "-q"]) == _exit_codes.OUTPUT_NOT_WRITTEN
    assert _names_the_job(_pasted_into_bash(capsys.readouterr().err, tmp_path), HOSTILE_IDS[0])


def test_submit_json_is_ascii_whatever_the_server_sent(
    video_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` needs no escaping of its own: the encoder's default writes ASCII only."""
    job_id = f"{LABEL}{READABLE}"
    _serve_job_id(monkeypatch, job_id)
    assert main(["submit", str(video_path), "--pipeline", "p", "-q", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and "\x7f" not in out
    assert json.loads(out)["id"] == job_id
