"""Whose fault a decoder's failure is: the video's, or the server's want of threads or memory.

At a container's pids or memory limit, FFmpeg fails as it does on a damaged file: a codec it
could not open, frames it would not convert (OpenCV then hands over black ones). What it
logs tells the two apart, and a want of resources is the server's trouble (UNAVAILABLE,
retry) where the video would otherwise be blamed (INVALID_ARGUMENT, never retried). Apart
from the decoder process, which reads FFmpeg's log, so that the rules can be read and tested
alone.
"""

from __future__ import annotations

from pathlib import Path

from videodag_service.errors import ServerOutOfResources, VideodagError, VideoUnreadable
from videodag_service.resource_errors import out_of_resources, resources_exhausted
from videodag_service.video.unreadable import unreadable

# How FFmpeg says it lacked threads (EAGAIN) or memory (ENOMEM): in words, or as OpenCV's error numbers.
_RESOURCE_CAUSES = {"Resource temporarily unavailable": "processes or threads", "Cannot allocate memory": "memory"}
_RESOURCE_CODEC_ERRORS = {"error: -11": "processes or threads", "error: -12": "memory"}


def frames_not_converted(path: Path, ffmpeg_says: str) -> VideodagError:
    """FFmpeg would not convert frames to images: for want of threads or memory (the process at
    its container's limits), the server's trouble; for any other cause, the video's."""
    for cause, short_of in _RESOURCE_CAUSES.items():
        if cause in ffmpeg_says:
            return resources_exhausted(short_of, f"FFmpeg: {ffmpeg_says}")
    return unreadable(path, f"FFmpeg could not convert its frames to images: {ffmpeg_says}")


def blamed_on_the_server(error: Exception, codec_not_opened: str | None) -> ServerOutOfResources | None:
    """The decoder's error as the server's want of resources, where it is one: OpenCV calls a
    file whose codec FFmpeg could not open for want of threads or memory unreadable.
    `codec_not_opened` is FFmpeg's line saying it could not open the codec, if it said so."""
    if (resource_error := out_of_resources(error)) is not None:
        return resource_error
    if isinstance(error, VideoUnreadable) and codec_not_opened is not None:
        for code, short_of in _RESOURCE_CODEC_ERRORS.items():
            if codec_not_opened.endswith(code):
                return resources_exhausted(short_of, f"FFmpeg: {codec_not_opened}")
    return None
