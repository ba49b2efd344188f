"""The frame rate a raw H.264/HEVC stream declares in its parameter sets, read as OpenCV cannot."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from fakes.media import presentation_times, write_test_pattern
from videodag_service.video import elementary_stream, open_video
from videodag_service.video.elementary_stream import declared_frame_rate, is_elementary_stream
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window

# (file name, frame rate, encoder options): the encoders and the parts of the parameter sets
# they exercise (scaling lists, 4:4:4, interlacing, predicted reference picture sets, VPS timing).
RAW_STREAMS = [
    ("x264.h264", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p")),
    ("x264_ntsc.h264", "30000/1001", ("-c:v", "libx264", "-pix_fmt", "yuv420p")),
    ("x264_scaling_lists.h264", "12", ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-x264-params", "cqm=jvt")),
    ("x264_444.h264", "12.5", ("-c:v", "libx264", "-pix_fmt", "yuv444p")),
    ("x264_baseline.h264", "15", ("-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p")),
    ("x264_interlaced.h264", "30", ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-flags", "+ildct+ilme")),
    ("x264_10bit.h264", "50", ("-c:v", "libx264", "-pix_fmt", "yuv420p10le")),
    ("x265.hevc", "10", ("-c:v", "libx265", "-pix_fmt", "yuv420p")),
    ("x265_ntsc.hevc", "30000/1001", ("-c:v", "libx265", "-pix_fmt", "yuv420p")),
    ("x265_scaling_lists.hevc", "24",
     ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "scaling-list=default:bframes=8:ref=6")),
    ("x265_444_10bit.hevc", "60", ("-c:v", "libx265", "-pix_fmt", "yuv444p10le")),
    ("kvazaar.hevc", "15", ("-c:v", "libkvazaar",)),
    ("kvazaar_gop.hevc", "30", ("-c:v", "libkvazaar", "-kvazaar-params", "gop=8")),
]


def _raw_stream(tmp_path: Path, name: str, rate: str, options: tuple[str, ...]) -> Path:
    return write_test_pattern(tmp_path / name, *options, size="160x120", seconds=1.0, rate=rate)


def _codec(path: Path) -> str:
    return "hevc" if path.suffix == ".hevc" else "h264"


@pytest.mark.parametrize(("name", "rate", "options"), RAW_STREAMS, ids=[name for name, _, _ in RAW_STREAMS])
def test_the_rate_each_encoder_wrote_is_read_back(tmp_path: Path, name: str, rate: str,
                                                    options: tuple[str, ...]) -> None:
    stream = _raw_stream(tmp_path, name, rate, options)
    assert declared_frame_rate(stream, _codec(stream)) == pytest.approx(float(Fraction(rate)))


MPEG_STREAMS = [
    ("mpeg2.m2v", "30", ("-c:v", "mpeg2video")),
    ("mpeg2_ntsc.m2v", "30000/1001", ("-c:v", "mpeg2video")),
    ("mpeg2_extended.m2v", "12", ("-c:v", "mpeg2video")),  # 24 scaled by the sequence extension's 1/2
    ("mpeg1.m1v", "24", ("-c:v", "mpeg1video")),
    ("mpeg1_unofficial.m1v", "10", ("-c:v", "mpeg1video", "-strict", "unofficial")),  # libmpeg3's code 11
]


@pytest.mark.parametrize(("name", "rate", "options"), MPEG_STREAMS, ids=[name for name, _, _ in MPEG_STREAMS])
def test_the_rate_an_mpeg_video_stream_declares_is_read_back(tmp_path: Path, name: str, rate: str,
                                                             options: tuple[str, ...]) -> None:
    stream = _raw_stream(tmp_path, name, rate, options)
    fps = float(Fraction(rate))
    with open_video(stream) as video:
        assert video.info.fps == pytest.approx(fps)  # OpenCV alone says 25
        frames = list(video.frames(FrameWindow()))
    # FFmpeg times a raw MPEG stream one frame late: frames are placed at index / fps, as in a container.
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx([index / fps for index in range(len(frames))])
    with open_video(stream) as video:
        first = list(video.frames(plan_window(SamplingOptions(end_seconds=0.5 / fps), video.info.fps)))
    assert [frame.frame_index for frame in first] == [0]


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_a_program_stream_keeps_its_own_times_whatever_it_carries(tmp_path: Path, codec: str) -> None:
    """A DVR's .mpg holding H.264 starts with a start code too, a pack header's: its frames keep
    the times it gives them (here a second of every other frame dropped), not index / fps."""
    program = write_test_pattern(tmp_path / "program.mpg", "-vf", "select='not(between(t,2,3)*mod(n,2))'",
                                 "-fps_mode", "passthrough", "-c:v", codec, "-f", "mpeg", size="160x120",
                                 seconds=5.0, rate="10")
    assert not is_elementary_stream(program, "h264" if codec == "libx264" else "mpg2")
    with open_video(program) as video:
        times = [frame.timestamp_seconds for frame in video.frames(FrameWindow())]
    assert times == pytest.approx(presentation_times(program), abs=1e-3)
    assert times[-1] == pytest.approx(4.9, abs=1e-3)


@pytest.mark.parametrize("kind", [b"ftyp", b"uuid", b"udta"])
def test_an_mp4_whose_first_box_has_a_64_bit_size_is_no_raw_stream(tmp_path: Path, kind: bytes) -> None:
    """Its first bytes, 00 00 00 01 (the size follows), look like a start code: the frames keep
    the MP4's times (a second of frames dropped here), not index / fps."""
    mp4 = write_test_pattern(tmp_path / "dropped.mp4", "-vf", "select='not(between(t,2,3))'", "-fps_mode",
                             "passthrough", "-c:v", "libx264", size="160x120", seconds=5.0, rate="10")
    data = bytearray(mp4.read_bytes())
    first_box = int.from_bytes(data[:4], "big")
    assert data[4:8] == b"ftyp" and first_box >= 16
    data[:16] = (1).to_bytes(4, "big") + kind + first_box.to_bytes(8, "big")  # the same box, its size in 64 bits
    path = tmp_path / "large_first_box.mp4"
    path.write_bytes(bytes(data))
    assert not is_elementary_stream(path, "h264")
    assert declared_frame_rate(path, "h264") is None
    with open_video(path) as video:
        times = [frame.timestamp_seconds for frame in video.frames(FrameWindow())]
    assert times == pytest.approx(presentation_times(mp4), abs=1e-3)


