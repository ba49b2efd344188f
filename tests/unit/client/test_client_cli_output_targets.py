"""Where `-o` writes when the path names something open already, or something planted."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from pathlib import Path

import pytest

from videodag_client import FrameResult
from videodag_client.cli import _exit_codes, main
from videodag_client.cli import _results as results_module
from videodag_client.cli._arguments import UsageError
from videodag_client.cli._json import json_text
from videodag_client.cli._results import JsonLinesOutput, OutputNotWritten, frame_line, is_stdout, plan_output

FRAME = FrameResult(0, 0.0, {"n": 1})


def test_a_descriptor_behind_a_pipe_is_written_in_place(tmp_path: Path) -> None:
    """`-o /dev/stdout | jq`: the path resolves to a pipe, which has no name to put a .part beside."""
    read_end, write_end = os.pipe()
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{write_end}")
        assert plan_output(str(link)).part is None
        with JsonLinesOutput(f"/dev/fd/{write_end}") as output:
            output.write(FRAME)
        assert json.loads(os.read(read_end, 1000))["result"] == {"n": 1}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_open_behind_a_descriptor_keeps_what_was_written_before(tmp_path: Path) -> None:
    """`-o /dev/stdout >> all.jsonl`: appended to, never replaced by a .part nor emptied."""
    results = tmp_path / "all.jsonl"
    results.write_text("an earlier line\n")
    before = os.stat(results)
    descriptor = os.open(results, os.O_WRONLY | os.O_APPEND)
    try:
        assert plan_output(f"/dev/fd/{descriptor}").part is None
        with JsonLinesOutput(f"/dev/fd/{descriptor}") as output:
            output.write(FRAME)
    finally:
        os.close(descriptor)
    lines = results.read_text().splitlines()
    assert lines[0] == "an earlier line" and json.loads(lines[1])["frame_index"] == 0
    assert os.path.samestat(before, os.stat(results)), "the same file, not a new one renamed over it"
    assert not list(tmp_path.glob("*.part"))


def test_a_link_planted_at_the_part_path_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "results.jsonl.part").symlink_to(victim)
    with pytest.raises(OSError), JsonLinesOutput(str(tmp_path / "results.jsonl")):
        pass
    assert victim.read_text() == "precious"


def test_a_closed_stdin_as_the_input_is_no_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "results.jsonl"
    existing.write_text("")
    monkeypatch.setattr(sys, "stdin", None)
    assert plan_output(str(existing), input_path="-").part == f"{existing}.part"


def test_results_to_the_file_stdout_writes_to_stay_ahead_of_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-o /dev/stdout > f`: one stream, not two offsets where the summary overwrites the frames."""
    redirected = tmp_path / "f"
    with redirected.open("w", encoding="utf-8") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        with JsonLinesOutput(f"/dev/fd/{stdout.fileno()}") as output:
            output.write(FRAME)
            output.write(FrameResult(1, 0.04, {"n": 2}))
        print("the run's summary", file=sys.stdout)
    lines = redirected.read_text().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines[:2]] == [0, 1]
    assert lines[2:] == ["the run's summary"]


def test_an_empty_output_path_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty path"):
        JsonLinesOutput("")


def test_resuming_after_a_frame_the_part_file_never_reached_is_refused_and_the_part_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The .part becomes the results file: continued after frame 50, it would have a hole no later command fills."""
    results = tmp_path / "res.jsonl"
    frames = "".join(json.dumps({"frame_index": i}) + "\n" for i in range(10))
    Path(f"{results}.part").write_text(frames)
    with pytest.raises(UsageError) as refused, JsonLinesOutput(str(results), resume_after=50) as output:
        assert output.frames_kept == 10
        output.check_for_a_gap(1)
    assert str(refused.value) == (
        f"{results}.part ends at frame 9, not 50: continued after frame 50, {results} would miss the frames in "
        "between; resume with --after 9 (the .part is kept as it is)")
    assert Path(f"{results}.part").read_text() == frames and not results.exists()
    assert "partial results (10 frames, up to frame 9) kept in" in capsys.readouterr().err

    with JsonLinesOutput(str(results), resume_after=9) as output:  # as the refusal says
        output.check_for_a_gap(1)
        output.check_for_a_gap(1)  # each job event of the watch asks
        output.write(FrameResult(10, 0.4, {}))
    assert [json.loads(line)["frame_index"] for line in results.read_text().splitlines()] == list(range(11))


def test_resuming_a_strided_job_between_its_frames_is_no_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frames 0, 5, ... of a stride-5 job: after 2 or 9 nothing is missing; after 10, frame 10 is."""
    for after, gap in [(2, False), (9, False), (10, True)]:
        part = tmp_path / f"after{after}.jsonl.part"
        part.write_text(json.dumps({"frame_index": 0}) + "\n" + json.dumps({"frame_index": 5}) + "\n")
        with JsonLinesOutput(str(tmp_path / f"after{after}.jsonl"), resume_after=after) as output:
            try:
                output.check_for_a_gap(5)
                refused = False
            except UsageError:
                refused = True
        said = capsys.readouterr().err
        kept = 1 if after < 5 else 2
        assert f"kept {kept} frames, the last frame {5 if kept == 2 else 0}" in said
        assert refused is gap, (after, said)


