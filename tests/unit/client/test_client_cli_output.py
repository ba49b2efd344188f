"""Where `-o` writes: FIFOs and devices in place, symlinks followed, directories and the input
refused before the upload; `run -` reads stdin; SIGTERM stops a run like Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    WaitForCancellation,
    frame_response,
    summary_response,
    video_info_response,
)

from videodag_client.cli import _exit_codes, main


def _script_three_frames(servicer: FakeVideoPipelineServicer) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=3),
        *(frame_response(i, 25.0, {"n": i}) for i in range(3)),
        summary_response(3),
    ]


def _run(target: str, video: Path | str, *extra: str) -> int:
    return main(["--server", target, "run", str(video), "--pipeline", "motion_v1", "-q", *extra])


def _frame_indexes(text: str) -> list[int]:
    return [json.loads(line)["frame_index"] for line in text.splitlines()]


def test_output_into_a_fifo_is_written_in_place_without_a_part_file(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path
) -> None:
    _script_three_frames(servicer)
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()

    assert _run(target, video_path, "-o", str(fifo)) == 0
    reader.join(30)

    assert _frame_indexes(received[0]) == [0, 1, 2]
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "still a FIFO, not replaced by a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "results.fifo"]


def test_output_to_a_character_device_is_written_in_place(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a character device (mknod) needs root")
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the same device as /dev/null
        device.open("w").close()
    except OSError as error:
        pytest.skip(f"cannot create or open a device node under {tmp_path}: {error}")
    _script_three_frames(servicer)

    assert _run(target, video_path, "-o", str(device)) == 0

    assert stat.S_ISCHR(device.lstat().st_mode)
    assert not Path(f"{device}.part").exists()


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path
) -> None:
    _script_three_frames(servicer)
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "results.jsonl"
    real.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)

    assert _run(target, video_path, "-o", str(link)) == 0

    assert link.is_symlink() and link.resolve() == real
    assert _frame_indexes(real.read_text()) == [0, 1, 2]
    assert not Path(f"{link}.part").exists() and not Path(f"{real}.part").exists()


@pytest.mark.parametrize("kind", ["directory", "missing directory", "a new directory", "a closed descriptor",
                                  "the input", "a link to the input"])
def test_a_bad_output_is_refused_before_the_upload(
    target: str,
    servicer: FakeVideoPipelineServicer,
    video_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    _script_three_frames(servicer)
    original = video_path.read_bytes()
    output = {
        "directory": tmp_path,
        "missing directory": tmp_path / "absent" / "out.jsonl",
        "a new directory": f"{tmp_path / 'new'}/",
        "a closed descriptor": "/dev/fd/987",
        "the input": video_path,
        "a link to the input": tmp_path / "link.jsonl",
    }[kind]
    if kind == "a link to the input":
        output.symlink_to(video_path)

    assert _run(target, video_path, "-o", str(output)) == _exit_codes.USAGE

    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot write results to {output}: ") and "Traceback" not in error
    expected = {"directory": "is a directory", "missing directory": f"directory {tmp_path / 'absent'} does not exist",
                "a new directory": "no such directory; name a file",
                "a closed descriptor": "no such descriptor is open",
                "the input": "is the input video", "a link to the input": "is the input video"}[kind]
    assert expected in error
    assert servicer.requests == [], "refused before anything was uploaded"
    assert video_path.read_bytes() == original
    assert not list(tmp_path.glob("*.part"))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        name for name in (video_path.name, "link.jsonl") if (tmp_path / name).exists()
    ), "nothing was created"


def _cli(target: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "videodag_client.cli", "--server", target, *arguments]


def test_run_dash_reads_the_video_from_a_pipe(
    target: str, servicer: FakeVideoPipelineServicer, video_bytes: bytes
) -> None:
    _script_three_frames(servicer)
    process = subprocess.run(
        _cli(target, "run", "-", "--pipeline", "motion_v1", "-o", "-", "-q"),
        input=video_bytes, capture_output=True, timeout=60,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert _frame_indexes(process.stdout.decode()) == [0, 1, 2]
    assert servicer.uploaded_bytes() == video_bytes
    assert servicer.config.declared_size_bytes == 0  # a pipe's size is not known up front


def test_run_dash_with_a_redirected_file_declares_its_size(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    _script_three_frames(servicer)
    with video_path.open("rb") as stdin:
        process = subprocess.run(_cli(target, "run", "-", "--pipeline", "motion_v1", "-q"),
                                 stdin=stdin, capture_output=True, timeout=60)
    assert process.returncode == 0, process.stderr.decode()
    assert servicer.config.declared_size_bytes == len(video_bytes)


def test_decode_during_upload_of_a_pipe_is_a_usage_error(
    target: str, servicer: FakeVideoPipelineServicer, video_bytes: bytes
) -> None:
    process = subprocess.run(
        _cli(target, "run", "-", "--pipeline", "motion_v1", "--decode-during-upload", "-q"),
        input=video_bytes, capture_output=True, timeout=60,
    )
    assert process.returncode == _exit_codes.USAGE
    error = process.stderr.decode()
    assert error.startswith("error: --decode-during-upload needs a non-empty file, not a pipe")
    assert "declare_size" not in error
    assert "Traceback" not in error
    assert servicer.requests == []


def test_decode_during_upload_of_an_empty_file_is_a_usage_error(
    target: str, servicer: FakeVideoPipelineServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert _run(target, empty, "--decode-during-upload", "-o", str(tmp_path / "out.jsonl")) == _exit_codes.USAGE
    assert "--decode-during-upload needs a non-empty file, not a pipe" in capsys.readouterr().err
    assert servicer.requests == []
    assert list(tmp_path.iterdir()) == [empty]


@pytest.mark.parametrize(("stop", "exit_code", "said"), [
    (signal.SIGTERM, _exit_codes.TERMINATED, "terminated"),
    (signal.SIGHUP, _exit_codes.HUNG_UP, "hung up"),  # the terminal closed: it left the part unannounced
])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c_and_keep_the_part_file(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path, stop: signal.Signals,
    exit_code: int, said: str,
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=100),
        frame_response(0, 25.0, {"n": 0}),
        WaitForCancellation(timeout_seconds=60),
    ]
    output = tmp_path / "out.jsonl"
    # SIGHUP as a terminal leaves it, even for tests run under nohup (the CLI keeps an ignored one
    # ignored): the child inherits the disposition this process has when it starts it.
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        process = subprocess.Popen(_cli(target, "run", str(video_path), "--pipeline", "motion_v1", "-o", str(output)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGHUP, hangup)
    part = Path(f"{output}.part")
    deadline = time.monotonic() + 30
    while not servicer.upload_finished.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # the first frame reaches the client (nothing to poll: the .part is flushed at the end)
    process.send_signal(stop)
    _, error = process.communicate(timeout=30)

    assert process.returncode == exit_code
    assert error.decode().splitlines() == [f"partial results (1 frames, up to frame 0) kept in {part}", said]
    assert _frame_indexes(part.read_text()) == [0]
    assert servicer.cancelled.wait(10), "the call was cancelled, as on Ctrl-C"
