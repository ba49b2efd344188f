"""`videodag render`: results drawn onto the real sample clip, decoded back and checked pixel by pixel."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from videodag_client._render import (
    RenderError,
    _colour,
    _FrameSampler,
    draw_result,
    find_annotations,
    load_results,
)
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
    sampler = _FrameSampler(wanted=6, thumbnail_width=8)
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(1000):
        sampler.offer(index, tiny)
        assert len(sampler.kept) < 12
    picked = [index for index, _ in sampler.sample()]
    assert len(picked) == 6 and picked[0] == 0 and picked[-1] > 700
    assert picked == sorted(picked)


@pytest.mark.parametrize("last", [39, None], ids=["known end", "unknown end"])
def test_the_sampler_spreads_frames_over_the_frames_with_results(last: int | None) -> None:
    sampler = _FrameSampler(wanted=6, thumbnail_width=8, first=20, last=last)
    tiny = np.zeros((6, 16, 3), np.uint8)
    for index in range(40 if last is None else 120):
        sampler.offer(index, tiny)
    picked = [index for index, _ in sampler.sample()]
    assert len(picked) == 6 and picked == sorted(picked)
    assert picked[0] == 20 and 30 < picked[-1] <= 39


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
