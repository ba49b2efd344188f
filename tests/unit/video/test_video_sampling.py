"""Sampling options: validation, normalisation, overriding, and the frame window arithmetic."""

from __future__ import annotations

import pytest

from videodag_service.errors import InvalidOptions
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window


def _violated_fields(error: InvalidOptions) -> set[str]:
    return {violation.field for violation in error.details.field_violations}


@pytest.mark.parametrize(
    ("options", "fields"),
    [
        ({"frame_stride": -1}, {"frame_stride"}),
        ({"max_frames": -3}, {"max_frames"}),
        ({"start_seconds": -0.5}, {"start_seconds"}),
        ({"end_seconds": -1.0}, {"end_seconds"}),
        ({"start_seconds": 2.0, "end_seconds": 2.0}, {"end_seconds"}),
        ({"start_seconds": 3.0, "end_seconds": 1.0}, {"end_seconds"}),
        ({"end_seconds": 0.0}, {"end_seconds"}),
        ({"start_seconds": float("nan")}, {"start_seconds"}),
        ({"end_seconds": float("inf")}, {"end_seconds"}),
        ({"frame_stride": 1.5}, {"frame_stride"}),
        ({"frame_stride": True}, {"frame_stride"}),
        (
            {"frame_stride": -2, "max_frames": -1, "start_seconds": -1.0},
            {"frame_stride", "max_frames", "start_seconds"},
        ),
        ({"frame_stride": -1, "start_seconds": 2.0, "end_seconds": 1.0}, {"frame_stride", "end_seconds"}),
        ({"max_frames": -1, "end_seconds": 0.0}, {"max_frames", "end_seconds"}),
        ({"start_seconds": -1.0, "end_seconds": -2.0}, {"start_seconds", "end_seconds"}),
    ],
)
def test_invalid_values_raise_invalid_options_naming_each_field(options: dict, fields: set[str]) -> None:
    with pytest.raises(InvalidOptions) as raised:
        SamplingOptions(**options)
    assert _violated_fields(raised.value) == fields
    assert raised.value.status_code == "INVALID_ARGUMENT"


def test_zero_stride_and_zero_max_frames_mean_no_sampling() -> None:
    options = SamplingOptions(frame_stride=0, max_frames=0)
    assert options.frame_stride == 1
    assert options.max_frames is None
    assert options == SamplingOptions()


def test_a_mapping_overrides_only_the_keys_it_sets() -> None:
    defaults = SamplingOptions(frame_stride=4, max_frames=10)
    combined = defaults.overridden_by({"max_frames": 3, "start_seconds": None, "end_seconds": 2.5})
    assert combined == SamplingOptions(frame_stride=4, max_frames=3, start_seconds=None, end_seconds=2.5)


def test_a_sampling_options_value_replaces_the_defaults() -> None:
    defaults = SamplingOptions(frame_stride=4, max_frames=10)
    replaced = defaults.overridden_by(SamplingOptions(max_frames=2))
    assert replaced == SamplingOptions(frame_stride=1, max_frames=2)
    assert defaults.overridden_by(None) is defaults


def test_unknown_mapping_keys_and_invalid_mapping_values_are_refused() -> None:
    with pytest.raises(InvalidOptions) as raised:
        SamplingOptions().overridden_by({"stride": 2})
    assert _violated_fields(raised.value) == {"stride"}
    with pytest.raises(InvalidOptions):
        SamplingOptions().overridden_by({"frame_stride": -5})


def test_other_option_types_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        SamplingOptions().overridden_by([("frame_stride", 2)])  # type: ignore[arg-type]


def test_window_edges_round_to_the_first_frame_at_or_after_them() -> None:
    # 0.3 * 10 is 3.0000000000000004 in floating point: still frame 3.
    window = plan_window(SamplingOptions(start_seconds=0.3, end_seconds=0.7), fps=10.0)
    assert (window.first_index, window.stop_index) == (3, 7)
    assert plan_window(SamplingOptions(start_seconds=0.31), fps=10.0).first_index == 4
    window = plan_window(SamplingOptions(start_seconds=1.0, end_seconds=2.0), fps=29.97)
    assert (window.first_index, window.stop_index) == (30, 60)


def test_frames_are_in_the_window_by_their_presentation_time() -> None:
    window = plan_window(SamplingOptions(frame_stride=5, start_seconds=0.3, end_seconds=0.7), fps=10.0)
    assert (window.start_seconds, window.end_seconds, window.frame_stride) == (0.3, 0.7, 5)
    # 3 * 0.1 is 0.30000000000000004 and 7 * 0.1 is 0.7000000000000001: frames 3 and 7 still.
    assert [index for index in range(10) if not window.is_before(index * 0.1)] == list(range(3, 10))
    assert [index for index in range(10) if window.is_past_end(index * 0.1)] == [7, 8, 9]
    assert not FrameWindow().is_before(0.0) and not FrameWindow().is_past_end(1e9)


def test_a_time_window_needs_a_known_frame_rate() -> None:
    with pytest.raises(ValueError, match="frame rate"):
        plan_window(SamplingOptions(start_seconds=1.0), fps=0.0)
    assert plan_window(SamplingOptions(frame_stride=2), fps=0.0) == FrameWindow(frame_stride=2)
