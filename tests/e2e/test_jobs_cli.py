"""`videodag submit`, `watch`, `jobs` and `cancel` against a real server (embedded job backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from jobs_harness import JobsDeployment, deployment, finished, is_running_with_frames, wait_for_job

from fakes.media import garbage_bytes
from videodag_client import JobState, RunOptions, VideodagClient
from videodag_client.cli import _exit_codes, main


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobsDeployment]:
    with deployment("embedded", tmp_path) as deployed:
        yield deployed


@pytest.fixture
def client(jobs: JobsDeployment) -> VideodagClient:
    return jobs.start_server()


def _server(jobs: JobsDeployment) -> list[str]:
    return ["--server", f"127.0.0.1:{jobs.servers[0].port}"]


def test_submit_then_watch_writes_every_frame_and_the_summary(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = make_video(9)
    output = tmp_path / "results.jsonl"

    assert main([*_server(jobs), "submit", str(video), "--pipeline", "frame_stats_v1", "--stride", "2", "-q"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main([*_server(jobs), "watch", job_id, "-o", str(output)]) == 0

    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["frame_index"] for record in records] == [0, 2, 4, 6, 8]
    assert all(record["result"]["stats"]["width"] == 64 for record in records)
    assert "frames:     5 processed" in capsys.readouterr().out
    assert main([*_server(jobs), "watch", job_id, "--after", "4", "-o", str(output), "-q"]) == 0
    assert [json.loads(line)["frame_index"] for line in output.read_text().splitlines()] == [6, 8]


def test_resuming_a_finished_job_past_the_end_of_its_part_is_refused_before_any_frame_is_written(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished job's watch sends its frames, then the job (with its stride): the gap was found
    only then, after frames 9 on had gone into the .part said to be "kept as it is"."""
    job = client.submit_job(make_video(12), "frame_stats_v1", RunOptions(frame_stride=2))
    assert wait_for_job(client, job.id, finished).state is JobState.SUCCEEDED
    output = tmp_path / "results.jsonl"
    assert main([*_server(jobs), "watch", job.id, "-o", str(output), "-q"]) == 0
    part = tmp_path / "results.jsonl.part"
    kept = "".join(output.read_text().splitlines(keepends=True)[:3])  # frames 0, 2, 4
    output.unlink()
    part.write_text(kept)
    capsys.readouterr()

    assert main([*_server(jobs), "watch", job.id, "--after", "7", "-o", str(output), "-q"]) == _exit_codes.USAGE
    said = capsys.readouterr().err.splitlines()  # the refusal alone: nothing said of continuing, or of keeping
    assert said == [f"error: {part} ends at frame 4, not 7: continued after frame 7, {output} would miss the frames "
                    "in between; resume with --after 4 (the .part is kept as it is)"]
    assert part.read_text() == kept and not output.exists()
    assert main([*_server(jobs), "watch", job.id, "--after", "5", "-o", str(output), "-q"]) == 0  # stride 2: no gap
    assert [json.loads(line)["frame_index"] for line in output.read_text().splitlines()] == [0, 2, 4, 6, 8, 10]


