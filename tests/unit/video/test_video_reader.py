"""Opening, probing and decoding real files: exact frames after seeks, cheap strides, limits."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fakes.capture import spy_on_captures
from fakes.media import (
    ffmpeg_executable,
    presentation_times,
    read_frame_index,
    write_cut_copy,
    write_test_pattern,
    write_tone,
    write_trimmed_copy,
    write_variable_rate_video,
)
from videodag_service.dag import DagPipelineService
from videodag_service.errors import VideoTooLarge, VideoUnreadable
from videodag_service.video import (
    GrowingUpload,
    VideoFilePipelineService,
    VideoInfo,
    VideoLimits,
    avi_index,
    capture,
    open_video,
    probe_video,
)
from videodag_service.video.frame_times import frame_times
from videodag_service.video.growing_upload import new_abandon_signal
from videodag_service.video.reader import OpenedVideo
from videodag_service.video.sample_spacing import frames_evenly_spaced
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def sample_clip_digests(sample_clip: Path) -> list[str]:
    """Every frame of the sample clip decoded sequentially with plain OpenCV, as digests."""
    capture = cv2.VideoCapture(str(sample_clip), cv2.CAP_FFMPEG)
    digests = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            digests.append(_digest(image))
    finally:
        capture.release()
    return digests


def test_probe_reads_the_sample_clip_facts(sample_clip: Path) -> None:
    info = probe_video(sample_clip)
    assert info == VideoInfo(
        fps=10.0,
        frame_count=120,
        width=768,
        height=576,
        duration_seconds=12.0,
        codec="h264",
        size_bytes=sample_clip.stat().st_size,
    )


# What phones, cameras, browsers and editors write, as FFmpeg encodes it: (name, options, codec reported).
REAL_WORLD_ENCODINGS = [
    ("hevc_10bit.mp4", ("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"), "hevc"),
    ("hevc_hvc1.mov", ("-c:v", "libx265", "-tag:v", "hvc1", "-x265-params", "log-level=error"), "hevc"),
    ("av1.mp4", ("-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p"), "AV01"),
    ("vp9.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime"), "VP90"),
    ("prores.mov", ("-c:v", "prores_ks"), "apch"),
]


@pytest.mark.parametrize(("name", "options", "codec"), REAL_WORLD_ENCODINGS, ids=[e[0] for e in REAL_WORLD_ENCODINGS])
def test_the_codecs_users_send_decode_to_8_bit_bgr(
    tmp_path: Path, name: str, options: tuple[str, ...], codec: str
) -> None:
    path = write_test_pattern(tmp_path / name, *options, size="320x180", seconds=1.0)
    reference = write_test_pattern(tmp_path / "reference.avi", "-c:v", "rawvideo", "-pix_fmt", "bgr24",
                                   size="320x180", seconds=1.0)
    with open_video(path) as video, open_video(reference) as raw:
        assert (video.info.codec, video.info.frame_count, video.info.width, video.info.height) == (codec, 25, 320, 180)
        window = plan_window(SamplingOptions(), video.info.fps)
        pairs = list(zip(video.frames(window), raw.frames(window), strict=True))
    assert len(pairs) == 25
    for decoded, original in pairs:
        assert decoded.image.dtype == np.uint8 and decoded.image.shape == (180, 320, 3)
        # Lossy, but the same picture: a wrong colour conversion or bit depth is off by far more.
        assert np.abs(decoded.image.astype(np.int16) - original.image.astype(np.int16)).mean() < 8


def test_a_phone_video_shot_upright_is_reported_and_decoded_upright(tmp_path: Path) -> None:
    """Phones store a portrait video as landscape frames with a rotation to apply on display."""
    landscape = write_test_pattern(tmp_path / "landscape.mp4", "-c:v", "libx264", size="320x180", seconds=1.0)
    portrait = tmp_path / "portrait.mp4"
    command = [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90",
               "-i", str(landscape), "-c", "copy", str(portrait)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    with open_video(portrait) as video:
        assert (video.info.width, video.info.height) == (180, 320)
        first = next(video.frames(plan_window(SamplingOptions(), video.info.fps)))
        assert first.image.shape == (320, 180, 3)


def test_probe_reads_a_generated_video(make_video) -> None:
    path = make_video(50, fps=12.5, fourcc="MJPG")
    info = probe_video(path)
    assert (info.fps, info.frame_count, info.width, info.height, info.codec) == (12.5, 50, 64, 48, "MJPG")
    assert info.duration_seconds == pytest.approx(4.0)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_a_file_opencv_cannot_read_raises_video_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "private-dir" / "clip.mp4"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(VideoUnreadable, match="Unable to read video file") as raised:
        probe_video(path)
    assert isinstance(raised.value, ValueError)
    assert "private-dir" not in str(raised.value), "temp directories must not leak to clients"


def test_a_file_that_is_not_video_is_named_in_the_error(tmp_path: Path) -> None:
    song = write_tone(tmp_path / "song.mp4", "-f", "mp3")
    with pytest.raises(VideoUnreadable) as raised:
        probe_video(song)
    assert str(raised.value) == (
        "Unable to read video file 'song.mp4': not a video OpenCV can decode: "
        "it is MP3 audio (audio/mpeg), with no video stream"
    )
    assert raised.value.details.metadata == {"detected_type": "audio/mpeg"}


def test_bytes_with_no_known_start_keep_the_plain_reason(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(VideoUnreadable) as raised:
        probe_video(path)
    assert str(raised.value) == "Unable to read video file 'clip.mp4': not a video OpenCV can decode"
    assert raised.value.details.metadata == {}


def test_a_missing_file_raises_video_unreadable(tmp_path: Path) -> None:
    with pytest.raises(VideoUnreadable, match="Unable to read video file"):
        probe_video(tmp_path / "missing.mp4")


def test_the_capture_is_released_on_exit_and_on_error(make_video, monkeypatch: pytest.MonkeyPatch) -> None:
    spies = spy_on_captures(monkeypatch)
    path = make_video(5)
    with open_video(path) as video:
        next(video.frames(FrameWindow()))
    assert spies[-1].released
    with pytest.raises(RuntimeError), open_video(path) as video:
        raise RuntimeError("consumer failed")
    assert spies[-1].released
    assert len(spies) == 2


def window(first_index: int = 0, stop_index: int | None = None, *, fps: float = 25.0, **options: Any) -> FrameWindow:
    """The window from frame `first_index` to `stop_index` of a video at `fps`, as a run plans it."""
    end = None if stop_index is None else stop_index / fps
    return plan_window(SamplingOptions(start_seconds=first_index / fps, end_seconds=end, **options), fps)


@pytest.mark.parametrize("first_index", [2, 7, 12, 13, 37, 61, 99, 119])
def test_seeking_lands_on_the_exact_frame_of_the_h264_sample(
    sample_clip: Path, sample_clip_digests: list[str], first_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = spy_on_captures(monkeypatch)
    with open_video(sample_clip) as video:
        frames = list(video.frames(window(first_index, first_index + 3, fps=10.0)))
    assert [frame.frame_index for frame in frames] == list(range(first_index, min(first_index + 3, 120)))
    assert [_digest(frame.image) for frame in frames] == sample_clip_digests[first_index:first_index + 3]
    assert spies[0].seeks == 1 and len(spies) == 1, "a seek was expected, not a fallback"


@pytest.mark.parametrize("fourcc", ["MJPG", "mp4v"])
@pytest.mark.parametrize(
    ("first_index", "stride"), [(0, 1), (1, 3), (11, 1), (12, 7), (13, 5), (150, 4), (199, 1)]
)
def test_reported_indices_match_frame_content(make_video, fourcc: str, first_index: int, stride: int) -> None:
    path = make_video(200, fourcc=fourcc)
    with open_video(path) as video:
        frames = list(video.frames(window(first_index, frame_stride=stride)))
    assert [frame.frame_index for frame in frames] == list(range(first_index, 200, stride))
    assert [read_frame_index(frame.image) for frame in frames] == [frame.frame_index for frame in frames]
    expected_times = [frame.frame_index / 25.0 for frame in frames]
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx(expected_times)


def test_a_window_of_an_avi_with_dropped_frames_has_the_indices_of_the_whole_run(tmp_path: Path) -> None:
    """A capture card's dropped frames are empty slots of the AVI index: decoding skips them,
    OpenCV's seek counts them, so a seek would put every later index off by the frames dropped."""
    dropped = write_test_pattern(tmp_path / "dropped.avi", "-vf", "select='not(between(n,30,49))'", "-fps_mode",
                                 "passthrough", "-c:v", "mjpeg", "-q:v", "5", size="320x240", rate="10",
                                 seconds=12.0)
    with open_video(dropped) as video:
        whole = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                 for frame in video.frames(FrameWindow())]
        assert video.frames_in_video == len(whole) == 100
    for start in (7.0, 11.9):
        with open_video(dropped) as video:
            windowed = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                        for frame in video.frames(plan_window(SamplingOptions(start_seconds=start), video.info.fps))]
            assert video.frames_in_video == 100
        assert windowed == [frame for frame in whole if frame[1] >= start - 1e-6]


