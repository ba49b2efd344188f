"""The frame rate a raw H.264, HEVC or MPEG-1/2 video stream (as CCTV and DVR exports write them) declares.

A raw stream has no container: no timestamps, and no frame rate but the one its encoder
may write into the stream's parameter sets (the VUI timing of an H.264 SPS, the timing
of an HEVC VPS, the frame rate code of an MPEG-2 sequence header). FFmpeg 9, which OpenCV
bundles, reports such a stream at its raw demuxer's default of 25 fps, whatever the
stream says; frames are then placed at `index / fps`, so every timestamp and time window
of a 10 fps recording would be wrong by 2.5 times. This reads the declared rate from the first parameter set itself.

Only the start of the file is read: the parameter sets come first, or, in a stream cut in
the middle of a group of pictures (a DVR export, a cut capture), with its next key frame.
Every read is bounded, and anything unexpected gives None: the caller keeps OpenCV's rate.
The work is bounded too, since an upload writes these bytes: the first parameter set of each
kind is found by the regular expression engine, not by walking every unit in Python; only its
first few KiB are read, bit by bit at a cost that does not grow with the position; and a count
the standard caps (reference pictures, layer sets) is held to that cap.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

from videodag_service.media.mp4_boxes import boxes

_FIRST_READ_BYTES = 64 * 1024
# A stream cut mid-GOP has its first parameter sets a GOP in: seconds of video, megabytes.
_MOST_READ_BYTES = 8 * 1024 * 1024
_START_CODE = b"\x00\x00\x01"
# A start code and the first byte of a NAL unit header of one type, whatever its other bits:
# H.264's is forbidden_zero_bit, nal_ref_idc (2 bits) and nal_unit_type (5 bits, SPS = 7);
# HEVC's is forbidden_zero_bit, nal_unit_type (6 bits: VPS = 32, SPS = 33), a bit of nuh_layer_id.
_H264_SPS_START = re.compile(b"\x00\x00\x01[" + bytes(flags << 5 | 7 for flags in range(8)) + b"]")
_HEVC_VPS_START = re.compile(b"\x00\x00\x01[\x40\x41\xc0\xc1]")
_HEVC_SPS_START = re.compile(b"\x00\x00\x01[\x42\x43\xc2\xc3]")
# A parameter set's fields up to its timing take a few hundred bytes (1-2 KiB with HEVC's
# most reference picture sets); a longer unit is read only this far.
_PARAMETER_SET_BYTES = 4096
# An HEVC stream may repeat its VPS, and layered streams have one a layer (at most 16).
_MOST_VPS_READ = 16
# H.264 profiles whose SPS carries chroma format, bit depths and scaling lists (7.3.2.1.1).
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# Frame rates outside this are not a camera's: a misread, or a clock (a stream of variable
# rate timed in milliseconds declares 1000), not a rate.
_PLAUSIBLE_FPS = (0.1, 1000.0)
# Above this an H.264 rate must say it is fixed: a variable-rate stream declares its clock.
_HIGHEST_UNFIXED_FPS = 240.0


def is_elementary_stream(path: str | os.PathLike[str], codec: str) -> bool:
    """Whether the file at `path` is a raw `codec` stream, with no container around it: its
    frames then go at `index / fps`. Raw H.264 and HEVC carry no times; FFmpeg times a raw
    MPEG-1/2 stream itself, one frame late (its first frame at 1 / fps)."""
    if codec.lower() not in _RATE_READERS:
        return False
    try:
        with open(path, "rb") as file:
            return _starts_as_annex_b(file.read(_FIRST_READ_BYTES), codec) and not _boxes_first(file)
    except OSError:
        return False


def declared_frame_rate(path: str | os.PathLike[str], codec: str) -> float | None:
    """The frame rate the raw `codec` ("h264", "hevc", "mpg2"...) stream at `path` declares;
    None if the file is not such a stream (a container), declares none, or cannot be read."""
    rate_of = _RATE_READERS.get(codec.lower())
    if rate_of is None:
        return None
    try:
        with open(path, "rb") as file:
            head = file.read(_FIRST_READ_BYTES)
            if not _starts_as_annex_b(head, codec) or _boxes_first(file):
                return None  # a container, not a raw stream: its own timing applies
            file.seek(len(head))
            found, rate = rate_of(head)
            if not found and len(head) == _FIRST_READ_BYTES:
                found, rate = rate_of(head + file.read(_MOST_READ_BYTES - len(head)))
    except (OSError, _NotAParameterSet):
        return None
    return _plausible(rate)


def _starts_as_annex_b(head: bytes, codec: str) -> bool:
    """A start code (00 00 01) first, after any zero bytes (Annex B's leading_zero_8bits), then
    what the codec's stream starts with: for MPEG-1/2 video a sequence header, for H.264 and
    HEVC a NAL unit, whose first bit is 0. An MPEG program stream starts with a pack header
    (00 00 01 BA), whatever it carries (`_boxes_first` tells an MP4 that starts like one)."""
    start = head[:64]
    after_zeros = start.lstrip(b"\x00")
    if len(start) - len(after_zeros) < 2 or not after_zeros.startswith(b"\x01") or len(after_zeros) < 2:
        return False
    if codec.lower() in _MPEG_VIDEO_CODECS:
        return after_zeros[1] == _MPEG_SEQUENCE_HEADER
    return after_zeros[1] < 0x80


def _boxes_first(file: BinaryIO) -> bool:
    """Whether the file opens with ISO media boxes (MP4, QuickTime): a box whose size puts the
    next one inside the file, both of four-letter types, or one box as long as the file. An
    MP4 whose first box has a 64-bit size (its size field 00 00 00 01) or a size of 256 to 383
    bytes (00 00 01 xx) starts like an Annex B stream; a raw stream is almost never read as two
    such boxes in a row (emulation prevention keeps 00 00 00 out of its units, which a 64-bit
    size within the file needs)."""
    size = os.fstat(file.fileno()).st_size
    found = list(boxes(file, 0, size, 2))
    typed = all(len(kind) == 4 and all(0x20 <= byte < 0x7F for byte in kind) for kind, _, _ in found)
    return typed and (len(found) == 2 or (len(found) == 1 and found[0][2] == size))


def _plausible(fps: float | None) -> float | None:
    low, high = _PLAUSIBLE_FPS
    return fps if fps is not None and low <= fps < high else None


def _nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (the last may be cut off by the read), each
    copied out only when asked for: the callers stop at the first one or two."""
    start = data.find(_START_CODE)
    while start >= 0:
        following = data.find(_START_CODE, start + len(_START_CODE))
        yield data[start + len(_START_CODE):following if following >= 0 else len(data)]
        start = following


def _first_unit(data: bytes, unit_start: re.Pattern[bytes], header_bytes: int) -> _BitReader | None:
    """The payload of the first unit `unit_start` finds (`_payload`); None if there is none."""
    match = unit_start.search(data)
    return None if match is None else _payload(data, match, header_bytes)


def _payload(data: bytes, match: re.Match[bytes], header_bytes: int) -> _BitReader | None:
    """The payload of the unit whose start `match` found, past its `header_bytes` and its
    emulation prevention bytes (a 0x03 after two zero bytes), its first `_PARAMETER_SET_BYTES`
    at most; None if it holds none."""
    header = match.end() - 1
    unit_end = data.find(_START_CODE, header, header + header_bytes + _PARAMETER_SET_BYTES)
    payload = data[header + header_bytes:unit_end if unit_end >= 0 else header + header_bytes + _PARAMETER_SET_BYTES]
    return _BitReader(re.sub(b"\x00\x00\x03", b"\x00\x00", payload)) if payload else None


def _at_most(value: int, highest: int) -> int:
    """`value`, a count a parameter set declares, if the standard allows it."""
    if value > highest:
        raise _NotAParameterSet
    return value


def _h264_rate(data: bytes) -> tuple[bool, float | None]:
    """Whether an SPS is in `data`, and the rate the first one declares."""
    if _H264_SPS_START.search(data) is None:
        return False, None
    sps = _first_unit(data, _H264_SPS_START, 1)
    return True, _h264_sps_rate(sps) if sps is not None else None


def _h264_sps_rate(bits: _BitReader) -> float | None:
    """Walks an H.264 SPS (ITU-T H.264 7.3.2.1.1) to its VUI timing (E.1.1)."""
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    pic_order_cnt_type = bits.ue()
    if pic_order_cnt_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(_at_most(bits.ue(), 255)):  # num_ref_frames_in_pic_order_cnt_cycle
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue()  # pic_width_in_mbs_minus1
    bits.ue()  # pic_height_in_map_units_minus1
    if not bits.u(1):  # frame_mbs_only_flag
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    if bits.u(1):  # frame_cropping_flag
        for _ in range(4):
            bits.ue()
    if not bits.u(1):  # vui_parameters_present_flag
        return None
    _skip_vui_start(bits)
    if not bits.u(1):  # timing_info_present_flag
        return None
    num_units_in_tick, time_scale, fixed_frame_rate = bits.u(32), bits.u(32), bits.u(1)
    if not num_units_in_tick:
        return None
    rate = time_scale / (2 * num_units_in_tick)  # a tick is a field: two make a frame (E.2.1)
    return rate if fixed_frame_rate or rate <= _HIGHEST_UNFIXED_FPS else None


def _skip_vui_start(bits: _BitReader) -> None:
    """The VUI fields H.264 (E.1.1) and HEVC (E.2.1) share, up to the chroma sample location."""
    if bits.u(1) and bits.u(8) == 255:  # aspect_ratio_info_present_flag, aspect_ratio_idc: extended SAR
        bits.u(32)
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)  # video_format, video_full_range_flag
        if bits.u(1):  # colour_description_present_flag
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue()
        bits.ue()


