"""The messages between the server and its decoder process: small JSON objects, never pickles.

The decoder parses hostile files, so what it sends is parsed as data and checked field by
field: a decoder that went wrong can end its run with a malformed message, but it cannot
make the server run code or index outside the frame ring. Pixels travel in the ring
(`frame_ring`), not here.

Decoder to server, in order: `ready` (its code runs: the process started), `opened` (the
probe), `attached` (it mapped the ring), then `frame` per kept frame, `alive` now and then
while it grabs frames it skips, and finally `finished` (`DecodeEnding`: its decode time,
whether the video ended early, the frames it held when read to its end) or `failed`. Server
to decoder: `open` with the file's path (and the call's log format) first when the process was
started before its file was complete (`isolation.start_decoder_ahead`) or as a spare
(`spare_decoder`), then one `decode` request, then `released`
with the slot number once per frame, when nothing in the server looks at that slot any more
(not necessarily in the order the frames came). The server ends the conversation by closing
its end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videodag_service.errors import (
    ErrorDetails,
    ServerOutOfResources,
    VideodagError,
    VideoTooLarge,
    VideoUnreadable,
)
from videodag_service.resource_errors import RESOURCE_RETRY_SECONDS
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.frame_ring import RingLayout
from videodag_service.video.info import VideoInfo
from videodag_service.video.limits import VideoLimits
from videodag_service.video.sampling import FrameWindow

# The largest message either side accepts: an error message with its metadata fits easily.
MAX_MESSAGE_BYTES = 64 * 1024
# The typed errors a decoder may report; anything else it raises arrives as a RuntimeError.
_FILE_ERRORS: dict[str, type[VideodagError]] = {
    "VideoUnreadable": VideoUnreadable, "VideoTooLarge": VideoTooLarge, "ServerOutOfResources": ServerOutOfResources,
}


class MalformedMessage(ValueError):
    """Raised when a message is not JSON, has an unknown type, or a field of the wrong kind."""


@dataclass(frozen=True)
class DecodeRequest:
    """Server to decoder: what to decode and where to put it."""

    window: FrameWindow
    limits: VideoLimits
    ring_name: str
    layout: RingLayout
    heartbeat_seconds: float


@dataclass(frozen=True)
class FrameReady:
    """Decoder to server: a kept frame waits in `slot`, as a uint8 image of `shape`."""

    slot: int
    frame_index: int
    timestamp_seconds: float
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DecodeEnding:
    """Decoder to server, last: how decoding went (`OpenedVideo`'s attributes of these names)."""

    decode_seconds: float
    ended_early: bool
    frames_in_video: int | None
    frames_unreadable: int


def encode(kind: str, **fields: Any) -> bytes:
    return json.dumps({"type": kind, **fields}, allow_nan=False, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    try:
        message = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, NaN, a 5000-digit number, deep nesting
        raise MalformedMessage(f"not a JSON message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MalformedMessage("a message must be an object with a type")
    return message


@dataclass(frozen=True)
class OpenRequest:
    """The file a decoder started ahead is to open, and how its log lines are written from
    then on (it was started before the call it serves, so it could not know the call's id)."""

    path: Path
    log_format: DecoderLogFormat


def open_file(request: OpenRequest) -> bytes:
    return encode(
        "open", path=str(request.path), json_lines=request.log_format.json_lines,
        request_id=request.log_format.request_id,
    )


def open_request_from(message: dict[str, Any]) -> OpenRequest:
    """The file an `open` message names, and the log format it asks for."""
    if message["type"] != "open":
        raise MalformedMessage(f"expected the file to open, got {message['type']!r}")
    log_format = DecoderLogFormat(field(message, "json_lines", bool), field(message, "request_id", (str, type(None))))
    return OpenRequest(Path(field(message, "path", str)), log_format)


def opened(info: VideoInfo) -> bytes:
    return encode("opened", info=asdict(info))


def decode_request(request: DecodeRequest) -> bytes:
    return encode(
        "decode",
        window=asdict(request.window),
        limits=asdict(request.limits),
        ring_name=request.ring_name,
        layout=asdict(request.layout),
        heartbeat_seconds=request.heartbeat_seconds,
    )


def frame_ready(frame: FrameReady) -> bytes:
    return encode("frame", slot=frame.slot, frame_index=frame.frame_index,
                  timestamp_seconds=frame.timestamp_seconds, shape=list(frame.shape))


def released(slot: int) -> bytes:
    return encode("released", slot=slot)


def released_slot_from(message: dict[str, Any]) -> int:
    """The slot a `released` message gives back (checked against what was lent by the caller)."""
    if message["type"] != "released":
        raise MalformedMessage(f"expected a slot release, got {message['type']!r}")
    return int(field(message, "slot", int))


def finished(ending: DecodeEnding) -> bytes:
    return encode("finished", **asdict(ending))


def finish_from(message: dict[str, Any]) -> DecodeEnding:
    """A `finished` message; a frame count, when there is one, is a whole number not below zero."""
    frames_in_video = field(message, "frames_in_video", (int, type(None)))
    if frames_in_video is not None and frames_in_video < 0:
        raise MalformedMessage(f"frames_in_video must not be negative, got {frames_in_video}")
    frames_unreadable = field(message, "frames_unreadable", int)
    if frames_unreadable < 0:
        raise MalformedMessage(f"frames_unreadable must not be negative, got {frames_unreadable}")
    return DecodeEnding(
        decode_seconds=float(field(message, "decode_seconds", float)),
        ended_early=field(message, "ended_early", bool),
        frames_in_video=frames_in_video,
        frames_unreadable=frames_unreadable,
    )


def failed(error: BaseException) -> bytes:
    """A typed error keeps its class, message, logged message and metadata; any other error only its text."""
    kind = type(error).__name__ if type(error).__name__ in _FILE_ERRORS else "unexpected"
    metadata = dict(error.details.metadata) if isinstance(error, VideodagError) else {}
    message = str(error) if kind != "unexpected" else f"{type(error).__name__}: {error}"
    logged = error.logged_message if isinstance(error, VideodagError) else message
    return encode("failed", error=kind, message=message, logged=logged, metadata=metadata)


def info_from(message: dict[str, Any]) -> VideoInfo:
    info = field(message, "info", dict)
    if not (field(info, "width", int) > 0 and field(info, "height", int) > 0):
        raise MalformedMessage(f"frame size {info['width']}x{info['height']} is not positive")
    try:
        return VideoInfo(
            fps=float(field(info, "fps", float)),
            frame_count=field(info, "frame_count", int),
            width=field(info, "width", int),
            height=field(info, "height", int),
            duration_seconds=float(field(info, "duration_seconds", float)),
            codec=field(info, "codec", str),
            size_bytes=field(info, "size_bytes", int),
            frame_count_is_estimate=field(info, "frame_count_is_estimate", bool),
        )
    except TypeError as error:
        raise MalformedMessage(f"bad video info: {error}") from None


def request_from(message: dict[str, Any]) -> DecodeRequest:
    try:
        return DecodeRequest(
            window=FrameWindow(**field(message, "window", dict)),
            limits=VideoLimits(**field(message, "limits", dict)),
            ring_name=field(message, "ring_name", str),
            layout=RingLayout(**field(message, "layout", dict)),
            heartbeat_seconds=float(field(message, "heartbeat_seconds", float)),
        )
    except TypeError as error:
        raise MalformedMessage(f"bad decode request: {error}") from None


def frame_from(message: dict[str, Any], layout: RingLayout) -> FrameReady:
    """A frame message, checked against the ring: slot in range, a uint8 BGR image that fits its slot."""
    slot = field(message, "slot", int)
    shape = tuple(field(message, "shape", list))
    if not 0 <= slot < layout.slots:
        raise MalformedMessage(f"slot {slot} is outside the ring of {layout.slots}")
    if len(shape) != 3 or not all(type(side) is int and side > 0 for side in shape) or shape[2] != 3:
        raise MalformedMessage(f"frame shape {shape} is not that of a BGR image")
    if shape[0] * shape[1] * shape[2] > layout.slot_bytes:
        raise MalformedMessage(f"a frame of shape {shape} does not fit in a slot of {layout.slot_bytes} bytes")
    return FrameReady(
        slot=slot,
        frame_index=field(message, "frame_index", int),
        timestamp_seconds=float(field(message, "timestamp_seconds", float)),
        shape=shape,
    )


def error_from(message: dict[str, Any]) -> Exception:
    """The decoder's error as the server raises it: a typed error keeps its type and details."""
    kind = field(message, "error", str)
    text = field(message, "message", str)
    logged = field(message, "logged", str) if "logged" in message else text
    metadata = field(message, "metadata", dict)
    error_class = _FILE_ERRORS.get(kind)
    if error_class is None:
        return RuntimeError(f"the decoder process failed: {text}")
    clean = {str(key): str(value) for key, value in metadata.items()}
    retry_after = RESOURCE_RETRY_SECONDS if error_class is ServerOutOfResources else None
    return error_class(text, ErrorDetails(metadata=clean, retry_after_seconds=retry_after), logged_message=logged)


def field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """`message[name]` if it is of `kind`, else MalformedMessage; JSON numbers may be int or float."""
    if kind is float:
        kind = (int, float)
    value = message.get(name)
    # bool is an int to Python, never a count or an index here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedMessage(f"field {name!r} is missing or not {_kind_name(kind)}: {value!r}")
    return value


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number this protocol carries", name, 0)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


# Made once: `json.loads` with an option builds a decoder at every call, a third of the cost
# of parsing a frame message (10 us against 4).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