@pytest.mark.parametrize("encoding", [("-c:v", "libx264", "-bf", "3", "-g", "25", "-pix_fmt", "yuv420p"),
                                      ("-c:v", "mpeg4", "-bf", "2", "-q:v", "4", "-g", "25")],
                         ids=["h264", "mpeg4"])
def test_a_window_starting_among_the_last_frames_of_an_avi_with_b_frames_has_those_of_the_whole_run(
    tmp_path: Path, encoding: tuple[str, ...]
) -> None:
    """Those frames have no timestamp in an AVI: a seek landing on one took the time the declared
    rate gives for a sign it had landed where asked, and the window came back empty, or one
    frame under another's index and time."""
    video_path = write_test_pattern(tmp_path / "b_frames.avi", *encoding, size="320x240", seconds=3.0)
    with open_video(video_path) as video:
        whole = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                 for frame in video.frames(FrameWindow())]
    assert len(whole) == 75
    for start in (whole[-3][1] - 0.01, whole[-2][1], whole[-1][1] - 0.01, whole[-1][1]):
        with open_video(video_path) as video:
            windowed = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                        for frame in video.frames(plan_window(SamplingOptions(start_seconds=start), video.info.fps))]
        assert windowed == [frame for frame in whole if frame[1] >= start - 1e-6], start


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (1.0, 1.000000001, [25]),  # a window a nanosecond wide around a frame's time
        (0.0, 0.000000001, [0]),
        (0.000000001, 0.08, [1]),  # a nanosecond after frame 0 starts after it
        (0.039999999, 0.040000001, [1]),
        (1.0, 1.04, [25]),
    ],
)
def test_windows_are_exact_to_the_nanosecond(make_video, start: float, end: float, expected: list[int]) -> None:
    """Durations carry nanoseconds, and the contract calls the window exact."""
    path = make_video(60)
    with open_video(path) as video:
        options = SamplingOptions(start_seconds=start, end_seconds=end)
        frames = list(video.frames(plan_window(options, video.info.fps)))
    assert [frame.frame_index for frame in frames] == expected
    assert [read_frame_index(frame.image) for frame in frames] == expected