def test_an_mpeg_program_stream_declares_no_rate_of_its_own(tmp_path: Path) -> None:
    program = _raw_stream(tmp_path, "program.mpg", "30", ("-c:v", "mpeg2video"))
    assert declared_frame_rate(program, "mpg2") is None  # its container's timing applies


def test_a_stream_without_timing_and_a_container_give_none(tmp_path: Path) -> None:
    no_timing = _raw_stream(tmp_path, "openh264.h264", "20", ("-c:v", "libopenh264"))
    assert declared_frame_rate(no_timing, "h264") is None  # OpenH264 writes no VUI timing
    in_a_container = _raw_stream(tmp_path, "x264.mp4", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    assert declared_frame_rate(in_a_container, "h264") is None  # the container's timing applies


def test_cut_or_garbled_parameter_sets_give_none(tmp_path: Path) -> None:
    stream = _raw_stream(tmp_path, "x264.h264", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    data = stream.read_bytes()
    for number, broken in enumerate([data[:12], b"\x00\x00\x00\x01\x67" + bytes(40), b"\x00\x00\x01" + bytes(64)]):
        path = tmp_path / f"broken_{number}.h264"
        path.write_bytes(broken)
        assert declared_frame_rate(path, "h264") is None
        assert declared_frame_rate(path, "hevc") is None
    assert declared_frame_rate(tmp_path / "missing.h264", "h264") is None


@pytest.mark.parametrize("name", ["x264.h264", "x265.hevc"])
def test_a_raw_stream_is_timed_and_windowed_at_its_own_rate(tmp_path: Path, name: str) -> None:
    options = {"x264.h264": ("-c:v", "libx264", "-pix_fmt", "yuv420p"), "x265.hevc": ("-c:v", "libx265")}[name]
    stream = write_test_pattern(tmp_path / name, *options, size="160x120", seconds=3.0, rate="10")
    with open_video(stream) as video:
        assert video.info.fps == 10.0  # OpenCV alone says 25
        frames = list(video.frames(plan_window(SamplingOptions(start_seconds=1.0, end_seconds=2.0), video.info.fps)))
    assert [frame.frame_index for frame in frames] == list(range(10, 20))
    assert [frame.timestamp_seconds for frame in frames] == pytest.approx([index / 10 for index in range(10, 20)])


def test_zero_bytes_before_the_first_start_code_are_allowed(tmp_path: Path) -> None:
    stream = _raw_stream(tmp_path, "x264.h264", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    padded = tmp_path / "leading_zeros.h264"
    padded.write_bytes(b"\0\0\0\0" + stream.read_bytes())  # Annex B's leading_zero_8bits
    assert declared_frame_rate(padded, "h264") == 10.0


def test_a_stream_cut_mid_gop_is_timed_by_its_next_key_frames_parameter_sets(tmp_path: Path) -> None:
    """A DVR export or a cut capture starts with frames whose parameter sets came before the cut."""
    stream = write_test_pattern(tmp_path / "gop.h264", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-b:v", "4M",
                                "-x264-params", "keyint=24:min-keyint=24:scenecut=0", size="320x240",
                                seconds=6.0, rate="12")
    data = stream.read_bytes()
    starts = [match.start() for match in re.finditer(b"\x00\x00\x01", data)]
    slices = [start for start in starts if data[start + 3] & 0x1F == 1]  # non-IDR slices
    cut = tmp_path / "cut_mid_gop.h264"
    cut.write_bytes(data[slices[2]:])
    assert data[slices[2]:].find(b"\x00\x00\x01\x67") > 64 * 1024  # the next SPS is past the first read
    assert declared_frame_rate(cut, "h264") == 12.0


def test_a_variable_rate_streams_clock_is_not_taken_for_its_rate(tmp_path: Path) -> None:
    """Timed in milliseconds, not at a fixed rate: the SPS declares 1000 frames a second."""
    stream = _raw_stream(tmp_path, "vfr.h264", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p",
                                                      "-fps_mode", "passthrough", "-enc_time_base", "1:1000"))
    assert declared_frame_rate(stream, "h264") is None


# Parameter sets written bit by bit: an upload can declare whatever counts and lengths it likes.
def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _with_emulation_prevention(bits: str) -> bytes:
    bits += "1" + "0" * (-(len(bits) + 1) % 8)  # rbsp_stop_one_bit, then alignment
    escaped, zeros = bytearray(), 0
    for byte in int(bits, 2).to_bytes(len(bits) // 8, "big"):
        if zeros >= 2 and byte <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(escaped)


def _h264_sps(pic_order_cnt_cycle: int, padding: int = 0) -> bytes:
    """A baseline SPS of picture order count type 1 with `pic_order_cnt_cycle` offsets, timed
    at 10 fps, and `padding` bytes more before its unit ends."""
    bits = (format(66, "08b") + "0" * 8 + format(30, "08b") + _ue(0) + _ue(0) + _ue(1) + "0" + "1" + "1"
            + _ue(pic_order_cnt_cycle) + "1" * pic_order_cnt_cycle  # offset_for_ref_frame: se(0) each
            + _ue(1) + "0" + _ue(9) + _ue(7) + "1" + "1" + "0"  # references, size, frame_mbs_only, no cropping
            + "1" + "0000" + "1" + format(1, "032b") + format(20, "032b") + "1")  # VUI: timing 20 / (2 x 1)
    return b"\x00\x00\x00\x01\x67" + _with_emulation_prevention(bits) + b"\xff" * padding


def test_a_count_the_standard_caps_is_held_to_its_cap(tmp_path: Path) -> None:
    """H.264 allows 255 offsets in a picture order count cycle (7.4.2.1.1): one more is no SPS,
    however well the rest reads; held to the caps, no count makes a loop longer than they allow."""
    path = tmp_path / "cycle.h264"
    path.write_bytes(_h264_sps(255))
    assert declared_frame_rate(path, "h264") == 10.0
    path.write_bytes(_h264_sps(256))
    assert declared_frame_rate(path, "h264") is None


def test_a_parameter_set_longer_than_a_real_one_is_read_only_as_far_as_its_timing_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crafted SPS of a MiB, read bit by bit from one integer of its whole length, held a
    decoder (or, decoding in a thread, a run slot) for minutes."""
    read_lengths: list[int] = []

    class RecordingBitReader(elementary_stream._BitReader):
        def __init__(self, data: bytes) -> None:
            read_lengths.append(len(data))
            super().__init__(data)

    monkeypatch.setattr(elementary_stream, "_BitReader", RecordingBitReader)
    path = tmp_path / "long_sps.h264"
    path.write_bytes(_h264_sps(200, padding=1024 * 1024))
    assert declared_frame_rate(path, "h264") == 10.0
    assert read_lengths and max(read_lengths) <= 4096


def _hevc_vps(rate: int | None = None, header: bytes = b"\x40\x01") -> bytes:
    """An HEVC VPS of one layer, timed at `rate` (1 / rate a tick) or untimed."""
    timing = "0" if rate is None else "1" + format(1, "032b") + format(rate, "032b") + "0"
    bits = ("0000" + "11" + "000000" + "000" + "1" + "1" * 16 + "0" * 96  # up to profile_tier_level
            + "1" + "111" + "000000" + _ue(0) + timing)  # ordering info, layer sets, timing
    return b"\x00\x00\x01" + header + _with_emulation_prevention(bits)


def test_the_first_timed_video_parameter_set_of_the_first_few_gives_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "vps.hevc"
    path.write_bytes(b"\x00" + _hevc_vps() + _hevc_vps(50))
    assert declared_frame_rate(path, "hevc") == 50.0
    path.write_bytes(b"\x00" + _hevc_vps(header=b"\x41\x01") + _hevc_vps(24, header=b"\xc1\x01"))  # layer bits
    assert declared_frame_rate(path, "hevc") == 24.0


def test_only_the_first_few_video_parameter_sets_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 MiB of small HEVC VPS units without timing were each parsed in Python, for seconds."""
    vps = _hevc_vps()
    path = tmp_path / "many_vps.hevc"
    path.write_bytes(b"\x00" + vps * (200 * 1024 // len(vps)))
    parsed: list[object] = []
    real_vps_rate = elementary_stream._hevc_vps_rate
    monkeypatch.setattr(elementary_stream, "_hevc_vps_rate", lambda bits: parsed.append(bits) or real_vps_rate(bits))
    assert declared_frame_rate(path, "hevc") is None
    assert 1 <= len(parsed) <= 2 * 16  # the first 16 in the first read, and in the longer one


@pytest.mark.parametrize("header", [0x27, 0x47, 0x07])
def test_an_sps_is_found_whatever_its_nal_reference_priority(tmp_path: Path, header: int) -> None:
    stream = _raw_stream(tmp_path, "x264.h264", "10", ("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    path = tmp_path / "priority.h264"
    path.write_bytes(stream.read_bytes().replace(b"\x00\x00\x01\x67", b"\x00\x00\x01" + bytes([header]), 1))
    assert declared_frame_rate(path, "h264") == 10.0
