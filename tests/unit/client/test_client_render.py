"""`videodag render`: results drawn onto the real sample clip, decoded back and checked pixel by pixel."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fakes.media import FRAME_SIZE, read_frame_index
from videodag_client._contact_sheet import FrameSampler
from videodag_client._drawing import _colour, draw_result, find_annotations
from videodag_client._render import render_video
from videodag_client._render_error import RenderError
from videodag_client._results_file import load_results
from videodag_client.cli import main

BOX = [120.0, 100.0, 320.0, 400.0]  # x1, y1, x2, y2 on the 768x576 clip
TRACK_ID = 7
ANNOTATED_FRAMES = range(0, 120, 10)


def decode(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def synthetic_result(frame_index: int) -> dict[str, object]:
    """A tracker output (track ids arrive as doubles), a stats output without boxes, nested text."""
    return {
        "players": [{"box": BOX, "track_id": float(TRACK_ID), "label": "person", "score": 0.91}],
        "stats": {"mean_brightness": 120.0, "frame": frame_index},
        "ocr": {"lines": [{"box": [500, 40, 700, 80], "text": "EXIT"}]},
    }


@pytest.fixture(scope="module")
def source_frames(sample_clip: Path) -> list[np.ndarray]:
    return decode(sample_clip)


@pytest.fixture(scope="module")
def rendered(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("render")
    results_path = folder / "results.jsonl"
    with results_path.open("w") as lines:
        for index in ANNOTATED_FRAMES:
            lines.write(json.dumps({"frame_index": index, "timestamp": index / 10, "result": synthetic_result(index)}))
            lines.write("\n")
    output, sheet = folder / "annotated.mp4", folder / "sheet.png"
    exit_code = main(["render", str(sample_clip), str(results_path), "-o", str(output), "--snapshot", str(sheet)])
    return {"exit_code": exit_code, "output": output, "sheet": sheet, "folder": folder}


def test_the_annotated_video_decodes_with_every_frame(rendered, source_frames) -> None:
    assert rendered["exit_code"] == 0
    frames = decode(rendered["output"])
    assert len(source_frames) == 120
    assert len(frames) == len(source_frames)
    assert frames[0].shape == source_frames[0].shape
    assert not list(rendered["folder"].glob(".*partial*"))


def test_boxes_are_drawn_where_the_results_say(rendered, source_frames) -> None:
    frames = decode(rendered["output"])
    colour = np.array(_colour("players", TRACK_ID), dtype=float)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    for index in ANNOTATED_FRAMES:
        frame, source = frames[index].astype(float), source_frames[index].astype(float)
        # The left and bottom edges of the box: the track's colour, not the scene's.
        left_edge = frame[y1 + 40:y2 - 40, x1 - 1:x1 + 2].reshape(-1, 3).mean(axis=0)
        bottom_edge = frame[y2 - 1:y2 + 2, x1 + 40:x2 - 40].reshape(-1, 3).mean(axis=0)
        assert np.abs(left_edge - colour).max() < 45, (index, left_edge, colour)
        assert np.abs(bottom_edge - colour).max() < 45, (index, bottom_edge, colour)
        assert np.abs(source[y1 + 40:y2 - 40, x1 - 1:x1 + 2].reshape(-1, 3).mean(axis=0) - colour).max() > 60
        # Inside the box and well away from it, the picture is the original (up to MPEG-4 noise).
        inside = np.abs(frame[y1 + 60:y2 - 60, x1 + 30:x2 - 30] - source[y1 + 60:y2 - 60, x1 + 30:x2 - 30]).mean()
        outside = np.abs(frame[440:560, 400:740] - source[440:560, 400:740]).mean()
        assert inside < 6 and outside < 6, (index, inside, outside)


def test_frames_without_a_result_line_are_copied_unchanged(rendered, source_frames) -> None:
    frames = decode(rendered["output"])
    x1, y1, _x2, y2 = (int(v) for v in BOX)
    for index in (5, 55, 119):
        assert index not in ANNOTATED_FRAMES
        difference = np.abs(frames[index].astype(float) - source_frames[index].astype(float))
        assert difference.mean() < 4
        assert difference[y1 + 40:y2 - 40, x1 - 1:x1 + 2].mean() < 20  # no box edge where frame 0 had one


def test_the_contact_sheet_is_a_png_of_sampled_frames(rendered) -> None:
    sheet = cv2.imread(str(rendered["sheet"]))
    assert sheet is not None
    # 12 thumbnails of 320x240 in 3 rows of 4, 4 px gaps.
    assert sheet.shape == (3 * 244 + 4, 4 * 324 + 4, 3)
    first_tile = sheet[4:244, 4:324]
    last_tile = sheet[3 * 244 - 240:3 * 244, 3 * 324 - 320:3 * 324]
    assert first_tile.std() > 20 and last_tile.std() > 20  # pictures, not the background
    assert np.abs(first_tile.astype(float) - last_tile.astype(float)).mean() > 1


def test_draw_result_colours_exactly_the_box_outline_on_a_decoded_frame(source_frames) -> None:
    frame = source_frames[0].copy()
    drawn = draw_result(frame, {"tracks": [{"box": [200, 200, 400, 300], "track_id": 3}]})
    colour = _colour("tracks", 3)
    assert drawn == 1
    assert tuple(frame[250, 200]) == colour and tuple(frame[300, 300]) == colour
    assert np.array_equal(frame[220:280, 220:380], source_frames[0][220:280, 220:380])
    assert np.array_equal(frame[350:, :], source_frames[0][350:, :])


def test_annotations_find_boxes_anywhere_and_skip_invalid_ones() -> None:
    found = find_annotations({
        "players": [{"box": [1, 2, 30, 40], "track_id": 4.0, "label": "person", "score": 0.5}],
        "deep": {"a": {"b": [{"box": [0, 0, 5, 5], "text": "Straße"}]}},
        "bad": [{"box": [5, 5, 1, 1]}, {"box": [0, 0, "x", 1]}, {"box": [0, 0, 1]}, {"box": None}],
        "scalar": 3.5,
    })
    assert [(a.output, a.caption) for a in found] == [("players", "#4 person 0.50"), ("deep", '"Stra?e"')]
    assert found[0].colour == _colour("other_output", 4)  # a track keeps its colour whatever the output


def test_results_lines_may_be_event_wrapped_and_bad_lines_are_named(tmp_path: Path) -> None:
    good = tmp_path / "events.jsonl"
    good.write_text(
        json.dumps({"event": "upload_received", "upload_received": {"size_bytes": 1}}) + "\n\n"
        + json.dumps({"event": "frame", "frame": {"frame_index": 3, "result": {"a": 1}}}) + "\n"
        + json.dumps({"frame_index": 4, "result": {"b": 2}}) + "\n"
    )
    assert load_results(good) == {3: {"a": 1}, 4: {"b": 2}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"frame_index": 0, "result": {}}) + "\n{not json\n")
    with pytest.raises(RenderError, match=r"bad.jsonl:2: not JSON"):
        load_results(bad)


def test_the_sampler_spreads_frames_over_a_video_of_unknown_length() -> None:
    sampler = FrameSampler(wanted=6, thumbnail_width=8)
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(1000):
        sampler.offer(index, tiny)
        assert len(sampler.kept) < 12
    picked = [index for index, _ in sampler.sample()]
    assert len(picked) == 6 and picked[0] == 0 and picked[-1] > 700
    assert picked == sorted(picked)


def test_the_sampler_spreads_frames_over_a_video_of_known_length() -> None:
    sampler = FrameSampler(wanted=6, thumbnail_width=8, last=39)
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(120):  # the container said 40 frames; the frames past them are not shown
        sampler.offer(index, tiny)
    assert [index for index, _ in sampler.sample()] == [0, 8, 16, 23, 31, 39]


def test_the_sampler_picks_only_candidates_evenly_by_rank_with_the_first_and_the_last() -> None:
    candidates = range(20, 120, 7)  # 15 frames with results: 20, 27, ..., 118
    sampler = FrameSampler(wanted=6, thumbnail_width=8, candidates=reversed(candidates), last=39)
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(200):
        sampler.offer(index, tiny)
    # Ranks 0, 3, 6, 8, 11, 14 of the 15; the declared end (39) only matters without candidates.
    assert [index for index, _ in sampler.sample()] == [20, 41, 62, 76, 97, 118]


def test_the_sampler_keeps_every_candidate_when_there_are_fewer_than_wanted() -> None:
    sampler = FrameSampler(wanted=6, thumbnail_width=8, candidates=[9, 5])
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(50):
        sampler.offer(index, tiny)
    assert [index for index, _ in sampler.sample()] == [5, 9]


SPARSE_BOX = [4, 4, 60, 44]  # inside the 64x48 indexed frames; no caption, so no tab hides their index blocks


def render_sparse_results(
    video: Path, result_frames: list[int], folder: Path, capsys: pytest.CaptureFixture[str]
) -> list[np.ndarray]:
    """Render `video` with a box on `result_frames` only, as `videodag render` does; the sheet's tiles."""
    results_path = folder / "results.jsonl"
    results_path.write_text("".join(
        json.dumps({"frame_index": index, "result": {"boxes": [{"box": SPARSE_BOX}]}}) + "\n"
        for index in result_frames
    ))
    output, sheet_path = folder / "annotated.avi", folder / "sheet.png"
    assert main(["render", str(video), str(results_path), "-o", str(output), "--snapshot", str(sheet_path)]) == 0
    tile_count = int(capsys.readouterr().out.rsplit("(", 1)[1].split()[0])  # "... sheet.png (12 frames)"
    sheet = cv2.imread(str(sheet_path))
    assert sheet is not None
    # 320x240 thumbnails of the 64x48 frames, in rows of 4 with 4 px gaps; cells past the last tile are bare.
    rows = -(-tile_count // 4)
    assert sheet.shape == (rows * 244 + 4, min(tile_count, 4) * 324 + 4, 3)
    cells = [sheet[4 + row * 244:row * 244 + 244, 4 + column * 324:column * 324 + 324]
             for row in range(rows) for column in range(min(tile_count, 4))]
    assert all(cell.std() == 0 for cell in cells[tile_count:])
    return cells[:tile_count]


def tile_frame_index(tile: np.ndarray) -> int:
    return read_frame_index(cv2.resize(tile, FRAME_SIZE, interpolation=cv2.INTER_AREA))


def has_the_box(tile: np.ndarray) -> bool:
    """The indexed frames are black and white: pixels of the box's colour can only be the drawn box."""
    distance = np.abs(tile.astype(int) - np.array(_colour("boxes", None))).max(axis=2)
    return int((distance < 40).sum()) > 1000


@pytest.mark.parametrize("every", [3, 5], ids=["every 3rd frame", "every 5th frame"])
def test_every_tile_of_the_sheet_is_a_frame_with_results_when_results_are_sparse(
    every: int, make_video, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As a run with `--stride 3` or `--stride 5` (and a start past frame 0) writes them.
    result_frames = list(range(2, 95, every))
    tiles = render_sparse_results(make_video(100), result_frames, tmp_path, capsys)
    shown = [tile_frame_index(tile) for tile in tiles]
    assert len(shown) == 12 and shown == sorted(set(shown))
    assert set(shown) <= set(result_frames), [index for index in shown if index not in result_frames]
    assert shown[0] == result_frames[0] and shown[-1] == result_frames[-1]
    gaps = np.diff([result_frames.index(index) for index in shown])
    assert gaps.max() - gaps.min() <= 1, gaps  # evenly spread over the frames with results
    assert all(has_the_box(tile) for tile in tiles)


def test_the_sheet_shows_every_frame_with_results_when_there_are_fewer_than_tiles(
    make_video, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result_frames = [7, 20, 21, 50, 88]
    tiles = render_sparse_results(make_video(100), result_frames, tmp_path, capsys)
    assert [tile_frame_index(tile) for tile in tiles] == result_frames
    assert all(has_the_box(tile) for tile in tiles)


def test_cli_errors_exit_with_usage(sample_clip: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text('{"frame_index": "zero"}\n')
    assert main(["render", str(sample_clip), str(results), "-o", str(tmp_path / "out.mp4")]) == 2
    assert "results.jsonl:1" in capsys.readouterr().err
    assert main(["render", str(sample_clip), str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.mp4")]) == 2
    results.write_text("")
    assert main(["render", str(tmp_path / "no_video.mp4"), str(results), "-o", str(tmp_path / "o.mp4")]) == 2
    assert main(["render", str(sample_clip), str(results), "-o", str(tmp_path / "o.gif")]) == 2
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("kind", ["the video", "the results", "a directory", "a missing directory"])
def test_render_refuses_a_bad_output_before_decoding(
    sample_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(sample_clip.read_bytes())
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"frame_index": 0, "result": synthetic_result(0)}) + "\n")
    output = {"the video": video, "the results": results, "a directory": tmp_path / "dir.mp4",
              "a missing directory": tmp_path / "absent" / "out.mp4"}[kind]
    if kind == "a directory":
        output.mkdir()
    before = {path: path.read_bytes() for path in (video, results)}

    assert main(["render", str(video), str(results), "-o", str(output)]) == 2

    error = capsys.readouterr().err
    expected = {"the video": "it is an input", "the results": "it is an input", "a directory": "it is a directory",
                "a missing directory": f"the directory {tmp_path / 'absent'} does not exist"}[kind]
    assert error.startswith(f"error: -o {output}: ") and expected in error
    assert {path: path.read_bytes() for path in (video, results)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", "results.jsonl"]
                                                                + (["dir.mp4"] if kind == "a directory" else []))


def test_render_video_refuses_to_overwrite_its_input(sample_clip: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(sample_clip.read_bytes())
    with pytest.raises(RenderError, match="it is the input video"):
        render_video(video, {}, video)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    with pytest.raises(RenderError, match="it is a directory"):
        render_video(video, {}, folder)


def test_a_writer_that_cannot_open_names_the_file(sample_clip: Path, tmp_path: Path) -> None:
    output = tmp_path / "absent" / "out.mp4"
    expected = f"to {str(output)!r}: the directory {str(output.parent)!r} does not exist"
    with pytest.raises(RenderError, match=re.escape(expected)):
        render_video(sample_clip, {}, output)


class _FillingDisk:
    """A writer whose disk fills up: what it wrote is cut to 64 KiB when it is released, as a
    full file system leaves an MP4 without its index; OpenCV's writer reports nothing."""

    def __init__(self, writer: cv2.VideoWriter, path: Path) -> None:
        self._writer, self._path = writer, path

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)

    def release(self) -> None:
        self._writer.release()
        with open(self._path, "r+b") as written:
            written.truncate(64 * 1024)


def test_a_video_the_disk_could_not_hold_is_an_error_and_the_earlier_output_stays(
    sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videodag_client import _render

    output = tmp_path / "annotated.mp4"
    output.write_bytes(b"an earlier render")
    real_open_writer = _render._open_writer
    monkeypatch.setattr(_render, "_open_writer", lambda path, *rest: _FillingDisk(real_open_writer(path, *rest), path))
    with pytest.raises(RenderError, match=r"annotated.mp4' failed \(it cannot be read back\); is the disk full"):
        render_video(sample_clip, {}, output)
    assert output.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4"]


class _InterruptedAt(dict[int, Any]):
    """Results whose lookup is interrupted (Ctrl-C) at one frame, halfway through the video."""

    def __init__(self, frame_index: int) -> None:
        super().__init__()
        self._frame_index = frame_index

    def get(self, key: int, default: Any = None) -> Any:
        if key == self._frame_index:
            raise KeyboardInterrupt
        return default


def test_an_interrupted_render_leaves_no_partial_file_and_the_earlier_output_stays(
    sample_clip: Path, tmp_path: Path
) -> None:
    output = tmp_path / "annotated.avi"
    output.write_bytes(b"an earlier render")
    with pytest.raises(KeyboardInterrupt):
        render_video(sample_clip, _InterruptedAt(60), output)
    assert output.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi"]


class _CountLost:
    """A capture of a file whose frame count never got written, as an AVI cut by a full disk.
    (A wrapper: a Python subclass of cv2.VideoCapture can crash the garbage collector.)"""

    opened_by = cv2.VideoCapture  # the real one: the test puts this class in its place

    def __init__(self, path: str) -> None:
        self._capture = self.opened_by(path)

    def get(self, prop_id: int) -> float:
        return 0.0 if prop_id == cv2.CAP_PROP_FRAME_COUNT else self._capture.get(prop_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._capture, name)


def test_a_cut_video_declaring_no_frame_count_is_counted_and_refused(
    sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videodag_client import _render

    real_open_writer = _render._open_writer
    monkeypatch.setattr(_render, "_open_writer", lambda path, *rest: _FillingDisk(real_open_writer(path, *rest), path))
    monkeypatch.setattr(_render, "written_video_problem", _with_capture(_render.written_video_problem, _CountLost))
    with pytest.raises(RenderError, match=r"annotated.avi' failed \(it holds \d+ of the 120 frames\)"):
        render_video(sample_clip, {}, tmp_path / "annotated.avi")
    assert list(tmp_path.iterdir()) == []


def _with_capture(check: Any, capture: type) -> Any:
    """`check` with `capture` as the VideoCapture it reads the written video with."""
    def checked(path: Path, frames_written: int) -> Any:
        from videodag_client import _render

        real = _render.cv2.VideoCapture
        _render.cv2.VideoCapture = capture
        try:
            return check(path, frames_written)
        finally:
            _render.cv2.VideoCapture = real
    return checked


def test_a_contact_sheet_name_opencv_cannot_write_is_refused_before_decoding(sample_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"cannot write a contact sheet to '.*sheet': name a .png or .jpg file"):
        render_video(sample_clip, {}, tmp_path / "out.mp4", snapshot=tmp_path / "sheet")
    assert list(tmp_path.iterdir()) == []


def test_a_video_given_as_the_results_file_is_named_as_such(sample_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"not UTF-8 text, as JSON Lines are \(if it is the video: the video comes"):
        load_results(sample_clip)


def test_a_boolean_frame_index_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text('{"frame_index": true, "result": {}}\n')
    with pytest.raises(RenderError, match=r"results\.jsonl:1: expected an object with an integer frame_index"):
        load_results(results)


def test_a_box_far_beyond_the_frame_is_drawn_clipped(source_frames) -> None:
    frame = source_frames[0].copy()
    assert draw_result(frame, {"p": [{"box": [10, 20, 1e12, 1e12], "label": "far"}]}) == 1
    assert not np.array_equal(frame[20, 10:100], source_frames[0][20, 10:100])  # its top edge is on the frame


def test_results_past_the_videos_end_are_warned_of_and_left_off_the_sheet(
    sample_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.jsonl"
    indexes = [*range(0, 40, 10), *range(500, 505)]
    lines = [{"frame_index": index, "result": synthetic_result(index)} for index in indexes]
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sheet = tmp_path / "sheet.png"

    assert main(["render", str(sample_clip), str(results), "-o", str(tmp_path / "out.mp4"),
                 "--snapshot", str(sheet)]) == 0

    printed = capsys.readouterr()
    assert printed.err == ("warning: 5 of the 9 results are for frames past the video's last (119): are they the "
                           "results of another video?\n")
    assert "4 with results" in printed.out and "contact sheet" in printed.out and "(4 frames)" in printed.out


def test_results_all_past_the_videos_end_still_give_a_sheet_of_the_video(sample_clip: Path, tmp_path: Path) -> None:
    summary = render_video(sample_clip, {2000 + index: synthetic_result(index) for index in range(5)},
                           tmp_path / "out.mp4", snapshot=tmp_path / "sheet.png")
    assert (summary.results_beyond_video, summary.frames_annotated, summary.snapshot_frames) == (5, 0, 12)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_results_through_a_pipe_are_read_once(tmp_path: Path, encoding: str) -> None:
    """`videodag render clip.mp4 <(cat results.jsonl)`: the byte order mark was looked for by an
    open of its own, which took the pipe's first bytes from the JSON."""
    lines = "".join(json.dumps({"frame_index": index, "result": {"n": index}}) + "\n" for index in range(3))
    pipe = tmp_path / "results"
    os.mkfifo(pipe)

    def write_the_first_byte_alone(data: bytes) -> None:  # as `<(printf '\xff'; ...)` may: one read, one byte
        with pipe.open("wb", buffering=0) as writer:
            writer.write(data[:1])
            time.sleep(0.2)
            writer.write(data[1:])

    writer = threading.Thread(target=write_the_first_byte_alone, args=(lines.encode(encoding),))
    writer.start()
    try:
        assert load_results(pipe) == {index: {"n": index} for index in range(3)}
    finally:
        writer.join(timeout=10)


def test_results_saved_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    """An editor on Windows starts the file with one: it was refused in Python's words
    ("Unexpected UTF-8 BOM (decode using utf-8-sig)"). Windows PowerShell's `>` writes UTF-16
    with its mark: refused as "not UTF-8 text"."""
    lines = [json.dumps({"frame_index": index, "result": {"name": "caf\u00e9", "n": index}}) for index in range(2)]
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    expected = {index: {"name": "caf\u00e9", "n": index} for index in range(2)}
    assert load_results(results) == expected
    text = "\r\n".join(lines) + "\r\n"
    for written in (b"\xff\xfe" + text.encode("utf-16-le"), b"\xfe\xff" + text.encode("utf-16-be")):
        results.write_bytes(written)
        assert load_results(results) == expected
