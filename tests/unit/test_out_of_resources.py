"""The process out of threads, processes, memory or open files: a typed, retryable error,
never the video's fault nor a bare INTERNAL (a container's pids, memory or open-files limit)."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from fakes.servicer_context import CallAborted, FakeServicerContext
from videodag_service.call_status import abort, status_name
from videodag_service.errors import ServerOutOfResources, VideoUnreadable
from videodag_service.jobs.model import JobError
from videodag_service.resource_errors import out_of_resources
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_blame import blamed_on_the_server, frames_not_converted
from videodag_service.video.decoder_log import CODEC_NOT_OPENED, SCALING_FAILED

NO_THREAD = RuntimeError("can't start new thread")
EAGAIN_LINE = (f"[swscaler @ 0x5] {SCALING_FAILED.decode()} (Resource temporarily unavailable): fmt:yuv420p "
               "csp:unknown prim:unknown trc:unknown -> fmt:bgr24 csp:gbr prim:unknown trc:unknown")


@pytest.mark.parametrize(("error", "short_of"), [
    (NO_THREAD, "threads"),
    (OSError(errno.EMFILE, "Too many open files"), "open files"),
    (OSError(errno.ENFILE, "Too many open files in system"), "open files"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), "memory"),
    (OSError(errno.EAGAIN, "Resource temporarily unavailable"), "processes or threads"),  # fork at a pids limit
    (MemoryError(), "memory"),
])
def test_running_short_of_a_resource_is_unavailable_with_a_retry_hint(error: BaseException, short_of: str) -> None:
    typed = out_of_resources(error)
    assert isinstance(typed, ServerOutOfResources)
    assert (typed.status_code, typed.reason) == ("UNAVAILABLE", "SERVER_OUT_OF_RESOURCES")
    assert typed.details.metadata == {"short_of": short_of}
    assert typed.details.retry_after_seconds is not None and typed.details.retry_after_seconds > 0
    assert f"ran out of {short_of}" in typed.message


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError(errno.EACCES, "Permission denied"), ValueError("bad")])
def test_other_errors_are_not_taken_for_a_want_of_resources(error: BaseException) -> None:
    assert out_of_resources(error) is None


def test_a_call_that_could_not_start_a_thread_ends_unavailable_not_internal() -> None:
    """It ended INTERNAL "internal error: RuntimeError: can't start new thread", logged as a bug."""
    context = FakeServicerContext()
    with pytest.raises(CallAborted) as ended:
        abort(context, NO_THREAD)
    assert context.code is grpc.StatusCode.UNAVAILABLE
    assert "ran out of threads" in str(ended.value)
    assert any(b"SERVER_OUT_OF_RESOURCES" in value for key, value in context.trailing_metadata
               if key == "grpc-status-details-bin")
    assert status_name(NO_THREAD) == "UNAVAILABLE"


def test_a_job_that_could_not_start_a_thread_records_the_typed_error() -> None:
    recorded = JobError.from_exception(NO_THREAD)
    assert (recorded.status_code, recorded.reason) == ("UNAVAILABLE", "SERVER_OUT_OF_RESOURCES")


def test_frames_swscale_could_not_convert_for_want_of_threads_are_the_servers_trouble(tmp_path: Path) -> None:
    """OpenCV handed over black frames as read: the run ended OK with every result wrong."""
    error = frames_not_converted(tmp_path / "video.mp4", EAGAIN_LINE.split("] ", 1)[1])
    assert isinstance(error, ServerOutOfResources)
    assert error.details.metadata == {"short_of": "processes or threads"}


def test_frames_swscale_refused_for_another_cause_are_the_videos(tmp_path: Path) -> None:
    error = frames_not_converted(tmp_path / "video.mp4", f"{SCALING_FAILED.decode()} (Invalid argument): fmt:gbrp")
    assert isinstance(error, VideoUnreadable)
    assert "could not convert its frames to images" in error.message


@pytest.mark.parametrize(("code", "short_of"), [("-11", "processes or threads"), ("-12", "memory")])
def test_a_codec_ffmpeg_could_not_open_for_want_of_threads_or_memory_does_not_blame_the_video(
    tmp_path: Path, code: str, short_of: str
) -> None:
    """Refused as INVALID_ARGUMENT VIDEO_UNREADABLE "...incomplete or damaged", not retryable."""
    codec_not_opened = f"global cap_ffmpeg_impl.hpp:1471 open {CODEC_NOT_OPENED.decode()} h264, error: {code}"
    blamed = blamed_on_the_server(VideoUnreadable("not a video OpenCV can decode"), codec_not_opened)
    assert isinstance(blamed, ServerOutOfResources)
    assert blamed.details.metadata == {"short_of": short_of}
    invalid_data = f"open {CODEC_NOT_OPENED.decode()} h264, error: -1094995529"  # the file's
    assert blamed_on_the_server(VideoUnreadable("not a video OpenCV can decode"), invalid_data) is None


def test_the_typed_error_crosses_from_the_decoder_process_with_its_retry_hint() -> None:
    sent = out_of_resources(NO_THREAD)
    assert sent is not None
    received = messages.error_from(messages.decode(messages.failed(sent)))
    assert isinstance(received, ServerOutOfResources)
    assert received.message == sent.message
    assert received.details.metadata == sent.details.metadata
    assert received.details.retry_after_seconds == sent.details.retry_after_seconds


_WATCH_SCRIPT = textwrap.dedent(
    f"""
    import os
    from videodag_service.video.decoder_log import DecoderLogWatch

    watch = DecoderLogWatch.install()
    line = {EAGAIN_LINE.encode()!r}
    os.write(2, line[:60])  # a line still being written counts at once
    watch.drain()
    print(watch.scaling_failed is not None, flush=True)
    os.write(2, line[60:] + b"\\n")
    watch.drain()
    print(watch.scaling_failed, flush=True)
    os.write(2, b"[ERROR:0@1.978] global cap_ffmpeg_impl.hpp:1471 open Could not open codec h264, error: -11\\n")
    watch.drain()
    print(watch.codec_not_opened, flush=True)
    """
)


def test_the_log_watch_notices_a_refused_conversion_and_a_codec_not_opened() -> None:
    completed = subprocess.run([sys.executable, "-c", _WATCH_SCRIPT], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "True",
        EAGAIN_LINE.split("] ", 1)[1],
        "global cap_ffmpeg_impl.hpp:1471 open Could not open codec h264, error: -11",
    ]