@pytest.mark.parametrize("container", ["mp4", "mov", "fragmented"])
def test_a_window_of_an_mp4_with_frames_dropped_or_bunched_has_the_indices_of_the_whole_run(
    tmp_path: Path, container: str
) -> None:
    """OpenCV numbers the frame a seek lands on by its time: after frames dropped (a camera's
    hiccup) or bunched, that number is off by as many, though the time and pixels are right.
    A fragmented MP4 keeps its frame table in its fragments: it is never sought in."""
    suffix, muxing = {"mp4": ("mp4", ()), "mov": ("mov", ()),
                      "fragmented": ("mp4", ("-movflags", "+frag_keyframe+empty_moov"))}[container]
    uneven = {
        "dropped": write_test_pattern(tmp_path / f"dropped.{suffix}", "-vf", "select='not(between(n,30,32))'",
                                      "-fps_mode", "passthrough", "-c:v", "libx264", "-g", "30", *muxing,
                                      size="320x240", rate="10", seconds=12.0),
        "bunched": write_test_pattern(tmp_path / f"bunched.{suffix}", "-vf",
                                      "setpts='if(between(N,40,49),(40+(N-40)/2)/10,N/10)/TB'", "-fps_mode",
                                      "passthrough", "-c:v", "libx264", "-g", "30", *muxing, size="320x240",
                                      rate="10", seconds=12.0),
    }
    for name, path in uneven.items():
        with open_video(path) as video:
            declared = video.info.frame_count
        assert frames_evenly_spaced(path, declared) is (None if container == "fragmented" else False), name
        with open_video(path) as video:
            whole = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                     for frame in video.frames(FrameWindow())]
        for start in (6.0, 9.05):
            with open_video(path) as video:
                windowed = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image)) for frame in
                            video.frames(plan_window(SamplingOptions(start_seconds=start), video.info.fps))]
            assert windowed == [frame for frame in whole if frame[1] >= start - 1e-6], (name, start)


@pytest.mark.parametrize(("name", "options"), [
    ("dropped_bframes.mp4", ("-vf", "select='not(between(n,30,32)+between(n,170,171))'", "-c:v", "libx264",
                             "-bf", "3", "-g", "60")),
    ("dropped_quicktime.mov", ("-vf", "select='not(between(n,30,32)+between(n,90,99))'", "-c:v", "libx264",
                               "-video_track_timescale", "600")),
    ("rate_halved.mp4", ("-vf", "select='lt(n,60)+gt(n,150)+not(mod(n,2))'", "-c:v", "libx264", "-bf", "0")),
    ("dropped_mpeg4.mp4", ("-vf", "select='not(between(n,30,32))'", "-c:v", "mpeg4", "-bf", "2")),
])
def test_a_window_of_an_mp4_with_frames_dropped_is_reached_by_a_seek(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, options: tuple[str, ...]
) -> None:
    """Numbered by its sample table (`frame_times`), a late window of a camera's file with frames
    dropped is reached in a seek, not by decoding all before it: 12 s against 0.1 s at 290 s of
    a 5-minute 720p file. The frames are those of the whole run, to the last and past it."""
    path = write_test_pattern(tmp_path / name, *options, "-fps_mode", "passthrough", size="160x120", rate="30",
                              seconds=8.0)
    with open_video(path) as video:
        declared = video.info.frame_count
    assert frames_evenly_spaced(path, declared) is False
    with open_video(path) as video:
        whole = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                 for frame in video.frames(FrameWindow())]
    last = whole[-1][1]
    for start in (1.01, 3.05, 5.0, 6.2, 6.5, 7.9, last - 0.01, last, last + 0.5):
        spies = spy_on_captures(monkeypatch)
        with open_video(path) as video:
            windowed = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image)) for frame in
                        video.frames(plan_window(SamplingOptions(start_seconds=start, max_frames=4), video.info.fps))]
        assert windowed == [frame for frame in whole if frame[1] >= start - 1e-6][:4], start
        assert len(spies) == 1 and spies[0].seeks >= 1, f"a seek was expected at {start} s, not a fallback"
        assert spies[0].grabs < 60, start


def test_a_window_of_an_mp4_starting_with_frames_it_cannot_show_has_the_indices_of_the_whole_run(
    tmp_path: Path,
) -> None:
    """A recording cut mid-GOP and remuxed with its leading P-frames (`-copyinkf`, no edit list):
    the table counts samples the decoder never shows, so numbering by it put every index off by
    as many. Such a file is decoded from its start."""
    stream = write_test_pattern(tmp_path / "recording.ts", "-vf", "select='not(between(n,200,207))'", "-fps_mode",
                                "passthrough", "-c:v", "libx264", "-bf", "0", "-x264-params",
                                "keyint=60:min-keyint=60:scenecut=0:repeat-headers=1", size="160x120", rate="30",
                                seconds=10.0)
    data = stream.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) * 15 // 100 // 188 * 188:])  # 1.5 s in, half a GOP before a key frame
    path = tmp_path / "cut.mp4"
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(cut), "-c", "copy",
                    "-copyinkf", "-use_editlist", "0", str(path)], check=True, capture_output=True, timeout=60)
    with open_video(path) as video:
        whole = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image))
                 for frame in video.frames(FrameWindow())]
    times = frame_times(path, probe_video(path).frame_count)
    assert times is not None and len(times) > len(whole), "the file starts with frames the decoder cannot show"
    for start in (whole[0][1] + 1.0, 5.0, 7.0):
        with open_video(path) as video:
            windowed = [(frame.frame_index, frame.timestamp_seconds, _digest(frame.image)) for frame in
                        video.frames(plan_window(SamplingOptions(start_seconds=start, max_frames=3), video.info.fps))]
        assert windowed == [frame for frame in whole if frame[1] >= start - 1e-6][:3], start