def _skip_scaling_list(bits: _BitReader, size: int) -> None:
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last_scale + bits.se() + 256) % 256
        last_scale = next_scale or last_scale


def _hevc_rate(data: bytes) -> tuple[bool, float | None]:
    """Whether an SPS is in `data`, and the rate from the timing of the first of the VPSs before
    it that has one (some encoders write it there), else from the SPS's VUI (x265 and most
    others). The first few VPSs only: a stream of nothing else took seconds to parse."""
    first_sps = _HEVC_SPS_START.search(data)
    before_sps = len(data) if first_sps is None else first_sps.start()
    for match in itertools.islice(_HEVC_VPS_START.finditer(data, 0, before_sps), _MOST_VPS_READ):
        vps = _payload(data, match, 2)
        vps_rate = _hevc_vps_rate(vps) if vps is not None else None
        if vps_rate is not None:
            return True, vps_rate
    if first_sps is None:
        return False, None
    sps = _first_unit(data, _HEVC_SPS_START, 2)
    return True, _hevc_sps_rate(sps) if sps is not None else None


def _hevc_vps_rate(bits: _BitReader) -> float | None:
    """Walks an HEVC VPS (ITU-T H.265 7.3.2.1) to its timing info."""
    bits.u(4)  # vps_video_parameter_set_id
    bits.u(2)  # vps_base_layer_internal_flag, vps_base_layer_available_flag
    bits.u(6)  # vps_max_layers_minus1
    max_sub_layers_minus1 = bits.u(3)
    bits.u(17)  # vps_temporal_id_nesting_flag, vps_reserved_0xffff_16bits
    _skip_profile_tier_level(bits, max_sub_layers_minus1)
    sub_layer_ordering_info_present = bits.u(1)
    for _ in range(0 if sub_layer_ordering_info_present else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        bits.ue()
        bits.ue()
        bits.ue()
    max_layer_id = bits.u(6)
    for _ in range(_at_most(bits.ue(), 1023)):  # vps_num_layer_sets_minus1: sets 1 and on list their layers
        bits.u(max_layer_id + 1)
    if not bits.u(1):  # vps_timing_info_present_flag
        return None
    num_units_in_tick, time_scale = bits.u(32), bits.u(32)
    return time_scale / num_units_in_tick if num_units_in_tick else None


def _hevc_sps_rate(bits: _BitReader) -> float | None:
    """Walks an HEVC SPS (ITU-T H.265 7.3.2.2.1) to the timing of its VUI (E.2.1)."""
    bits.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = bits.u(3)
    bits.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(bits, max_sub_layers_minus1)
    bits.ue()  # sps_seq_parameter_set_id
    if bits.ue() == 3:  # chroma_format_idc
        bits.u(1)  # separate_colour_plane_flag
    bits.ue()  # pic_width_in_luma_samples
    bits.ue()  # pic_height_in_luma_samples
    if bits.u(1):  # conformance_window_flag
        for _ in range(4):
            bits.ue()
    bits.ue()  # bit_depth_luma_minus8
    bits.ue()  # bit_depth_chroma_minus8
    log2_max_poc_lsb = bits.ue() + 4
    sub_layer_ordering_info_present = bits.u(1)
    for _ in range(0 if sub_layer_ordering_info_present else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        bits.ue()
        bits.ue()
        bits.ue()
    for _ in range(6):  # coding and transform block sizes, transform hierarchy depths
        bits.ue()
    if bits.u(1) and bits.u(1):  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_hevc_scaling_list_data(bits)
    bits.u(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if bits.u(1):  # pcm_enabled_flag
        bits.u(8)  # pcm sample bit depths
        bits.ue()
        bits.ue()
        bits.u(1)  # pcm_loop_filter_disabled_flag
    _skip_short_term_ref_pic_sets(bits, _at_most(bits.ue(), 64))
    if bits.u(1):  # long_term_ref_pics_present_flag
        for _ in range(_at_most(bits.ue(), 32)):  # num_long_term_ref_pics_sps
            bits.u(log2_max_poc_lsb + 1)  # lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag
    bits.u(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if not bits.u(1):  # vui_parameters_present_flag
        return None
    _skip_vui_start(bits)
    bits.u(3)  # neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    if bits.u(1):  # default_display_window_flag
        for _ in range(4):
            bits.ue()
    if not bits.u(1):  # vui_timing_info_present_flag
        return None
    num_units_in_tick, time_scale = bits.u(32), bits.u(32)
    return time_scale / num_units_in_tick if num_units_in_tick else None


def _skip_hevc_scaling_list_data(bits: _BitReader) -> None:
    """scaling_list_data() (7.3.4)."""
    for size_id in range(4):
        for _matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not bits.u(1):  # scaling_list_pred_mode_flag
                bits.ue()  # scaling_list_pred_matrix_id_delta
                continue
            if size_id > 1:
                bits.se()  # scaling_list_dc_coef_minus8
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                bits.se()


def _skip_short_term_ref_pic_sets(bits: _BitReader, count: int) -> None:
    """The SPS's st_ref_pic_set(i) for i below `count` (7.3.7): a set predicted from the one
    before it lists a flag or two for each picture of that one and the one before it."""
    delta_pocs: list[int] = []
    for index in range(count):
        if index > 0 and bits.u(1):  # inter_ref_pic_set_prediction_flag
            bits.u(1)  # delta_rps_sign
            bits.ue()  # abs_delta_rps_minus1
            kept = 0
            for _ in range(delta_pocs[index - 1] + 1):
                used_by_current = bits.u(1)
                kept += 1 if used_by_current else bits.u(1)  # use_delta_flag, 1 when absent
            delta_pocs.append(kept)
        else:
            negative, positive = _at_most(bits.ue(), 16), _at_most(bits.ue(), 16)  # each at most a DPB
            for _ in range(negative + positive):
                bits.ue()  # delta_poc_s0/s1_minus1
                bits.u(1)  # used_by_curr_pic_s0/s1_flag
            delta_pocs.append(negative + positive)


def _skip_profile_tier_level(bits: _BitReader, max_sub_layers_minus1: int) -> None:
    """profile_tier_level(1, max_sub_layers_minus1) (7.3.3): general profile and level, then each sub-layer's."""
    bits.u(88 + 8)  # general profile (88 bits) and general_level_idc
    present = [(bits.u(1), bits.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.u(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        bits.u(88 * profile_present + 8 * level_present)


class _NotAParameterSet(Exception):
    """The parameter set ended before the field asked for, or declares a count the standard
    forbids (cut off, or not what it seemed)."""


_MPEG_SEQUENCE_HEADER = 0xB3
_MPEG_EXTENSION = 0xB5
_MPEG_SEQUENCE_EXTENSION_ID = 1
# frame_rate_code 1-8 of an MPEG-1/2 sequence header (ISO/IEC 13818-2 table 6-4), and the
# codes 9-13 some encoders write for lower rates (Xing's 15, libmpeg3's 5, 10, 12, 15), as FFmpeg reads them.
_MPEG_FRAME_RATES = {1: 24000 / 1001, 2: 24.0, 3: 25.0, 4: 30000 / 1001, 5: 30.0, 6: 50.0, 7: 60000 / 1001, 8: 60.0,
                     9: 15.0, 10: 5.0, 11: 10.0, 12: 12.0, 13: 15.0}


def _mpeg_video_rate(data: bytes) -> tuple[bool, float | None]:
    """The rate of a raw MPEG-1/2 video stream, which opens with a sequence header: its
    frame_rate_code, scaled by the sequence extension's frame_rate_extension_n and _d (MPEG-2).
    A program or transport stream (a pack header first, or no start code) declares none here."""
    units = _nal_units(data)  # what follows each start code, the start code's value first
    first = next(units, None)
    if first is None or first[:1] != bytes([_MPEG_SEQUENCE_HEADER]) or len(first) < 5:
        return True, None
    rate = _MPEG_FRAME_RATES.get(first[4] & 0x0F)
    if rate is None:
        return True, None
    following = next(units, b"")
    if following[:1] == bytes([_MPEG_EXTENSION]) and len(following) >= 7:
        bits = _BitReader(following[1:7])
        if bits.u(4) == _MPEG_SEQUENCE_EXTENSION_ID:
            bits.u(8 + 1 + 2 + 2 + 2 + 12 + 1 + 8 + 1)  # profile to low_delay
            rate *= (bits.u(2) + 1) / (bits.u(5) + 1)
    return True, rate


_MPEG_VIDEO_CODECS = frozenset({"mpg1", "mpg2"})
_RATE_READERS = {"h264": _h264_rate, "avc1": _h264_rate, "hevc": _hevc_rate, "hev1": _hevc_rate, "hvc1": _hevc_rate,
                 "h265": _hevc_rate, "mpg1": _mpeg_video_rate, "mpg2": _mpeg_video_rate}


class _BitReader:
    """Reads a big-endian bit string: fixed-width fields and Exp-Golomb codes (H.264 9.1).

    Each field is taken from the bytes that hold it: shifting one integer of the whole string
    costs more the longer the string, which a crafted parameter set of a MiB made minutes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._length = len(data) * 8
        self._position = 0

    def u(self, count: int) -> int:
        """The next `count` bits as an unsigned integer."""
        if count == 0:
            return 0
        end = self._position + count
        if end > self._length:
            raise _NotAParameterSet
        last_byte = (end + 7) >> 3
        holding = int.from_bytes(self._data[self._position >> 3:last_byte], "big")
        self._position = end
        return (holding >> (last_byte * 8 - end)) & ((1 << count) - 1)

    def ue(self) -> int:
        """An unsigned Exp-Golomb code."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros > 31:
                raise _NotAParameterSet
        return (1 << leading_zeros) - 1 + self.u(leading_zeros)

    def se(self) -> int:
        """A signed Exp-Golomb code."""
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)
