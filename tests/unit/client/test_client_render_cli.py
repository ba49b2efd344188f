"""`videodag render` as it is run, in a process of its own: names that are not UTF-8, folders it
cannot write in, and a stderr that holds its own messages only. A process of its own, because
OpenCV crashed the process (SIGSEGV) on such names, and reads FFmpeg's log level once per process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes.hostile_media import mp4_boxes, with_flipped_bits

LATIN1 = os.fsdecode(b"\xe9t\xe9")  # "été" in Latin-1: not UTF-8, held by Python as lone surrogates


def _render(*arguments: str | Path, prefix: tuple[str, ...] = (), temp_dir: Path | None = None) -> tuple[int, str]:
    """Exit code and stderr of `videodag render ARGUMENTS`, the arguments passed as the bytes of their names."""
    environment = dict(os.environ, **({"TMPDIR": str(temp_dir)} if temp_dir is not None else {}))
    command = [*prefix, sys.executable, "-m", "videodag_client.cli", "render", *map(os.fsencode, arguments)]
    process = subprocess.run(command, capture_output=True, env=environment, timeout=120)
    return process.returncode, process.stderr.decode(errors="replace")


def _write_results(path: Path, frame_indexes: list[int]) -> Path:
    path.write_text("".join(
        json.dumps({"frame_index": index, "result": {"boxes": [{"box": [10, 10, 200, 200]}]}}) + "\n"
        for index in frame_indexes
    ))
    return path


def _decoded_frame_count(video: Path, tmp_path: Path) -> int:
    """Read through a copy with a plain name: this process's OpenCV would crash on the other."""
    copy = tmp_path / f"check{video.suffix}"
    shutil.copyfile(video, copy)
    capture = cv2.VideoCapture(str(copy))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


@pytest.mark.parametrize("where", ["file names", "folder name"])
def test_names_that_are_not_utf8_are_rendered(sample_clip: Path, tmp_path: Path, where: str) -> None:
    folder = tmp_path / (LATIN1 if where == "folder name" else "plain")
    folder.mkdir()
    stem = f"clip {LATIN1}" if where == "file names" else "clip"
    video, output, sheet = folder / f"{stem}.mp4", folder / f"{stem} annotated.avi", folder / f"{stem} sheet.png"
    shutil.copyfile(sample_clip, video)
    # Results past the video's end (in the folder case) make the sheet read the written video back.
    results = _write_results(folder / f"{stem}.jsonl", [0, 60] if where == "file names" else [500])
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()

    exit_code, error = _render(video, results, "-o", output, "--snapshot", sheet, temp_dir=temp_dir)

    assert exit_code == 0, error
    assert _decoded_frame_count(output, tmp_path) == 120
    picture = cv2.imdecode(np.frombuffer(sheet.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.std() > 20
    assert sorted(folder.iterdir()) == sorted([video, results, output, sheet]), "no partial file left"
    assert list(temp_dir.iterdir()) == [], "the links OpenCV opened the files through are removed"


def _as_an_ordinary_user() -> tuple[str, ...]:
    """A command prefix that drops root's licence to write in any folder (tests may run as root)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, without setpriv to drop the privilege of writing in any folder")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.parametrize("option", ["-o", "--snapshot"])
def test_a_destination_folder_that_cannot_be_written_is_refused_before_decoding(
    sample_clip: Path, tmp_path: Path, option: str
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    results = _write_results(tmp_path / "results.jsonl", [0])
    output = (locked if option == "-o" else tmp_path) / "annotated.mp4"
    sheet = (locked if option == "--snapshot" else tmp_path) / "sheet.png"

    exit_code, error = _render(sample_clip, results, "-o", output, "--snapshot", sheet, prefix=_as_an_ordinary_user())

    destination = output if option == "-o" else sheet
    assert (exit_code, error) == (2, f"error: {option} {destination}: cannot write it: the directory {locked} is not "
                                     "writable\n")
    assert sorted(tmp_path.iterdir()) == [locked, results], "nothing rendered"
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("damage", ["no index", "flipped bits"])
def test_opencv_and_ffmpeg_log_nothing_on_stderr(sample_clip: Path, tmp_path: Path, damage: str) -> None:
    data = sample_clip.read_bytes()
    media = next(box for box in mp4_boxes(data) if box.kind == "mdat")
    video = tmp_path / "damaged.mp4"
    if damage == "no index":  # FFmpeg: "moov atom not found"
        video.write_bytes(data[media.offset:])
    else:  # FFmpeg's H.264 decoder: "Reference 4 >= 4", "error while decoding MB ..."
        video.write_bytes(with_flipped_bits(data, range(8 * (media.offset + 20_000), 8 * len(data), 8 * 4099)))
    results = _write_results(tmp_path / "results.jsonl", [0])

    exit_code, error = _render(video, results, "-o", tmp_path / "out.avi", "--snapshot", tmp_path / "sheet.png")

    if damage == "no index":
        assert (exit_code, error) == (2, f"error: cannot open video {str(video)!r}\n")
    else:
        assert (exit_code, error) == (0, "")


def test_a_video_and_a_sheet_named_by_symbolic_links_are_written_through_them(
    sample_clip: Path, tmp_path: Path
) -> None:
    """As `run -o` writes results: the file a link points to is replaced and the link stays (the
    sheet replaced its link with a file, leaving the old sheet where the link pointed)."""
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "annotated.avi").write_bytes(b"old")
    (targets / "sheet.png").write_bytes(b"old")
    for name in ("annotated.avi", "sheet.png"):
        (tmp_path / name).symlink_to(targets / name)
    results = _write_results(tmp_path / "results.jsonl", [0, 5])
    code, said = _render(sample_clip, results, "-o", tmp_path / "annotated.avi", "--snapshot", tmp_path / "sheet.png",
                         "--snapshot-frames", "2")
    assert code == 0, said
    for name in ("annotated.avi", "sheet.png"):
        assert (tmp_path / name).is_symlink(), name
        assert (targets / name).stat().st_size > 1000, name
    assert sorted(path.name for path in targets.iterdir()) == ["annotated.avi", "sheet.png"], "no partial left"


def test_two_renders_to_names_alike_but_for_bytes_that_are_not_utf8_write_apart(
    sample_clip: Path, tmp_path: Path
) -> None:
    """`r\\xe9.avi` and `r\\xe8.avi` are both `r?.avi` to OpenCV: rendered at once, they shared one
    partial file, and one of them failed as if the disk were full."""
    results = _write_results(tmp_path / "results.jsonl", [0])
    outputs = [tmp_path / os.fsdecode(b"r\xe9.avi"), tmp_path / os.fsdecode(b"r\xe8.avi")]
    command = [sys.executable, "-m", "videodag_client.cli", "render", os.fsencode(sample_clip), os.fsencode(results)]
    renders = [subprocess.Popen([*command, b"-o", os.fsencode(output)], stderr=subprocess.PIPE) for output in outputs]
    for render in renders:
        _, said = render.communicate(timeout=120)
        assert render.returncode == 0, said
    assert all(_decoded_frame_count(output, tmp_path) == 120 for output in outputs)
