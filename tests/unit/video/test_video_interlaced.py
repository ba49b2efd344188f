"""Interlaced video never comes back as black frames: its frames are right, or the run is refused.

OpenCV 4.13 and 4.14 (FFmpeg 8's swscale) report interlaced frames as read but hand over
black images; the decoder process watches FFmpeg's log for the refusal (`decoder_log`) and
ends the run with VIDEO_UNREADABLE saying why. An OpenCV that converts them gets them right.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fakes.media import write_test_pattern
from videodag_service.dag import DagPipelineService
from videodag_service.errors import VideoUnreadable
from videodag_service.video import VideoFilePipelineService
from videodag_service.video.decoder_log import INTERLACED_REFUSED, LOGGER_NAME

# testsrc2's pattern averages about 120 in brightness; a black frame, 0.
PATTERN_BRIGHTNESS = 100

INTERLACED_ENCODINGS = {
    "h264.mp4": ("-vf", "tinterlace=4", "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "tff=1",
                 "-pix_fmt", "yuv420p"),
    "mpeg2.ts": ("-vf", "tinterlace=4,setfield=tff", "-c:v", "mpeg2video", "-flags", "+ildct+ilme"),
}


@pytest.mark.parametrize("name", sorted(INTERLACED_ENCODINGS))
def test_an_interlaced_video_gives_its_real_frames_or_a_typed_refusal_never_black_ones(
    tmp_path: Path, name: str
) -> None:
    path = write_test_pattern(tmp_path / f"interlaced_{name}", *INTERLACED_ENCODINGS[name], size="320x240",
                              seconds=2.0)
    service = VideoFilePipelineService(DagPipelineService.from_folder(), isolation="process")
    try:
        results = service.run_on_file("frame_stats_v1", path, {"max_frames": 8})
    except VideoUnreadable as error:
        assert "it is interlaced" in error.message and "deinterlace it first" in error.message
        assert error.details.metadata == {"interlaced": "true"}
        assert error.message.startswith(f"Unable to read video file {path.name!r}")
        return
    brightness = [item["result"]["stats"]["mean_brightness"] for item in results]
    assert len(brightness) == 8 and min(brightness) > PATTERN_BRIGHTNESS, brightness


_RUN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from videodag_service.dag import DagPipelineService
    from videodag_service.errors import VideoUnreadable
    from videodag_service.video import VideoFilePipelineService

    service = VideoFilePipelineService(DagPipelineService.from_folder(), isolation="process")
    try:
        results = service.run_on_file("frame_stats_v1", Path(sys.argv[1]), {"max_frames": 8})
    except VideoUnreadable as error:
        print(json.dumps({"refused": error.message}))
    else:
        print(json.dumps({"brightness": [item["result"]["stats"]["mean_brightness"] for item in results]}))
    """
)


@pytest.mark.parametrize("variable", [("OPENCV_FFMPEG_LOGLEVEL", "-8"), ("OPENCV_FFMPEG_LOGLEVEL", "24"),
                                      ("OPENCV_FFMPEG_DEBUG", "1")])
def test_opencvs_ffmpeg_log_variables_in_the_servers_environment_do_not_hide_the_refusal(
    tmp_path: Path, variable: tuple[str, str]
) -> None:
    """With either variable set (an operator quieting FFmpeg, a render in the same process before),
    OpenCV printed FFmpeg's messages to stdout or nowhere, and black frames went out as results."""
    path = write_test_pattern(tmp_path / "interlaced.mp4", *INTERLACED_ENCODINGS["h264.mp4"], size="320x240",
                              seconds=1.0)
    name, value = variable
    completed = subprocess.run([sys.executable, "-c", _RUN_SCRIPT, str(path)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, name: value})
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout.splitlines()[-1])
    if "refused" in outcome:
        assert "it is interlaced" in outcome["refused"]
    else:
        assert min(outcome["brightness"]) > PATTERN_BRIGHTNESS, outcome


