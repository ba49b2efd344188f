"""Hostile files: random bytes, bare headers and truncations never escape as anything but
"Unable to read video file" (a ValueError) or fewer frames, in order."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService
from fakes.media import write_indexed_video
from videodag_service.errors import VideoUnreadable
from videodag_service.video import VideoFilePipelineService

FUZZ_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _frames_or_unreadable(content: bytes, suffix: str) -> list[int] | None:
    """Frame indices processed, or None when the file was reported unreadable."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"fuzz{suffix}"
        path.write_bytes(content)
        try:
            results = VideoFilePipelineService(RecordingDagService()).run_on_file(DEFAULT_PIPELINE, path)
        except VideoUnreadable as error:
            assert "Unable to read video file" in str(error)
            return None
    return [item["frame_index"] for item in results]


@pytest.fixture(scope="module")
def fuzz_sources(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, int]]:
    """Whole files and their frame counts: H.264/MP4 (index first), MPEG-4/MP4 (index last), MJPG/AVI."""
    directory = tmp_path_factory.mktemp("fuzz_sources")
    mp4v = write_indexed_video(directory / "small.mp4", 40, fourcc="mp4v")
    mjpg = write_indexed_video(directory / "small.avi", 40, fourcc="MJPG")
    return {
        ".mp4": (sample_clip.read_bytes(), 120),
        ".m4v": (mp4v.read_bytes(), 40),
        ".avi": (mjpg.read_bytes(), 40),
    }


def test_an_empty_file_is_unreadable() -> None:
    assert _frames_or_unreadable(b"", ".mp4") is None


@FUZZ_SETTINGS
@given(content=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from([".mp4", ".avi", ".mov", ".mkv"]))
def test_random_bytes_give_no_frames_or_unreadable(content: bytes, suffix: str) -> None:
    assert _frames_or_unreadable(content, suffix) in (None, [])


@FUZZ_SETTINGS
@given(
    source=st.sampled_from([".mp4", ".m4v", ".avi"]),
    fraction=st.floats(0.0, 0.999),
    noise=st.binary(max_size=64),
)
def test_truncated_files_give_their_frames_in_order_or_unreadable(
    fuzz_sources: dict[str, tuple[bytes, int]], source: str, fraction: float, noise: bytes
) -> None:
    """Consecutive from the start, but for the last few: a file with B-frames cut short holds
    frames its decoder shows after frames it lost (numbered by their times, `frame_numbering`)."""
    content, frame_count = fuzz_sources[source]
    truncated = content[: int(len(content) * fraction)] + noise
    frames = _frames_or_unreadable(truncated, source)
    if frames:
        assert frames[0] == 0
        assert all(earlier < later for earlier, later in itertools.pairwise(frames)), "in order, once each"
        assert frames[-1] < frame_count


@pytest.mark.parametrize("source", [".mp4", ".avi"])
def test_a_header_without_frame_data_gives_no_frames_or_unreadable(
    fuzz_sources: dict[str, tuple[bytes, int]], source: str
) -> None:
    content, _ = fuzz_sources[source]
    data_start = content.find(b"mdat" if source == ".mp4" else b"movi")
    assert data_start > 0
    assert _frames_or_unreadable(content[: data_start + 4], source) in (None, [])


def test_truncating_the_sample_clip_halfway_keeps_the_first_frames(
    fuzz_sources: dict[str, tuple[bytes, int]],
) -> None:
    content, _ = fuzz_sources[".mp4"]
    frames = _frames_or_unreadable(content[: len(content) // 2], ".mp4")
    assert frames is not None and 30 <= len(frames) < 120