def test_an_mp4_of_evenly_spaced_frames_still_seeks(make_video, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_video(200, fourcc="mp4v")
    assert frames_evenly_spaced(path, 200) is True
    spies = spy_on_captures(monkeypatch)
    with open_video(path) as video:
        frames = list(video.frames(window(150)))
    assert [frame.frame_index for frame in frames] == list(range(150, 200))
    assert len(spies) == 1 and spies[0].seeks == 1


def test_an_avi_seeks_unless_its_index_has_empty_video_slots(
    make_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeking stays for the AVIs that allow it: decoding a long one from its start to reach a
    late window took ten times as long."""
    plain = make_video(200)  # MJPG AVI
    dropped = write_test_pattern(tmp_path / "dropped.avi", "-vf", "select='not(between(n,30,49))'", "-fps_mode",
                                 "passthrough", "-c:v", "mjpeg", "-q:v", "5", size="160x120", rate="10",
                                 seconds=6.0)
    assert avi_index.seeks_exactly(plain)
    assert not avi_index.seeks_exactly(dropped)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(plain.read_bytes()[:5000])  # no index left
    assert not avi_index.seeks_exactly(cut)
    assert not avi_index.seeks_exactly(make_video(10, fourcc="mp4v"))  # an MP4
    spies = spy_on_captures(monkeypatch)
    with open_video(plain) as video:
        frames = list(video.frames(window(150, 153)))
    assert [read_frame_index(frame.image) for frame in frames] == [150, 151, 152]
    assert spies[0].seeks == 1 and spies[0].grabs <= 5  # the frame before, three, the one past the end


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _opendml_avi(sizes: list[int], *, pointers: Callable[[int], list[int]] = lambda offset: [offset]) -> bytes:
    """The skeleton of an AVI over 1 GB as its index describes it (no frames): a video stream
    whose OpenDML super index points (`pointers` of its real offset) at one standard index of
    chunks of these sizes, and a second RIFF (AVIX) that the legacy index would not cover."""
    standard = _chunk(b"ix00", struct.pack("<HBBI4sQ4x", 2, 0, 1, len(sizes), b"00dc", 0)
                      + b"".join(struct.pack("<II", 8 * index, size) for index, size in enumerate(sizes)))

    def riff(super_index_offset: int) -> bytes:
        offsets = pointers(super_index_offset)
        super_index = struct.pack("<HBBI4s12x", 4, 0, 0, len(offsets), b"00dc") + b"".join(
            struct.pack("<QII", offset, len(standard), len(sizes)) for offset in offsets)
        stream = _chunk(b"LIST", b"strl" + _chunk(b"strh", b"vids" + bytes(52)) + _chunk(b"indx", super_index))
        header = _chunk(b"LIST", b"hdrl" + _chunk(b"avih", bytes(56)) + stream)
        body = b"AVI " + header + _chunk(b"LIST", b"movi")
        return b"RIFF" + struct.pack("<I", len(body)) + body

    first = riff(0)
    first = riff(len(first))  # the standard index follows the first RIFF
    return first + standard + _chunk(b"RIFF", b"AVIX")


def test_an_opendml_avi_seeks_unless_its_index_has_empty_video_slots(tmp_path: Path) -> None:
    """Every AVI over 1 GB is OpenDML: its legacy index covers the first gigabyte only, and
    reading the whole file to reach a late window took four times as long as seeking."""
    whole, dropped = tmp_path / "whole.avi", tmp_path / "dropped.avi"
    whole.write_bytes(_opendml_avi([5000, 5100, 4900]))
    dropped.write_bytes(_opendml_avi([5000, 0, 0x80000000, 4900]))  # an empty slot; one, not a key frame
    assert avi_index.seeks_exactly(whole)
    assert not avi_index.seeks_exactly(dropped)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[:-30])  # the standard index cut short
    assert not avi_index.seeks_exactly(cut)
    # A hostile or unfinished index says no, quickly, and never raises: an offset no file has,
    # an index never written, the same standard index listed over and over.
    cases: list[tuple[Callable[[int], list[int]], bool]] = [
        (lambda offset: [2**63 + 5], False),
        (lambda offset: [], False),
        (lambda offset: [offset] * 50_000, True),  # read once: it has no empty slot
    ]
    for pointers, seeks in cases:
        odd = tmp_path / "odd.avi"
        odd.write_bytes(_opendml_avi([5000] * 200, pointers=pointers))
        started = time.monotonic()
        assert avi_index.seeks_exactly(odd) is seeks
        assert time.monotonic() - started < 1


def _overlapping_indexes_avi(chunks: int, entries: int) -> bytes:
    """An AVI whose super index lists `chunks` standard indexes 32 bytes apart, each a valid
    header whose entries run to the end of the file: the same entries, listed `chunks` times."""
    header_length = 12 + 8 + 4 + 8 + 4 + 8 + 56 + 8 + 24 + 16 * chunks  # RIFF, hdrl, strl, strh, indx
    start, region = header_length, 32 * chunks + 8 * entries
    offsets = [start + 32 * index for index in range(chunks)]
    super_index = struct.pack("<HBBI4s12x", 4, 0, 0, chunks, b"00dc") + b"".join(
        struct.pack("<QII", offset, 0, 0) for offset in offsets)
    header = _chunk(b"LIST", b"hdrl" + _chunk(b"LIST", b"strl" + _chunk(b"strh", b"vids" + bytes(52))
                                              + _chunk(b"indx", super_index)))
    body = bytearray(struct.pack("<II", 1, 1) * (region // 8))  # entries of one byte: no empty slot
    for offset in offsets:
        length = start + region - offset - 8
        # Read as entries of the chunks before it, no field of this header is an empty slot's zero size.
        body[offset - start:offset - start + 32] = struct.pack("<4sIHBBI4sQI", b"ix00", length, 2, 0, 1,
                                                               (length - 24) // 8, b"00dc", 2**64 - 1, 1)
    assert 12 + len(header) == start
    return b"RIFF" + struct.pack("<I", 4 + len(header) + len(body)) + b"AVI " + header + bytes(body)


def test_standard_indexes_that_overlap_say_no_without_reading_their_entries_again_and_again(tmp_path: Path) -> None:
    """Index chunks sharing one stretch of entries had them read once for each: 1,000 such chunks
    in a file of 200 KB made 64 MB of entries, read one by one in Python (seconds, and again at
    each damaged stretch of the video). 100 of them stay within that budget."""
    path = tmp_path / "overlapping.avi"
    path.write_bytes(_overlapping_indexes_avi(100, 12_000))
    assert path.stat().st_size < 200_000
    assert not avi_index.seeks_exactly(path)
    path.write_bytes(_overlapping_indexes_avi(1, 12_000))  # one such chunk is an index like any
    assert avi_index.seeks_exactly(path)


def test_an_imprecise_seek_falls_back_to_grabbing(make_video, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_video(60, fourcc="mp4v")
    spies = spy_on_captures(monkeypatch)
    monkeypatch.setattr(OpenedVideo, "_seek", lambda self, frame_index: False)
    with open_video(path) as video:
        frames = list(video.frames(window(23, 30)))
    assert [read_frame_index(frame.image) for frame in frames] == list(range(23, 30))
    assert len(spies) == 2 and all(spy.released for spy in spies)
    # Frame 30 is grabbed (not converted) to learn that it is presented at the window's end.
    assert spies[1].grabs == 31 and spies[1].retrieves == 7


def test_a_window_past_the_end_yields_nothing(make_video) -> None:
    with open_video(make_video(10)) as video:
        assert list(video.frames(window(25))) == []


def test_frames_skipped_by_the_stride_are_grabbed_but_never_retrieved(
    thousand_frame_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = spy_on_captures(monkeypatch)
    with open_video(thousand_frame_video) as video:
        frames = list(video.frames(FrameWindow(frame_stride=5, max_frames=3)))
    assert [frame.frame_index for frame in frames] == [0, 5, 10]
    assert (spies[0].grabs, spies[0].retrieves) == (11, 3), "nothing after the last sampled frame is decoded"


def test_decode_time_is_accounted(thousand_frame_video: Path) -> None:
    with open_video(thousand_frame_video) as video:
        count = sum(1 for _ in video.frames(FrameWindow()))
        assert count == 1000
        assert video.decode_seconds > 0


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (VideoLimits(max_width=63), "width"),
        (VideoLimits(max_height=47), "height"),
        (VideoLimits(max_frames_total=99), "frame_count"),
        (VideoLimits(max_duration_seconds=3.9), "duration"),
    ],
)
def test_declared_facts_over_a_limit_raise_video_too_large(
    make_video, limits: VideoLimits, limit: str
) -> None:
    info = probe_video(make_video(100, fps=25.0))
    with pytest.raises(VideoTooLarge, match="video too large") as raised:
        limits.check_info(info)
    assert raised.value.details.metadata["limit"] == limit
    assert raised.value.status_code == "RESOURCE_EXHAUSTED"


def test_limits_at_exactly_the_video_size_pass(make_video) -> None:
    info = probe_video(make_video(100, fps=25.0))
    VideoLimits(max_width=64, max_height=48, max_frames_total=100, max_duration_seconds=4.0).check_info(info)


@pytest.mark.parametrize(
    "limits", [VideoLimits(max_frames_total=40), VideoLimits(max_duration_seconds=1.6)]
)
def test_frames_beyond_the_limits_stop_decoding_even_if_the_header_was_not_checked(
    make_video, limits: VideoLimits
) -> None:
    # Stands in for a header that under-declares its length: the decoder finds more frames.
    delivered = []
    with open_video(make_video(100, fps=25.0)) as video, pytest.raises(VideoTooLarge):
        for frame in video.frames(FrameWindow(), limits):
            delivered.append(frame.frame_index)
    assert delivered == list(range(40))


def test_a_window_ending_at_the_frame_limit_stays_within_it(make_video) -> None:
    # The frame after the window is grabbed to learn its time; that does not count as over the limit.
    with open_video(make_video(100, fps=25.0)) as video:
        frames = list(video.frames(window(0, 40), VideoLimits(max_frames_total=40)))
    assert [frame.frame_index for frame in frames] == list(range(40))


def test_a_window_starting_beyond_the_frame_limit_is_refused_without_decoding(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(100, fourcc="mp4v")  # an MP4: seeking is used there
    spies = spy_on_captures(monkeypatch)
    with open_video(path) as video, pytest.raises(VideoTooLarge):
        next(video.frames(window(80), VideoLimits(max_frames_total=50)))
    assert spies[0].grabs == 0


@pytest.mark.parametrize(("cores", "threads"), [(1, 3), (2, 4), (8, 10), (14, 16), (64, 16)])
def test_the_decoder_runs_two_threads_more_than_the_usable_cores_at_most_16(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr(capture, "usable_cores", lambda: cores)
    assert capture.decoder_thread_count() == threads


def test_stored_files_and_uploads_still_arriving_decode_with_that_thread_count(
    sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture, "usable_cores", lambda: 3)
    spies = spy_on_captures(monkeypatch)
    arrived = tmp_path / "arrived.mp4"
    arrived.write_bytes(sample_clip.read_bytes())
    still_arriving = GrowingUpload(arrived, arrived.stat().st_size, new_abandon_signal())
    for source in (sample_clip, still_arriving):
        with open_video(source) as video:
            assert next(video.frames(FrameWindow())).frame_index == 0
            assert spies[-1].get(cv2.CAP_PROP_N_THREADS) == 5
    assert len(spies) == 2


@pytest.fixture(scope="module")
def variable_rate_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_variable_rate_video(tmp_path_factory.mktemp("vfr") / "variable_rate.mp4", 45)


def test_a_variable_frame_rate_video_gives_each_frame_its_own_presentation_time(variable_rate_video: Path) -> None:
    with open_video(variable_rate_video) as video:
        frames = list(video.frames(FrameWindow()))
    assert [read_frame_index(frame.image) for frame in frames] == [frame.frame_index for frame in frames]
    assert [frame.frame_index for frame in frames] == list(range(45))
    times = presentation_times(variable_rate_video)
    assert times[29:31] == [1.16, 6.0]  # the rate changes here, far from the declared average
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx(times)


def test_a_time_window_on_a_variable_frame_rate_video_takes_the_frames_presented_in_it(
    variable_rate_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = spy_on_captures(monkeypatch)
    times = presentation_times(variable_rate_video)
    with open_video(variable_rate_video) as video:
        options = SamplingOptions(start_seconds=1.0, end_seconds=7.0, frame_stride=2)
        frames = list(video.frames(plan_window(options, video.info.fps)))
    in_window = [index for index, seconds in enumerate(times) if 1.0 <= seconds < 7.0]
    assert in_window == list(range(25, 35))
    assert [frame.frame_index for frame in frames] == in_window[::2]
    assert [read_frame_index(frame.image) for frame in frames] == in_window[::2]
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx([times[index] for index in in_window[::2]])
    # Its frames are not evenly spaced: the frame a seek lands on is numbered by the sample table.
    assert len(spies) == 1 and spies[0].seeks == 1


def test_the_duration_limit_follows_a_variable_rate_videos_own_times(variable_rate_video: Path) -> None:
    times = presentation_times(variable_rate_video)
    fps = probe_video(variable_rate_video).fps
    delivered = []
    with open_video(variable_rate_video) as video, pytest.raises(VideoTooLarge) as raised:
        for frame in video.frames(FrameWindow(), VideoLimits(max_duration_seconds=3.0)):
            delivered.append(frame.frame_index)
    assert raised.value.details.metadata["limit"] == "duration"
    # Every frame that ends by 3 s, by its own time: the first 30 (up to 1.2 s), where the
    # declared average rate (about 5 fps) would have stopped at frame 15.
    assert delivered == [index for index, seconds in enumerate(times) if seconds + 1 / fps <= 3.0] == list(range(30))


def test_a_stream_without_timestamps_is_timed_at_its_declared_rate(tmp_path: Path) -> None:
    raw = tmp_path / "raw.h264"
    command = [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
               "testsrc2=size=64x48:rate=25:duration=1", "-c:v", "libx264", "-f", "h264", str(raw)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with open_video(raw) as video:
        assert video.info.fps == 25.0
        frames = list(video.frames(FrameWindow()))
    with open_video(raw) as video:
        late = list(video.frames(window(10, 13)))
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx([index / 25.0 for index in range(25)])
    assert [frame.frame_index for frame in late] == [10, 11, 12]
    assert [frame.timestamp_seconds for frame in late] == pytest.approx([0.4, 0.44, 0.48])


def _truncated(sample_clip: Path, tmp_path: Path, keep_bytes: int) -> Path:
    """The sample clip (index at the front) cut after `keep_bytes`, as a broken copy or download leaves it."""
    cut = tmp_path / f"cut_{keep_bytes}.mp4"
    cut.write_bytes(sample_clip.read_bytes()[:keep_bytes])
    return cut


def test_a_video_cut_short_says_it_ended_early(sample_clip: Path, tmp_path: Path) -> None:
    with open_video(_truncated(sample_clip, tmp_path, 400_000)) as video:
        frames = list(video.frames(FrameWindow()))
        assert video.info.frame_count == 120
        assert 10 < len(frames) < 110
        assert video.ended_early
        # Counted up to the frame that could not be read, not the 120 the index declares.
        assert video.frames_in_video == len(frames) == frames[-1].frame_index + 1


@pytest.mark.parametrize(
    "options", [{}, {"end_seconds": 2.0}, {"max_frames": 5}], ids=["whole video", "window", "max frames"]
)
def test_a_run_that_ends_where_it_should_did_not_end_early(
    sample_clip: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    # The whole clip; and the cut clip's window and max_frames ending before the cut.
    path = sample_clip if not options else _truncated(sample_clip, tmp_path, 400_000)
    with open_video(path) as video:
        frames = list(video.frames(plan_window(SamplingOptions(**options), video.info.fps)))
        assert frames and not video.ended_early
        # Stopped before the end, the run did not count the video's frames.
        assert video.frames_in_video == (120 if not options else None)


@pytest.mark.parametrize(
    "options", [{}, {"frame_stride": 7}, {"start_seconds": 9.0}, {"start_seconds": 3.0, "frame_stride": 4}],
    ids=["every frame", "stride", "seek to the window", "seek and stride"],
)
def test_a_run_read_to_the_end_counts_the_frames_the_video_holds(sample_clip: Path, options: dict[str, Any]) -> None:
    with open_video(sample_clip) as video:
        frames = list(video.frames(plan_window(SamplingOptions(**options), video.info.fps)))
        assert frames and frames[-1].frame_index >= 113  # the window reached the last stride before the end
        assert video.frames_in_video == 120


def test_a_few_frames_short_of_an_estimated_count_is_not_an_early_end(
    make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some containers only estimate their frame count: up to a second of frames (10 here) may be missing.
    avi = make_video(120, fps=10.0)
    for declared, ended_early in ((130, False), (131, True)):
        with open_video(avi) as video:
            monkeypatch.setattr(video, "info", dataclasses.replace(video.info, frame_count=declared))
            assert len(list(video.frames(FrameWindow()))) == 120
            assert video.ended_early is ended_early
            assert video.frames_in_video == 120  # counted, whatever the container declares


def test_an_mp4_trimmed_without_reencoding_did_not_end_early(tmp_path: Path) -> None:
    """Its index lists the frames its edit list hides (from the key frame before the cut), so
    fewer frames are read than it declares, and yet nothing is missing."""
    source = write_test_pattern(tmp_path / "source.mp4", "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p",
                                seconds=6.0)
    trimmed = write_trimmed_copy(source, tmp_path / "trimmed.mp4", "-movflags", "+faststart",
                                 start_seconds=1.4, seconds=3.0)
    with open_video(trimmed) as video:
        frames = list(video.frames(FrameWindow()))
        assert video.info.frame_count >= len(frames) + 25  # more than a second of hidden frames declared
        assert len(frames) == len(presentation_times(trimmed)) == video.frames_in_video
        assert not video.ended_early

    cut = tmp_path / "trimmed_then_cut.mp4"
    cut.write_bytes(trimmed.read_bytes()[: trimmed.stat().st_size // 2])
    with open_video(cut) as video:
        assert 0 < len(list(video.frames(FrameWindow()))) < len(frames)
        assert video.ended_early

    # Bytes after the last box (a phone's trailer) change nothing: what is shown was read.
    with_trailer = tmp_path / "trimmed_with_trailer.mp4"
    with_trailer.write_bytes(trimmed.read_bytes() + b"SEFH\0\0\0\x6aXXXXXXXXXXSEFT")
    with open_video(with_trailer) as video:
        assert len(list(video.frames(FrameWindow()))) == len(frames)
        assert not video.ended_early


def test_an_avi_holding_a_variable_rate_on_a_fixed_grid_did_not_end_early(tmp_path: Path) -> None:
    """AVI keeps a variable frame rate as a fixed grid (here 600 fps, 2,400 slots) whose empty
    slots are no frames: 120 frames reaching the declared end are the whole video."""
    path = tmp_path / "variable.avi"
    subprocess.run(
        [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15:duration=2",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=45:duration=2",
         "-filter_complex", "[0][1]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr", "-c:v", "mjpeg", str(path)],
        check=True, capture_output=True, timeout=120,
    )
    with open_video(path) as video:
        frames = list(video.frames(FrameWindow()))
        assert video.info.frame_count > 1000  # the grid's slots
        assert len(frames) == video.frames_in_video == 120
        assert frames[-1].timestamp_seconds > 3.9
        assert not video.ended_early

    cut = tmp_path / "variable_cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with open_video(cut) as video:
        assert 0 < len(list(video.frames(FrameWindow()))) < 100
        assert video.ended_early


def test_an_mp4_zero_filled_in_the_middle_is_decoded_past_and_at_the_end_ended_early(tmp_path: Path) -> None:
    """Its boxes are whole (a download tool that pre-allocated the file, a damaged disk), its
    frames are not: 100 frames zeroed in the middle are decoded past, as a player does, their
    indices missing; zeroed to the end, only frames the decoder held follow."""
    source = write_test_pattern(tmp_path / "source.mp4", "-c:v", "libx264", "-g", "100", "-pix_fmt", "yuv420p",
                                "-movflags", "+faststart", seconds=12.0)
    data = bytearray(source.read_bytes())
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data[: len(data) // 3]) + bytes(len(data) // 3) + bytes(data[2 * (len(data) // 3):]))
    with open_video(damaged) as video:
        indices = [frame.frame_index for frame in video.frames(FrameWindow())]
        assert indices[-1] == 299 and video.frames_in_video == 300 and not video.ended_early
        assert 50 < video.frames_unreadable < 250
        assert len(indices) == 300 - video.frames_unreadable == len(set(indices))
        assert indices == sorted(indices)
    zero_tail = tmp_path / "zero_tail.mp4"
    zero_tail.write_bytes(bytes(data[: len(data) // 2]) + bytes(len(data) - len(data) // 2))
    with open_video(zero_tail) as video:
        assert len(list(video.frames(FrameWindow()))) < 250
        assert video.ended_early


@pytest.mark.parametrize("first_index", [120, 121, 5000])
def test_a_window_starting_past_the_declared_end_is_reached_without_decoding_the_file(
    sample_clip: Path, first_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = spy_on_captures(monkeypatch)
    with open_video(sample_clip) as video:
        frames = list(video.frames(window(first_index, fps=10.0)))
        ended_early = video.ended_early
        frames_in_video = video.frames_in_video
    assert frames == [] and not ended_early and frames_in_video == 120
    # One seek to the last declared frame (119), its grab, and the grab that finds the end.
    assert len(spies) == 1 and spies[0].seeks == 1 and spies[0].grabs <= 2


def test_a_window_starting_far_past_the_end_of_a_short_video_is_empty_not_over_the_limits(
    sample_clip: Path,
) -> None:
    """`--start 1e6` on a 4 s clip: no frame, as for a start just past its end; a server limit
    of a million frames or an hour is about the video, not about where the window starts."""
    limits = VideoLimits(max_frames_total=1_000_000, max_duration_seconds=3600.0)
    with open_video(sample_clip) as video:
        frames = list(video.frames(window(30_000_000, fps=video.info.fps), limits))
        assert frames == [] and video.frames_in_video == 120 and not video.ended_early


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_video_that_opens_but_holds_no_readable_frame_is_refused(
    sample_clip: Path, tmp_path: Path, isolation: str
) -> None:
    """Cut short just after its header, a Matroska file still opens; a run of it would report
    no frame and succeed, as if its window had been empty. It is refused instead."""
    header_only = write_cut_copy(sample_clip, tmp_path / "header_only.mkv", keep_bytes=8000)
    with open_video(header_only):
        pass  # it opens: the refusal comes from decoding, not from the probe
    service = VideoFilePipelineService(DagPipelineService.from_folder(), isolation=isolation)  # type: ignore[arg-type]
    with pytest.raises(VideoUnreadable, match=r"'header_only\.mkv': no frame of it could be decoded"):
        service.run_on_file("frame_stats_v1", header_only)


@pytest.mark.parametrize(("name", "picture"), [("song.mp3", "cover.jpg"), ("song.m4a", "cover.png")])
def test_audio_with_a_cover_picture_is_refused_as_audio_not_run_as_a_90000_fps_video(
    tmp_path: Path, name: str, picture: str
) -> None:
    """FFmpeg shows an audio file's artwork as a one-frame stream timed at 90,000 frames a
    second: a 15 s song would declare 1,350,000 frames, over any frame limit."""
    song = write_tone(tmp_path / f"plain_{name}", seconds=3.0)
    cv2.imwrite(str(tmp_path / picture), np.full((120, 160, 3), 200, np.uint8))
    with_cover = tmp_path / name
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(song),
                    "-i", str(tmp_path / picture), "-map", "0", "-map", "1", "-c", "copy",
                    "-disposition:v", "attached_pic", str(with_cover)], check=True, timeout=60)
    with pytest.raises(VideoUnreadable, match="its only picture is a cover image, not video") as raised:
        probe_video(with_cover)
    assert raised.value.details.metadata["detected_type"].startswith("audio/")


@pytest.mark.parametrize("name", ["longer_audio.mkv", "longer_audio.webm", "longer_audio.mp4"])
def test_audio_that_outlasts_the_video_is_not_taken_for_a_cut_file(tmp_path: Path, name: str) -> None:
    """2 s of video under 4 s of sound: Matroska and WebM declare no frame count, and FFmpeg's
    estimate from the longest stream says 100 frames where the video holds 50."""
    codec = ["-c:v", "libvpx-vp9", "-b:v", "200k", "-c:a", "libopus"] if name.endswith(".webm") else [
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    path = tmp_path / name
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
                    "-f", "lavfi", "-i", "sine=duration=4", *codec, str(path)], check=True, timeout=120)
    with open_video(path) as video:
        frames = list(video.frames(FrameWindow()))
        assert len(frames) == 50 == video.frames_in_video
        assert not video.ended_early


def test_a_cut_matroska_file_is_not_claimed_ended_early_as_its_count_is_an_estimate(
    sample_clip: Path, tmp_path: Path
) -> None:
    cut = write_cut_copy(sample_clip, tmp_path / "cut.mkv", keep_bytes=sample_clip.stat().st_size // 2)
    with open_video(cut) as video:
        frames = list(video.frames(FrameWindow()))
        assert 0 < len(frames) < 120 and video.frames_in_video == len(frames)
        assert not video.ended_early  # what it holds is counted; whether it was cut cannot be told


def test_a_window_in_two_program_streams_joined_end_to_end_gets_its_frames(tmp_path: Path) -> None:
    """OpenCV reports a seek in such a file as landing where asked, then stops at the first
    file's declared 75 frames: windows there are reached by decoding from the start."""
    single = write_test_pattern(tmp_path / "single.mpg", "-c:v", "mpeg2video", size="160x120", seconds=3.0)
    joined = tmp_path / "joined.mpg"
    joined.write_bytes(single.read_bytes() * 2)
    for options, expected in (({"start_seconds": 4.0}, list(range(100, 150))),
                              ({"start_seconds": 2.9, "end_seconds": 3.2}, list(range(73, 80)))):
        with open_video(joined) as video:
            frames = video.frames(plan_window(SamplingOptions(**options), video.info.fps))
            assert [frame.frame_index for frame in frames] == expected


def test_a_refusal_gives_its_numbers_as_a_client_parses_them_back() -> None:
    info = VideoInfo(fps=90000.0, frame_count=1_350_000, width=320, height=240, duration_seconds=15.000011,
                     codec="MJPG", size_bytes=1)
    with pytest.raises(VideoTooLarge) as frames:
        VideoLimits(max_frames_total=1_000_000).check_info(info)
    assert frames.value.details.metadata == {"limit": "frame_count", "maximum": "1000000", "found": "1350000"}
    with pytest.raises(VideoTooLarge) as seconds:
        VideoLimits(max_duration_seconds=12.5).check_info(info)
    assert seconds.value.details.metadata == {"limit": "duration", "maximum": "12.5", "found": "15"}


def test_a_file_with_no_video_stream_says_what_its_bytes_are(tmp_path: Path) -> None:
    """FFmpeg opens an animated WebP but finds no picture it can decode in it."""
    path = write_test_pattern(tmp_path / "animated.webp", "-c:v", "libwebp_anim", size="160x120", seconds=1.0)
    with pytest.raises(VideoUnreadable, match="no video stream OpenCV can decode: it is WEBP image data") as raised:
        probe_video(path)
    assert raised.value.details.metadata == {"detected_type": "image/webp"}
