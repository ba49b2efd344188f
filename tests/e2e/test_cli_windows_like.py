"""The `videodag` CLI where Windows differs from Linux (`fakes/windows_like.py`): every command
ended in a traceback for want of SIGHUP, `-o FILE` for want of O_NOFOLLOW, and a finished
`.part` could not become the results file while the CLI still held it open."""

# ruff: noqa: F811 - the tests take `jobs` and `client`, the fixtures imported from test_jobs_cli

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from jobs_harness import JobsDeployment, finished, wait_for_job
from test_jobs_cli import client, jobs  # noqa: F401 - fixtures: an embedded deployment, its client

import fakes
from fakes.waiting import wait_until
from videodag_client import JobState, VideodagClient
from videodag_client.cli import _exit_codes

_RUNNER = Path(fakes.__file__).parent / "windows_like.py"


def _videodag(jobs: JobsDeployment, *arguments: str, held_open: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "WINDOWS_LIKE_HELD_OPEN": str(held_open or "")}
    return subprocess.run([sys.executable, str(_RUNNER), "--server", f"127.0.0.1:{jobs.servers[0].port}", *arguments],
                          capture_output=True, text=True, timeout=120, env=environment)


def _frame_indexes(path: Path) -> list[int]:
    return [json.loads(line)["frame_index"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_runs_write_their_results_files(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path
) -> None:
    video = make_video(6)
    output = tmp_path / "results.jsonl"

    listed = _videodag(jobs, "pipelines")
    assert listed.returncode == 0, listed.stderr
    assert "frame_stats_v1" in listed.stdout

    ran = _videodag(jobs, "run", str(video), "--pipeline", "frame_stats_v1", "-o", str(output), "-q")
    assert ran.returncode == 0, ran.stderr
    assert _frame_indexes(output) == [0, 1, 2, 3, 4, 5]
    assert b"\r" not in output.read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("results")) == ["results.jsonl"]

    # The server's own error is what the command says, with no `.part` left behind to hide it.
    unknown = _videodag(jobs, "run", str(video), "--pipeline", "no_such_pipeline", "-o", str(tmp_path / "other.jsonl"))
    assert unknown.returncode == _exit_codes.NOT_FOUND, unknown.stderr
    assert not list(tmp_path.glob("other.jsonl*"))

    missing_folder = _videodag(jobs, "run", str(video), "--pipeline", "frame_stats_v1", "-o", f"{tmp_path}/new\\")
    assert missing_folder.returncode == _exit_codes.USAGE
    assert f"cannot write results to {tmp_path}/new\\: no such directory; name a file" in missing_folder.stderr
    assert not (tmp_path / "new\\").exists()


def test_a_watch_continues_its_partial_results(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path
) -> None:
    job = client.submit_job(make_video(6), "frame_stats_v1")
    assert wait_for_job(client, job.id, finished).state is JobState.SUCCEEDED
    output = tmp_path / "results.jsonl"
    assert _videodag(jobs, "watch", job.id, "-o", str(output), "-q").returncode == 0
    kept = output.read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    output.unlink()
    Path(f"{output}.part").write_text("".join(kept), encoding="utf-8")

    continued = _videodag(jobs, "watch", job.id, "--after", "2", "-o", str(output), "-q")

    assert continued.returncode == 0, continued.stderr
    assert _frame_indexes(output) == [0, 1, 2, 3, 4, 5]
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("results")) == ["results.jsonl"]


def test_a_results_file_another_program_holds_open_keeps_them_in_the_part(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path
) -> None:
    """As a spreadsheet showing the last results would: the rename fails, and the results stay."""
    output = tmp_path / "results.jsonl"
    output.write_text("", encoding="utf-8")

    ran = _videodag(jobs, "run", str(make_video(4)), "--pipeline", "frame_stats_v1", "-o", str(output), "-q",
                    held_open=output)

    assert ran.returncode == _exit_codes.OUTPUT_NOT_WRITTEN
    assert ran.stderr.splitlines() == [
        f"error: cannot write results to {output}: The process cannot access the file because it is being used by "
        f"another process; all 4 frames are kept in {output}.part"
    ]
    assert _frame_indexes(Path(f"{output}.part")) == [0, 1, 2, 3]


def _catches(pid: int, signal_number: int) -> bool:
    """Whether the process has a handler of its own for the signal (Linux's SigCgt mask)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal_number - 1) & 1)


def test_ctrl_break_ends_a_command_as_sigterm_does(
    jobs: JobsDeployment, client: VideodagClient, tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    command = subprocess.Popen(
        [sys.executable, str(_RUNNER), "--server", f"127.0.0.1:{jobs.servers[0].port}", "run", "-", "--pipeline",
         "frame_stats_v1", "-o", str(output), "-q"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_until(lambda: _catches(command.pid, signal.SIGUSR1), timeout=30)  # waiting for its video
        command.send_signal(signal.SIGUSR1)  # SIGBREAK, in the imitation
        _, stderr = command.communicate(timeout=30)
    finally:
        command.kill()
    assert command.returncode == _exit_codes.TERMINATED, stderr
    assert stderr.splitlines()[-1] == "terminated"


def test_a_failed_run_reports_its_own_error_when_its_part_cannot_be_removed(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path
) -> None:
    """A `.part` left by an earlier command and open in another program: the run's own error
    (an unknown pipeline, NOT_FOUND) was hidden behind Windows' refusal to remove the file."""
    output = tmp_path / "results.jsonl"
    part = tmp_path / "results.jsonl.part"
    part.write_text("")

    ran = _videodag(jobs, "run", str(make_video(3)), "--pipeline", "no_such_pipeline", "-o", str(output),
                    held_open=part)

    assert ran.returncode == _exit_codes.NOT_FOUND, ran.stderr
    assert "no_such_pipeline" in ran.stderr