def test_resuming_from_the_start_or_with_nothing_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--after -1 is never a gap; nothing kept with --after N may be (another command's .part): said, not refused."""
    for after, warned in [(-1, False), (3, True)]:
        part = tmp_path / f"from{after}.jsonl.part"
        part.write_text(json.dumps({"frame_index": 7}) + "\n")
        with JsonLinesOutput(str(tmp_path / f"from{after}.jsonl"), resume_after=after) as output:
            output.check_for_a_gap(1)
        said = capsys.readouterr().err
        assert "kept 0 frames" in said
        assert ("holds no frame up to 3" in said) is warned, said


def test_results_on_stdout_through_a_path_are_recognised_as_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-o /dev/stdout | jq`: the summary must go to stderr, as with `-o -`, or jq meets it."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stdout, os.fdopen(read_end):
        monkeypatch.setattr(sys, "stdout", stdout)
        assert is_stdout("-")
        assert is_stdout(f"/dev/fd/{stdout.fileno()}")
        assert not is_stdout(str(tmp_path / "results.jsonl"))
        assert not is_stdout(None)
    redirected = tmp_path / "f"
    with redirected.open("w", encoding="utf-8") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert is_stdout(str(redirected))  # `-o f > f`
    monkeypatch.setattr(sys, "stdout", None)  # descriptor 1 closed
    assert not is_stdout(str(redirected)) and is_stdout("-")


def test_a_new_file_under_proc_that_is_no_descriptor_is_written_as_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only /dev/fd/N and /proc/PID/fd/N are descriptors: /proc/self/cwd/new.jsonl is a new file."""
    monkeypatch.chdir(tmp_path)
    target = plan_output("/proc/self/cwd/new.jsonl")
    assert target.part is not None and target.part.endswith("new.jsonl.part")
    with pytest.raises(UsageError, match="no such descriptor is open"):
        plan_output("/proc/self/fd/987")


def test_a_second_command_writing_the_same_results_file_is_refused_while_the_first_writes(
    tmp_path: Path, video_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both would write FILE.part: the first to finish would rename the other's results over
    FILE while saying it succeeded (an `xargs -P` over two folders' clip.mp4, a batch restarted)."""
    results = tmp_path / "res.jsonl"
    with JsonLinesOutput(str(results)) as first:
        first.write(FRAME)
        second = JsonLinesOutput(str(results))
        with pytest.raises(UsageError) as refused, second:
            pass
        assert str(refused.value) == (f"cannot write results to {results}: another videodag command is writing them "
                                      f"({results}.part is locked): wait for it to end, or give this one another -o")
        # The command line: refused before anything is sent (nothing listens on port 9), exit 2.
        assert main(["--server", "127.0.0.1:9", "run", str(video_path), "--pipeline", "p", "-o", str(results),
                     "-q"]) == _exit_codes.USAGE
        assert "another videodag command is writing them" in capsys.readouterr().err
        first.write(FrameResult(1, 0.04, {"n": 2}))
    assert [json.loads(line)["frame_index"] for line in results.read_text().splitlines()] == [0, 1]

    with JsonLinesOutput(str(results)) as after:  # the first is done: free again
        after.write(FRAME)
    assert [json.loads(line)["frame_index"] for line in results.read_text().splitlines()] == [0]


def test_a_continued_part_stays_locked_after_it_took_its_new_content(tmp_path: Path) -> None:
    """Resuming writes the kept frames to a file of its own that takes the .part's name: the lock moves with it."""
    results = tmp_path / "res.jsonl"
    Path(f"{results}.part").write_text("".join(json.dumps({"frame_index": i}) + "\n" for i in range(3)))
    with JsonLinesOutput(str(results), resume_after=1) as resumed:
        for other in (JsonLinesOutput(str(results)), JsonLinesOutput(str(results), resume_after=0)):
            with pytest.raises(UsageError, match="is locked"), other:
                pass
        resumed.write(FrameResult(2, 0.08, {}))
    assert [json.loads(line)["frame_index"] for line in results.read_text().splitlines()] == [0, 1, 2]


def test_a_part_renamed_by_its_writer_as_it_is_locked_is_not_taken_for_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer finishing renames its .part to the results file between this command's open
    and its lock: that lock would be on the finished file, and the new .part nobody's."""
    from videodag_client.cli import _part_lock

    part, final = tmp_path / "res.jsonl.part", tmp_path / "res.jsonl"
    part.write_text("the other command's\n")
    locking = _part_lock._lock

    def renamed_first(descriptor: int, *arguments: str) -> None:
        if part.exists() and part.read_text() == "the other command's\n":
            os.replace(part, final)  # the other command ends
        locking(descriptor, *arguments)

    monkeypatch.setattr(_part_lock, "_lock", renamed_first)
    descriptor = _part_lock.open_locked(str(part), str(final))
    try:
        assert os.path.samestat(os.fstat(descriptor), os.stat(part))
        assert final.read_text() == "the other command's\n"
    finally:
        os.close(descriptor)


def test_a_resume_that_fails_leaves_the_part_as_it_was_and_nothing_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept frames go to a `.resuming` file that takes the `.part`'s place; one that could
    not take it (a full disk, a rename refused) was left beside it."""
    results = tmp_path / "res.jsonl"
    frames = "".join(json.dumps({"frame_index": i}) + "\n" for i in range(3))
    Path(f"{results}.part").write_text(frames)

    def refused(source: str, destination: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OutputNotWritten) as refused, JsonLinesOutput(str(results), resume_after=1):
        pass
    assert str(refused.value) == (f"cannot continue the partial results in {results}.part: No space left on device; "
                                  "it is kept as it was")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["res.jsonl.part"]
    assert Path(f"{results}.part").read_text() == frames


def test_numbers_json_has_no_words_for_are_written_as_null() -> None:
    """A server sending NaN or an infinity (the real one refuses to) had the CLI write `NaN`,
    which `jq`, JavaScript's JSON.parse and most JSON readers refuse: the whole file unread."""
    frame = FrameResult(0, 0.0, {"score": math.nan, "boxes": [[1.5, math.inf]], "inner": {"low": -math.inf}})
    line = frame_line(frame)
    assert json.loads(line, parse_constant=lambda word: pytest.fail(f"{word} written")) == {
        "frame_index": 0, "timestamp": 0.0, "result": {"score": None, "boxes": [[1.5, None]], "inner": {"low": None}}
    }
    assert frame_line(FrameResult(1, 0.04, {"n": 2.5})) == '{"frame_index":1,"timestamp":0.04,"result":{"n":2.5}}\n'


def test_a_resume_that_cannot_make_its_file_or_reopen_the_part_says_what_the_part_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "res.jsonl"
    part = Path(f"{results}.part")
    frames = "".join(json.dumps({"frame_index": i}) + "\n" for i in range(3))
    part.write_text(frames)
    Path(f"{part}.resuming").mkdir()  # left where the kept frames go: refused as the .part's own trouble
    with pytest.raises(OutputNotWritten) as refused, JsonLinesOutput(str(results), resume_after=1):
        pass
    assert str(refused.value) == f"cannot continue the partial results in {part}: Is a directory; it is kept as it was"
    assert part.read_text() == frames
    Path(f"{part}.resuming").rmdir()

    def cannot_open(path: str) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(results_module, "_open_appending", cannot_open)  # after the kept frames took its place
    with pytest.raises(OutputNotWritten) as refused, JsonLinesOutput(str(results), resume_after=1):
        pass
    assert str(refused.value) == (f"cannot continue the partial results in {part}: Too many open files; it holds "
                                  "the 2 frames up to frame 1")
    assert [json.loads(line)["frame_index"] for line in part.read_text().splitlines()] == [0, 1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["res.jsonl.part"]


def test_every_json_output_writes_null_for_numbers_json_has_no_words_for() -> None:
    """`jobs --json`, `pipelines --json` and `submit --json` wrote `NaN` and `Infinity` too."""
    record = {"fps": math.nan, "params": {"threshold": math.inf, "sizes": (1, -math.inf)}, "name": "a"}
    assert json.loads(json_text(record, indent=2)) == {"fps": None, "params": {"threshold": None, "sizes": [1, None]},
                                                       "name": "a"}
    assert json_text({"fps": 25.0}) == '{"fps": 25.0}'
