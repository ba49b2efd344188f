"""`videodag run` given a video's fps no window bound can be counted in (infinity): the progress bar's
total is unknown, the run goes on, instead of an OverflowError ending it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_servicer import AcknowledgeUpload, FakeVideoPipelineServicer, summary_response, video_info_response

from videodag_client import RunOptions, VideoOpened
from videodag_client.cli import _exit_codes, main
from videodag_client.cli.run import expected_frame_count


@pytest.mark.parametrize(
    ("fps", "options"),
    [
        (math.inf, RunOptions(start_seconds=1.0)),
        (math.inf, RunOptions(start_seconds=0.0)),  # 0 s times infinity: NaN
        (math.inf, RunOptions(end_seconds=2.0)),
        (math.inf, RunOptions(start_seconds=1.0, end_seconds=2.0, frame_stride=2)),
        (1e308, RunOptions(start_seconds=10.0)),  # finite, but not times 10
    ],
)
def test_a_window_bound_past_any_frame_number_makes_the_count_unknown(fps: float, options: RunOptions) -> None:
    video = VideoOpened(fps=fps, frame_count=2**62, width=1, height=1, duration_seconds=0.0, codec="", size_bytes=1)

    assert expected_frame_count(video, options) is None


def test_an_infinite_fps_without_a_window_still_counts_the_frames() -> None:
    video = VideoOpened(fps=math.inf, frame_count=120, width=1, height=1, duration_seconds=0.0, codec="",
                        size_bytes=1)

    assert expected_frame_count(video, RunOptions(frame_stride=4)) == 30


def test_run_with_start_against_an_infinite_fps_finishes(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servicer.run_script = [AcknowledgeUpload(), video_info_response(fps=math.inf, frame_count=2**62),
                           summary_response(0)]
    output = tmp_path / "results.jsonl"

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "--start", "1",
                      "-o", str(output)])

    assert exit_code == _exit_codes.SUCCESS
    assert output.exists()
    assert "frames:     0 processed" in capsys.readouterr().out
