"""Output that cannot be written (a full disk, /dev/full): exit 1, as `videodag --help` says, with a
message naming the output, and the partial results kept and announced as after any interruption."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    frame_response,
    summary_response,
    video_info_response,
)

from videodag_client.cli import _exit_codes, _results, main

NO_SPACE = os.strerror(errno.ENOSPC)


def _script_frames(servicer: FakeVideoPipelineServicer, result_bytes: int) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=3),
        *(frame_response(i, 25.0, {"pad": "x" * result_bytes}) for i in range(3)),
        summary_response(3),
    ]


class _FillingFile(io.RawIOBase):
    """A file on a disk that has `room` bytes left: what fits is written, then every write fails (ENOSPC)."""

    def __init__(self, path: str, room: int) -> None:
        self._file = open(path, "wb")  # noqa: SIM115  # closed with this file
        self._room = room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self._room == 0:
            raise OSError(errno.ENOSPC, NO_SPACE)
        written = self._file.write(bytes(data[:self._room]))
        self._room -= written
        return written

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.mark.parametrize(
    ("result_bytes", "room", "kept"),
    [
        (10, 100, "at most 3 frames, up to frame 2"),  # buffered, and found as the file is closed
        (10_000, 15_000, "at most 2 frames, up to frame 1"),  # more than the 8 KiB buffer: as frame 2 is written
    ],
    ids=["as the file is closed", "as a frame is written"],
)
def test_results_a_full_disk_cannot_take_exit_1_and_keep_the_part_file(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], result_bytes: int, room: int, kept: str,
) -> None:
    _script_frames(servicer, result_bytes)
    monkeypatch.setattr(_results, "_open_new", lambda path: io.TextIOWrapper(
        io.BufferedWriter(_FillingFile(path, room)), encoding="utf-8"))
    output = tmp_path / "results.jsonl"

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-q",
                      "-o", str(output)])

    assert exit_code == _exit_codes.OUTPUT_NOT_WRITTEN == 1
    assert capsys.readouterr().err.splitlines() == [
        f"partial results ({kept}) kept in {output}.part",
        f"error: cannot write results to {output}: {NO_SPACE}",
    ]
    assert not output.exists()
    assert Path(f"{output}.part").read_text().startswith('{"frame_index":0,')


def test_results_to_a_device_that_takes_nothing_exit_1_naming_it(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _script_frames(servicer, 10)
    assert main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-q", "-o", "/dev/full"]) == 1
    assert capsys.readouterr().err == f"error: cannot write results to /dev/full: {NO_SPACE}\n"


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["pipelines"], "cannot write to standard output"),
        (["pipelines", "--json"], "cannot write to standard output"),
        (["pipelines", "show", "motion_v1"], "cannot write to standard output"),
        (["run", "{video}", "--pipeline", "motion_v1", "-q", "-o", "-"], "cannot write results to standard output"),
        (["run", "{video}", "--pipeline", "motion_v1"], "cannot write to standard output"),  # the summary
    ],
    ids=["pipelines", "pipelines --json", "pipelines show", "run -o -", "run's summary"],
)
def test_standard_output_that_takes_nothing_exits_1(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, arguments: list[str], said: str
) -> None:
    """In a process of its own, stdout buffered as usual: what it could not write must not fail
    again as the process exits (a traceback and exit code 120)."""
    _script_frames(servicer, 10)
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-m", "videodag_client.cli", "--server", target,
               *(argument.format(video=video_path) for argument in arguments)]
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        process = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, env=environment, timeout=60)
    assert (process.returncode, process.stderr) == (1, f"error: {said}: {NO_SPACE}\n")
