"""The limits a video is checked against before decoding: frame size either way round, and the
numbers a refusal gives as the operator wrote them."""

from __future__ import annotations

import pytest

from videodag_service.errors import VideoTooLarge
from videodag_service.video import VideoLimits
from videodag_service.video.info import VideoInfo


def info(width: int = 640, height: int = 480, duration_seconds: float = 10.0, estimated: bool = False) -> VideoInfo:
    return VideoInfo(fps=25.0, frame_count=round(duration_seconds * 25), width=width, height=height,
                     duration_seconds=duration_seconds, codec="avc1", size_bytes=1, frame_count_is_estimate=estimated)


@pytest.mark.parametrize(("width", "height"), [(3840, 2160), (2160, 3840), (1080, 1920), (2160, 2160)])
def test_a_frame_that_fits_the_limit_upright_or_turned_is_accepted(width: int, height: int) -> None:
    """A phone's portrait 4K video is as large as a landscape one: a 4K limit takes both."""
    VideoLimits(max_width=3840, max_height=2160).check_info(info(width, height))


@pytest.mark.parametrize(("width", "height", "limit", "found"), [
    (3841, 2160, "width", 3841),
    (2161, 3840, "height", 3840),
    (2200, 2200, "height", 2200),
    (4000, 100, "width", 4000),
])
def test_a_frame_that_fits_neither_way_is_refused_naming_the_side_and_the_whole_limit(
    width: int, height: int, limit: str, found: int,
) -> None:
    maximum = {"width": 3840, "height": 2160}[limit]
    with pytest.raises(VideoTooLarge) as refused:
        VideoLimits(max_width=3840, max_height=2160).check_info(info(width, height))
    assert refused.value.details.metadata == {"limit": limit, "maximum": str(maximum), "found": str(found)}
    assert f"frame {limit} {found} px is over the limit of {maximum} px" in str(refused.value)
    assert "(the limit is 3840x2160 px, either way round)" in str(refused.value)


def test_a_duration_limit_is_said_with_every_digit_it_was_given() -> None:
    """`:g` wrote 11.999999 s as "12": a refusal that reads as if the video were within it."""
    with pytest.raises(VideoTooLarge) as refused:
        VideoLimits(max_duration_seconds=11.999999).check_info(info(duration_seconds=12.5))
    assert "over the limit of 11.999999 s" in str(refused.value)
    assert refused.value.details.metadata == {"limit": "duration", "maximum": "11.999999", "found": "12.5"}
    with pytest.raises(VideoTooLarge) as while_decoding:
        VideoLimits(max_duration_seconds=0.0000001).check_frame(0, 0.0, 25.0)
    assert "more than 0.0000001 s" in str(while_decoding.value)
    assert while_decoding.value.details.metadata["maximum"] == "0.0000001"


def test_a_declared_duration_gets_the_same_millisecond_of_slack_as_the_frames_decoded() -> None:
    """Containers keep times in milliseconds: a 12.000 s file is within 11.9995 s when its frames
    are counted, and was refused on its header alone."""
    limits = VideoLimits(max_duration_seconds=11.9995)
    limits.check_info(info(duration_seconds=12.0))
    limits.check_frame(299, 11.96, 25.0)
    with pytest.raises(VideoTooLarge):
        limits.check_info(info(duration_seconds=12.001))


def test_with_one_side_unlimited_the_other_is_checked_as_it_stands() -> None:
    with pytest.raises(VideoTooLarge, match=r"frame width 641 px is over the limit of 640 px$"):
        VideoLimits(max_width=640).check_info(info(641, 100))
    with pytest.raises(VideoTooLarge, match=r"frame height 481 px is over the limit of 480 px$"):
        VideoLimits(max_height=480).check_info(info(100, 481))
    VideoLimits(max_width=640).check_info(info(640, 100_000))


def test_a_duration_made_of_an_estimated_count_is_left_to_the_frames_decoded() -> None:
    """FFmpeg estimates a Matroska or MPEG file's count from its longest stream: a 2 s video with
    6 s of sound "declares" 6 s, and a 4 s limit refused it before a frame was decoded."""
    limits = VideoLimits(max_duration_seconds=4.0, max_frames_total=100)
    limits.check_info(info(duration_seconds=6.0, estimated=True))
    with pytest.raises(VideoTooLarge):
        limits.check_info(info(duration_seconds=6.0))
    with pytest.raises(VideoTooLarge) as while_decoding:
        limits.check_frame(99, 4.0, 25.0)
    assert while_decoding.value.details.metadata["limit"] == "duration"
