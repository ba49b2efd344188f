"""What crosses the process boundary: the JSON messages (checked field by field) and the frame ring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fakes.waiting import frame_segments_left
from videodag_service.errors import DiskFull, ErrorDetails, InvalidOptions, VideoTooLarge, VideoUnreadable
from videodag_service.video import VideoInfo, VideoLimits
from videodag_service.video import decoder_messages as messages
from videodag_service.video.frame_ring import MAX_SLOTS, MIN_SLOTS, SEGMENT_PREFIX, FrameRing, RingLayout, plan_ring
from videodag_service.video.sampling import FrameWindow

INFO = VideoInfo(fps=29.97, frame_count=120, width=768, height=576, duration_seconds=4.004, codec="h264",
                 size_bytes=123_456)
LAYOUT = RingLayout(slots=3, slot_bytes=576 * 768 * 3)


def _frame_message(**overrides: object) -> dict:
    message = {"type": "frame", "slot": 1, "frame_index": 7, "timestamp_seconds": 0.7, "shape": [576, 768, 3]}
    message.update(overrides)
    return messages.decode(json.dumps(message).encode())


def test_the_probe_and_the_request_survive_the_round_trip() -> None:
    assert messages.info_from(messages.decode(messages.opened(INFO))) == INFO
    window = FrameWindow(0.48, 3.6, 3, 5, 12, 90)
    request = messages.DecodeRequest(window, VideoLimits(max_frames_total=1000), "seg", LAYOUT, 0.25)
    assert messages.request_from(messages.decode(messages.decode_request(request))) == request


def test_a_frame_message_survives_the_round_trip_with_an_exact_timestamp() -> None:
    frame = messages.FrameReady(2, 91, 91 / 29.97, (576, 768, 3))
    assert messages.frame_from(messages.decode(messages.frame_ready(frame)), LAYOUT) == frame


@pytest.mark.parametrize("frames_in_video", [120, 0, None])
def test_the_end_of_decoding_survives_the_round_trip(frames_in_video: int | None) -> None:
    ending = messages.DecodeEnding(decode_seconds=1.25, ended_early=True, frames_in_video=frames_in_video,
                                   frames_unreadable=17)
    assert messages.finish_from(messages.decode(messages.finished(ending))) == ending


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"frames_in_video": -1}, "must not be negative"),
        ({"frames_in_video": True}, "'frames_in_video' is missing or not int or NoneType"),
        ({"frames_in_video": 12.5}, "'frames_in_video' is missing or not int"),
        ({"frames_in_video": "120"}, "'frames_in_video' is missing or not int"),
        ({"ended_early": 1}, "'ended_early' is missing or not bool"),
        ({"decode_seconds": None}, "'decode_seconds' is missing"),
        ({"frames_unreadable": -1}, "frames_unreadable must not be negative"),
        ({"frames_unreadable": None}, "'frames_unreadable' is missing or not int"),
    ],
)
def test_an_end_of_decoding_with_a_bad_field_is_refused(overrides: dict, problem: str) -> None:
    message = messages.decode(messages.finished(messages.DecodeEnding(1.0, False, 120, 0)))
    message.update(overrides)
    with pytest.raises(messages.MalformedMessage, match=problem):
        messages.finish_from(message)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"slot": 3}, "outside the ring"),
        ({"slot": -1}, "outside the ring"),
        ({"slot": True}, "'slot' is missing or not int"),
        ({"slot": "1"}, "'slot' is missing or not int"),
        ({"shape": [577, 768, 3]}, "does not fit"),
        ({"shape": [576, 768, 4]}, "not that of a BGR image"),
        ({"shape": [576, 768]}, "not that of a BGR image"),
        ({"shape": [0, 768, 3]}, "not that of a BGR image"),
        ({"shape": [576.0, 768, 3]}, "not that of a BGR image"),
        ({"frame_index": None}, "'frame_index' is missing"),
        ({"timestamp_seconds": "soon"}, "'timestamp_seconds' is missing"),
    ],
)
def test_a_frame_message_that_could_reach_outside_the_ring_is_refused(overrides: dict, problem: str) -> None:
    with pytest.raises(messages.MalformedMessage, match=problem):
        messages.frame_from(_frame_message(**overrides), LAYOUT)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe", b"[1, 2]", b'{"slot": 1}', b'{"type": 5}', b'{"type": "frame", "t": NaN}',
     b'{"type": "frame", "n": ' + b"9" * 5000 + b"}", b"[" * 100_000],
    ids=["empty", "not-utf8", "array", "no-type", "type-not-text", "nan", "huge-number", "deep-nesting"],
)
def test_what_is_not_a_message_is_refused(raw: bytes) -> None:
    with pytest.raises(messages.MalformedMessage):
        messages.decode(raw)


def test_a_probe_with_no_picture_is_refused() -> None:
    message = messages.decode(messages.opened(INFO))
    message["info"]["width"] = 0
    with pytest.raises(messages.MalformedMessage, match="not positive"):
        messages.info_from(message)


def test_file_errors_keep_their_type_message_and_details() -> None:
    too_large = VideoTooLarge("video too large: 9 frames", ErrorDetails(metadata={"limit": "frame_count"}))
    unreadable = VideoUnreadable("Unable to read video file 'x.mp4': it is text, starting 'secret'",
                                 logged_message="Unable to read video file 'x.mp4': it is text")
    for error in (too_large, unreadable):
        rebuilt = messages.error_from(messages.decode(messages.failed(error)))
        assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
        assert rebuilt.details.metadata == error.details.metadata  # type: ignore[attr-defined]
        assert rebuilt.logged_message == error.logged_message  # type: ignore[attr-defined]


def test_other_errors_arrive_as_runtime_errors_and_never_choose_their_class() -> None:
    rebuilt = messages.error_from(messages.decode(messages.failed(MemoryError("out of memory"))))
    assert type(rebuilt) is RuntimeError and "MemoryError: out of memory" in str(rebuilt)
    # A domain error the decoder has no business raising is not rebuilt either.
    forged = messages.decode(messages.failed(InvalidOptions([])))
    assert type(messages.error_from(forged)) is RuntimeError
    forged["error"] = "SystemExit"
    assert type(messages.error_from(forged)) is RuntimeError


@pytest.mark.parametrize(
    ("width", "height", "budget", "slots"),
    [(768, 576, 16 * 1024 * 1024, 12), (1280, 720, 16 * 1024 * 1024, 6), (3840, 2160, 16 * 1024 * 1024, 2),
     (64, 48, 1, 2)],
)
def test_the_ring_holds_what_the_budget_allows_within_bounds(width: int, height: int, budget: int, slots: int) -> None:
    layout = plan_ring(width, height, budget)
    assert layout.slot_bytes == width * height * 3
    assert layout.slots == max(MIN_SLOTS, min(MAX_SLOTS, slots))


def test_frames_written_by_one_mapping_are_read_by_another_and_the_name_goes_on_unlink() -> None:
    layout = RingLayout(slots=2, slot_bytes=48 * 64 * 3)
    ring = FrameRing.create(layout)
    try:
        assert ring.name.startswith(SEGMENT_PREFIX) and (Path("/dev/shm") / ring.name).exists()
        other = FrameRing.attach(ring.name, layout)
        image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        other.slot_array(1, image.shape)[...] = image
        copied = ring.copy_out(1, image.shape)
        other.slot_array(1, image.shape)[...] = 0  # the copy is the reader's own
        assert np.array_equal(copied, image)
        ring.unlink()
        assert not (Path("/dev/shm") / ring.name).exists()
        other.slot_array(0, (4,))[...] = 7  # both mappings outlive the name
        assert ring.copy_out(0, (4,)).tolist() == [7, 7, 7, 7]
        other.close()
    finally:
        ring.close()


def test_a_ring_larger_than_the_free_shared_memory_is_a_disk_full_error() -> None:
    free = shutil.disk_usage("/dev/shm").free
    with pytest.raises(DiskFull, match="no room in shared memory") as raised:
        FrameRing.create(RingLayout(slots=2, slot_bytes=free // 2 + 4096))
    assert raised.value.status_code == "RESOURCE_EXHAUSTED"
    assert frame_segments_left() == []


def test_a_slot_view_cannot_reach_past_its_slot() -> None:
    ring = FrameRing.create(RingLayout(slots=2, slot_bytes=100))
    try:
        with pytest.raises(ValueError, match="does not fit"):
            ring.slot_array(0, (101,))
        with pytest.raises(ValueError, match="outside the ring"):
            ring.slot_array(2, (10,))
    finally:
        ring.close()


def test_a_release_names_its_slot_and_nothing_else_passes_for_one() -> None:
    assert messages.released_slot_from(messages.decode(messages.released(2))) == 2
    with pytest.raises(messages.MalformedMessage, match="expected a slot release"):
        messages.released_slot_from(messages.decode(messages.encode("alive")))
    for bad in ({"type": "released"}, {"type": "released", "slot": True}, {"type": "released", "slot": "1"}):
        with pytest.raises(messages.MalformedMessage, match="'slot' is missing or not int"):
            messages.released_slot_from(bad)


def test_a_wait_for_the_decoder_of_years_is_a_wait_without_end() -> None:
    """A decoder time limit of inf (or 1e9 s) made poll() raise OverflowError in every run."""
    from multiprocessing import Pipe

    from videodag_service.video.isolated_video import _Poller

    server_end, decoder_end = Pipe()
    try:
        decoder_end.send_bytes(b"x")
        assert _Poller(server_end).readable(1e9)
    finally:
        server_end.close()
        decoder_end.close()