def test_a_resume_the_server_refuses_leaves_the_part_as_it_was(
    jobs: JobsDeployment, client: VideodagClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown job (a typo in its id): the .part lost its frames after --after before the
    server said so."""
    output = tmp_path / "results.jsonl"
    part = tmp_path / "results.jsonl.part"
    kept = "".join(json.dumps({"frame_index": index, "timestamp": 0, "result": {}}) + "\n" for index in range(5))
    part.write_text(kept)
    resumed = [*_server(jobs), "watch", "0123456789abcdef01234567", "--after", "2", "-o", str(output), "-q"]
    assert main(resumed) == _exit_codes.NOT_FOUND
    assert "NOT_FOUND" in capsys.readouterr().err
    assert part.read_text() == kept and not output.exists()


def test_submit_dash_uploads_the_video_from_a_pipe(jobs: JobsDeployment, client: VideodagClient, make_video) -> None:
    video = make_video(6)
    submitted = subprocess.run(
        [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "submit", "-", "--pipeline", "frame_stats_v1",
         "-q"],
        input=video.read_bytes(), capture_output=True, timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr.decode()
    job = wait_for_job(client, submitted.stdout.decode().strip(), finished)
    assert (job.state, job.frames_done) == (JobState.SUCCEEDED, 6)


def test_a_job_id_standard_output_cannot_take_is_given_on_stderr(
    jobs: JobsDeployment, client: VideodagClient, make_video
) -> None:
    with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
        submitted = subprocess.run(
            [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "submit", str(make_video(3)),
             "--pipeline", "frame_stats_v1", "-q"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    assert submitted.returncode == _exit_codes.SERVER_ERROR
    [job] = client.list_jobs().jobs
    assert submitted.stderr == (
        f"error: job {job.id} is queued, but writing it to standard output failed (No space left on device); "
        f"follow it with: videodag watch {job.id}\n"
    )


def _closing(descriptor: int, command: list[str]) -> list[str]:
    """`command` run with `descriptor` closed, as `N>&-` in a shell does. Not with preexec_fn:
    that makes Python fork this process, whose gRPC then restarts its poller in the child, and
    closing the descriptors before exec aborted the child (-6, "epoll_wait error: Bad file
    descriptor") before the command ever ran."""
    return ["/bin/sh", "-c", f'exec "$0" "$@" {descriptor}>&-', *command]


@pytest.mark.parametrize("command", [["pipelines"], ["submit", "VIDEO", "--pipeline", "frame_stats_v1"]])
def test_a_closed_standard_output_is_refused_before_anything_is_done(
    jobs: JobsDeployment, client: VideodagClient, make_video, command: list[str]
) -> None:
    arguments = [str(make_video(3)) if word == "VIDEO" else word for word in command]
    refused = subprocess.run(
        _closing(1, [sys.executable, "-m", "videodag_client.cli", *_server(jobs), *arguments]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
    )
    assert refused.returncode == _exit_codes.USAGE
    assert refused.stderr == "error: standard output is closed; point it somewhere (> /dev/null to discard it)\n"
    assert client.list_jobs().jobs == ()


def test_a_closed_standard_output_is_held_on_dev_null_so_nothing_else_takes_its_number() -> None:
    check = (
        "import os, sys\n"
        "from videodag_client.cli import main\n"
        "code = main(['--server', '127.0.0.1:1', 'pipelines'])\n"
        "sys.stderr.write(f'{code} {os.readlink(\"/proc/self/fd/1\")}')\n"
    )
    held = subprocess.run(_closing(1, [sys.executable, "-c", check]), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    assert held.stderr.endswith(f"{_exit_codes.USAGE} /dev/null"), held.stderr


def test_a_closed_standard_error_keeps_messages_out_of_the_output(
    jobs: JobsDeployment, client: VideodagClient, make_video
) -> None:
    """`2>&-`: print() to a None sys.stderr writes to stdout, into the results; and the progress
    bars' check of stderr failed the command before it did anything, without a word."""
    ran = subprocess.run(
        _closing(2, [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "run", str(make_video(3)),
                     "--pipeline", "frame_stats_v1", "--start", "100", "-q", "-o", "-"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60,
    )
    assert ran.returncode == 0 and ran.stdout == ""  # no frame in the window, and its warning not in the results
    refused = subprocess.run(
        _closing(2, [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "run", str(make_video(3)),
                     "--pipeline", "no_such_pipeline", "-o", "-"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60,
    )
    assert refused.returncode == _exit_codes.exit_code_for_status(grpc.StatusCode.NOT_FOUND)
    assert refused.stdout == ""


@pytest.mark.parametrize(("closed", "output"), [(2, "/dev/stderr"), (1, "/dev/stdout"), (1, "/dev/fd/1"),
                                                (2, "/proc/self/fd/2")])
def test_results_to_a_closed_descriptor_by_its_path_are_refused(
    jobs: JobsDeployment, client: VideodagClient, make_video, closed: int, output: str
) -> None:
    """The closed descriptor is held on /dev/null: results written there would vanish without a word."""
    refused = subprocess.run(
        _closing(closed, [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "run", str(make_video(3)),
                          "--pipeline", "frame_stats_v1", "-o", output]),
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == _exit_codes.USAGE
    said = refused.stdout if closed == 2 else refused.stderr
    assert said == ("" if closed == 2 else f"error: cannot write results to {output}: no such descriptor is open\n")


def test_a_listing_cut_at_its_limit_says_so(
    jobs: JobsDeployment, client: VideodagClient, make_video, capsys: pytest.CaptureFixture[str]
) -> None:
    video = make_video(2)
    for _ in range(3):
        client.submit_job(video, "frame_stats_v1")
    capsys.readouterr()
    assert main([*_server(jobs), "jobs", "--limit", "2", "--json"]) == 0
    printed = capsys.readouterr()
    assert len(json.loads(printed.out)) == 2
    assert printed.err == "the newest 2 jobs; --limit 0 lists them all\n"
    for limit in ("3", "0"):
        assert main([*_server(jobs), "jobs", "--limit", limit, "--json"]) == 0
        printed = capsys.readouterr()
        assert (len(json.loads(printed.out)), printed.err) == (3, "")


def test_an_idempotency_key_used_for_another_video_or_other_options_is_refused(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same video under another name, or options written otherwise that sample alike, find
    the key's job; other bytes of the same name and size, or other sampling, are refused."""
    first = make_video(2)
    same = tmp_path / "elsewhere" / "same.mp4"  # the same bytes under another name
    same.parent.mkdir()
    same.symlink_to(first)
    altered = tmp_path / "altered" / first.name  # the same name and size, other bytes
    altered.parent.mkdir()
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    submit = [*_server(jobs), "submit", "--pipeline", "frame_stats_v1", "--idempotency-key", "upload-42", "-q"]
    assert main([*submit, str(first)]) == 0
    job_id = capsys.readouterr().out.strip()
    for again in ([str(first)], [str(same)], [str(first), "--stride", "1", "--start", "0", "--max-frames", "0"]):
        assert main([*submit, *again]) == 0, "the same submission again: the same job, nothing to say"
        assert capsys.readouterr() == (f"{job_id}\n", ""), again
    for other in ([str(make_video(4))], [str(altered)], [str(first), "--stride", "5"]):
        assert main([*submit, *other]) == _exit_codes.SERVER_ERROR, other
        printed = capsys.readouterr()
        assert printed.out == ""
        assert f"idempotency key 'upload-42' was already used for job {job_id} " in printed.err
    finer_than_kept = [*submit[:-3], "--idempotency-key", "k", "-q", str(first), "--start", "0.1234567891"]
    assert main(finer_than_kept) == 0 and main(finer_than_kept) == 0, "times are kept to the nanosecond, alike"
    assert len(set(capsys.readouterr().out.split())) == 1
    assert len(client.list_jobs().jobs) == 2


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_run_writing_its_results_to_a_file_needs_no_standard_output(
    jobs: JobsDeployment, client: VideodagClient, make_video, tmp_path: Path, quiet: list[str]
) -> None:
    output = tmp_path / "results.jsonl"
    ran = subprocess.run(
        _closing(1, [sys.executable, "-m", "videodag_client.cli", *_server(jobs), "run", str(make_video(3)),
                     "--pipeline", "frame_stats_v1", "-o", str(output), *quiet]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
    )
    assert (ran.returncode, ran.stderr) == (0, "")
    assert [json.loads(line)["frame_index"] for line in output.read_text().splitlines()] == [0, 1, 2]


def test_jobs_lists_and_shows_and_cancel_stops_a_job(
    jobs: JobsDeployment, client: VideodagClient, sample_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.submit_job(sample_clip, "paced")
    wait_for_job(client, job.id, is_running_with_frames(1))

    assert main([*_server(jobs), "cancel", job.id]) == 0
    assert f"job {job.id}: CANCELLED after" in capsys.readouterr().out
    assert main([*_server(jobs), "jobs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(record["id"], record["state"]) for record in listed] == [(job.id, "CANCELLED")]
    assert main([*_server(jobs), "jobs"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "PIPELINE", "FRAMES", "CREATED", "VIDEO"]
    assert row.startswith(f"{job.id}  CANCELLED  paced") and row.endswith(f"  {sample_clip.name}")
    assert main([*_server(jobs), "jobs", "--state", "succeeded"]) == 0
    assert capsys.readouterr().out.strip() == "no jobs"
    assert main([*_server(jobs), "jobs", "--state", "CANCELLED", "--json"]) == 0  # the name as listed
    assert [record["id"] for record in json.loads(capsys.readouterr().out)] == [job.id]
    assert main([*_server(jobs), "jobs", "show", job.id]) == 0
    assert f"job {job.id}: CANCELLED" in capsys.readouterr().out
    assert main([*_server(jobs), "watch", job.id, "-q"]) == _exit_codes.SERVER_ERROR
    assert "CANCELLED" in capsys.readouterr().err
    assert main([*_server(jobs), "cancel", "0" * 24]) == _exit_codes.NOT_FOUND
    capsys.readouterr()
    queued = client.submit_job(sample_clip, "paced", RunOptions(start_seconds=1))
    assert main([*_server(jobs), "cancel", "--json", queued.id]) == 0  # as submit --json and jobs show --json
    record = json.loads(capsys.readouterr().out)
    assert (record["id"], record["state"]) == (queued.id, "CANCELLED")


def test_watch_of_a_failed_job_exits_with_the_error_code(
    jobs: JobsDeployment, client: VideodagClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(garbage_bytes(10_000))
    job = client.submit_job(garbage, "frame_stats_v1")
    assert wait_for_job(client, job.id, finished).state is JobState.FAILED

    assert main([*_server(jobs), "watch", job.id, "-q"]) == _exit_codes.INVALID_ARGUMENT
    assert "Unable to read video file" in capsys.readouterr().err
    assert main([*_server(jobs), "jobs", "delete", job.id]) == 0
    assert main([*_server(jobs), "jobs", "show", job.id]) == _exit_codes.NOT_FOUND