def test_a_progressive_video_flagged_nothing_special_runs_as_before(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "progressive.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                              size="320x240", seconds=1.0)
    service = VideoFilePipelineService(DagPipelineService.from_folder(), isolation="process")
    results = service.run_on_file("frame_stats_v1", path, {"max_frames": 8})
    assert min(item["result"]["stats"]["mean_brightness"] for item in results) > PATTERN_BRIGHTNESS


_WATCH_SCRIPT = textwrap.dedent(
    f"""
    import os
    from videodag_service.video.decoder_log import DecoderLogWatch

    watch = DecoderLogWatch.install()
    os.write(2, b"[h264 @ 0x1] an ordinary message\\n")
    watch.drain()
    print("after an ordinary message:", watch.interlaced_refused.is_set(), flush=True)
    os.write(2, b"[swscaler @ 0x2] " + {INTERLACED_REFUSED!r} + b" or vice versa.\\n")
    watch.drain()
    print("after the refusal:", watch.interlaced_refused.is_set(), flush=True)
    """
)


def test_the_log_watch_passes_every_line_on_and_notices_the_refusal() -> None:
    completed = subprocess.run([sys.executable, "-c", _WATCH_SCRIPT], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["after an ordinary message: False", "after the refusal: True"]
    messages = [line.split("]: ", 1)[1] for line in completed.stderr.splitlines()]
    assert [message.rsplit(" (decoder process ", 1)[0] for message in messages] == [
        "[h264 @ 0x1] an ordinary message",
        f"[swscaler @ 0x2] {INTERLACED_REFUSED.decode()} or vice versa.",
    ]


_MUTED_WATCH_SCRIPT = textwrap.dedent(
    f"""
    import os
    from videodag_service.video.decoder_log import DecoderLogWatch

    watch = DecoderLogWatch.install()
    cut_short = []
    watch.mute_once(lambda: bool(cut_short))
    os.write(2, b"[h264 @ 0x1] before the cut\\n")
    watch.drain()
    cut_short.append(True)
    os.write(2, b"[mov,mp4 @ 0x2] stream 0, offset 0x215b0: partial file\\n")
    os.write(2, b"[swscaler @ 0x3] " + {INTERLACED_REFUSED!r} + b"\\n")
    watch.drain()
    print("refusal seen:", watch.interlaced_refused.is_set(), flush=True)
    """
)


def test_a_muted_log_watch_passes_no_line_on_and_still_looks_at_each() -> None:
    """A decode-during-upload run its client cancelled logged FFmpeg's complaints of the file cut
    short ("partial file", "Invalid NAL unit size"), up to a hundred, as if the video were damaged."""
    completed = subprocess.run([sys.executable, "-c", _MUTED_WATCH_SCRIPT], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["refusal seen: True"]
    messages = [line.split("]: ", 1)[1].rsplit(" (decoder process ", 1)[0] for line in completed.stderr.splitlines()]
    assert messages == ["[h264 @ 0x1] before the cut"]


_TEXT_WATCH_SCRIPT = textwrap.dedent(
    """
    import os
    from videodag_service.video.decoder_log import DecoderLogFormat, DecoderLogWatch

    watch = DecoderLogWatch.install(DecoderLogFormat(json_lines=False, request_id="req-7"))
    os.write(2, b"[mov,mp4 @ 0x1] stream 0, offset 0x30: partial file\\n\\n")
    watch.drain()
    print(os.getpid(), flush=True)
    """
)


def test_for_a_server_logging_text_each_line_passed_on_is_a_text_line_with_time_and_request_id() -> None:
    completed = subprocess.run([sys.executable, "-c", _TEXT_WATCH_SCRIPT], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    [line] = completed.stderr.splitlines()  # the blank line carries nothing and is not passed on
    pattern = (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING " + re.escape(LOGGER_NAME)
               + r" \[req-7\]: \[mov,mp4 @ 0x1\] stream 0, offset 0x30: partial file \(decoder process (\d+)\)")
    matched = re.fullmatch(pattern, line)
    assert matched is not None, line
    assert matched.group(1) == completed.stdout.strip()


_JSON_WATCH_SCRIPT = textwrap.dedent(
    """
    import os
    from videodag_service.video.decoder_log import DecoderLogFormat, DecoderLogWatch

    watch = DecoderLogWatch.install(DecoderLogFormat(json_lines=True, request_id="req-7"))
    os.write(2, b"[mov,mp4 @ 0x1] stream 0, offset 0x30: partial file\\n")
    watch.drain()
    """
)


def test_for_a_server_logging_json_each_line_passed_on_is_a_json_object_with_the_request_id() -> None:
    completed = subprocess.run([sys.executable, "-c", _JSON_WATCH_SCRIPT], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    [entry] = [json.loads(line) for line in completed.stderr.splitlines()]
    assert entry["message"] == "[mov,mp4 @ 0x1] stream 0, offset 0x30: partial file"
    assert (entry["logger"], entry["level"], entry["request_id"]) == (LOGGER_NAME, "WARNING", "req-7")
    assert entry["decoder_pid"] > 0


_UNREAD_STDERR_SCRIPT = textwrap.dedent(
    """
    import os
    import time
    from videodag_service.video.decoder_log import DecoderLogFormat, DecoderLogWatch

    watch = DecoderLogWatch.install(DecoderLogFormat(json_lines=True, request_id="req-8"))
    for number in range(3000):
        os.write(2, b"[h264 @ 0x1] error while decoding MB %d, bytestream 88\\n" % number)
        watch.drain()
    print("decoded on", flush=True)
    input()  # the reader is back
    time.sleep(0.5)  # and has emptied the pipe
    os.write(2, b"[h264 @ 0x1] the last message\\n")
    watch.drain()
    """
)


def test_a_stderr_nobody_reads_does_not_stall_the_decoder() -> None:
    """A log collector fallen behind: the decoder blocked passing FFmpeg's lines on, went silent,
    and its run failed for want of progress, the video blamed. Lines are dropped instead, counted."""
    decoder = subprocess.Popen([sys.executable, "-c", _UNREAD_STDERR_SCRIPT], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert decoder.stdout is not None and decoder.stderr is not None
        ready, _, _ = select.select([decoder.stdout], [], [], 30)  # stderr is not read meanwhile
        assert ready and decoder.stdout.readline() == b"decoded on\n"
        _, errors = decoder.communicate(b"\n", timeout=30)
        lines = errors.decode().splitlines()
    finally:
        decoder.kill()
        decoder.wait()
    entries = [json.loads(line) for line in lines]  # every line whole
    messages = [entry["message"] for entry in entries]
    passed_on = [message for message in messages if message.startswith("[h264")]
    assert 0 < len(passed_on) < 3000
    dropped = [message for message in messages if message.endswith("decoder log lines were dropped: stderr was "
                                                                        "not being read")]
    assert passed_on[-1] == "[h264 @ 0x1] the last message"
    assert len(passed_on) - 1 + sum(int(message.split()[0]) for message in dropped) == 3000
