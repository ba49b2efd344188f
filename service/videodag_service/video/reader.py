"""Decode the sampled frames of a video: seek to the window, grab, convert, and decode past damage.

The video is opened and probed by `capture`; the capture is owned by a `with` block
(`open_video`), so it is released on every path: normal end, error, or a consumer that stops
iterating. Frames the stride skips are only `grab()`bed (demuxed and decoded, never converted
to BGR), which is what makes a stride cheap.

Threads: a capture is not thread-safe, but it may move between threads. The video is opened,
probed and released by the owner of the `with`; `frames()` may be iterated by another thread
(the run's decode thread), provided that thread has stopped before the block exits. OpenCV
releases the GIL while it grabs and retrieves, so that thread decodes while Python runs the
pipeline.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from videodag_service.media.container import is_iso_media, stores_frame_count
from videodag_service.video import avi_index
from videodag_service.video.capture import Capture
from videodag_service.video.edit_list import shown_seconds
from videodag_service.video.elementary_stream import is_elementary_stream
from videodag_service.video.frame_numbering import EvenlySpaced, FrameNumbering
from videodag_service.video.frame_times import FrameTimes, frame_times
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.info import VideoInfo
from videodag_service.video.limits import VideoLimits
from videodag_service.video.sample_spacing import frames_evenly_spaced
from videodag_service.video.sampling import FrameWindow
from videodag_service.video.unreadable import unreadable

_UNLIMITED = VideoLimits()

_TABLE_SEEK_ATTEMPTS = 3
_GRABS_PAST_DAMAGE = 256
"""Failed grabs in a row that end a video whose frames can be numbered past damage: FFmpeg
fails a grab a damaged frame, so damage up to 256 frames long is decoded past. At a true end
a grab costs about 20 us, and one past the declared count is not tried."""
_GRABS_SEEKING_MORE = 32
"""Failed grabs in a row that end a video whose frames cannot be numbered past damage: enough
to tell a damaged video (an H.264 MP4 with 20 KB overwritten fails 11) from one that ended."""

VideoSource = Path | GrowingUpload
"""A stored file, or an upload still arriving (both path-like)."""
VideoOpener = Callable[[VideoSource], AbstractContextManager["OpenedVideo"]]
"""Opens a video for decoding (`open_video` unless a caller substitutes its own)."""


@dataclass(frozen=True)
class DecodedFrame:
    """One sampled frame: its index in the source (before sampling), time and BGR pixels."""

    frame_index: int
    timestamp_seconds: float
    image: np.ndarray


class OpenedVideo:
    """A video opened for decoding; use through `open_video`, which releases it.

    `decode_seconds` accumulates the time spent seeking, grabbing and converting frames,
    not the time the consumer spends between frames (nor, with a decode thread, the time
    that thread waits for room to hand a frame over).
    """

    def __init__(self, source: str | os.PathLike[str]) -> None:
        self.path = Path(source)
        self.decode_seconds = 0.0
        self.ended_early = False
        """Whether `frames()` stopped at a frame it could not read, more than a second of frames
        before the count the container declares (a truncated or damaged file). Some containers
        only estimate their count, hence the second of slack."""
        self.frames_unreadable = 0
        """Frames `frames()` found it could not decode, in a stretch of damage it decoded past
        (`frame_numbering`); their indices are missing from what it yielded."""
        self.frames_in_video: int | None = None
        """How many frames `frames()` found in the video by reading it to its end (up to the
        frame it could not read, when it ended early); None when it stopped before the end, at
        the window's end or its `max_frames`. Unlike `info.frame_count`, which is declared."""
        self._tables_read = False
        self._tables_numbering: FrameNumbering | None = None
        self._capture = Capture(self.path, source if isinstance(source, GrowingUpload) else None)
        try:
            self.info = self._capture.probe()
            self._mirror_flip = self._capture.mirror_correction()
            self._timed_by_rate = is_elementary_stream(self.path, self.info.codec)
        except BaseException:
            self._capture.release()
            raise

    def close(self) -> None:
        self._capture.release()

    def frames(
        self,
        window: FrameWindow,
        limits: VideoLimits = _UNLIMITED,
        *,
        retrieve_into: Callable[[], np.ndarray] | None = None,
        on_grab: Callable[[], None] | None = None,
    ) -> Generator[DecodedFrame, None, None]:
        """Yield the frames the window samples, in order; stops early on a truncated file.

        Frames are chosen by presentation time (`_presentation_time`), so a variable frame
        rate gets the window asked for. Every delivered frame, sampled or not, is checked
        against `limits`, because the header's frame count and duration are only declarations.

        The decoder process uses the two hooks: `retrieve_into` returns the array the next
        kept frame is converted into (OpenCV writes in place when it has the frame's shape
        and allocates a new one otherwise, so check `image` against it); `on_grab` is called
        after every grab, kept or skipped, so long runs of skipped frames can report progress.
        """
        started = time.perf_counter()
        frame_index, previous_seconds = self._move_to(window, limits, on_grab)
        in_window = 0
        processed = 0
        numbering: FrameNumbering | None = None  # once past damage: frames are numbered by their times
        while window.max_frames is None or processed < window.max_frames:
            if not self._grab(on_grab):
                if numbering is None:
                    numbering = self._numbering_past_damage(frame_index, previous_seconds)
                if not self._grab_past_damage(frame_index, on_grab, numbered=numbering is not None):
                    self._ended_at(frame_index, previous_seconds)
                    break
                if numbering is None and not self._follows_on(previous_seconds):
                    self._ended_at(frame_index, previous_seconds, frames_follow=True)  # nothing tells which they are
                    break
            if numbering is None:
                seconds = self._presentation_time(frame_index, previous_seconds)
            else:
                placed = self._placed(numbering, frame_index)
                if placed is None:
                    continue  # untimed, or out of order after the damage: dropped with it
                index, seconds = placed
                self.frames_unreadable += _lost_in_window(numbering, window, frame_index, index)
                if not window.is_before(seconds):  # the stride keeps to the indices it would have sampled
                    in_window = index - numbering.first_at_or_after(window.start_seconds)
                frame_index = index
            previous_seconds = seconds
            if window.is_past_end(seconds):
                break  # checked before the limits: a window ending at the limit stays within it
            limits.check_frame(frame_index, seconds, self.info.fps)
            if not window.is_before(seconds):
                if in_window % window.frame_stride == 0:
                    image = self._retrieve(None if retrieve_into is None else retrieve_into())
                    if image is None:
                        self._ended_at(frame_index, seconds)
                        break
                    frame = DecodedFrame(frame_index, seconds, image)
                    self.decode_seconds += time.perf_counter() - started
                    yield frame
                    started = time.perf_counter()
                    processed += 1
                in_window += 1
            frame_index += 1
        self.decode_seconds += time.perf_counter() - started

    def _move_to(
        self, window: FrameWindow, limits: VideoLimits, on_grab: Callable[[], None] | None
    ) -> tuple[int, float | None]:
        """Skip most of what comes before the window: the index of the next frame to grab,
        and the presentation time of the frame before it (None at the start).

        In an MP4 or QuickTime file (`is_iso_media`) whose frames are evenly spaced in time
        (`sample_spacing`), or an AVI whose index has no empty video slot (`avi_index`: a
        capture card's dropped frames are such slots, which decoding skips and a seek counts),
        the capture seeks to the frame just before the window at the
        declared frame rate and grabs it. That is kept only when OpenCV reports landing exactly
        there (verified frame-exact on H.264/MP4, MPEG-4 Part 2 and MJPG/AVI) and the frame is
        presented where the declared rate puts it, before the window: then both the indices
        and the times that follow are right. An MP4 whose frames are not evenly spaced is
        sought by its sample table instead (`_move_by_frame_times`). Otherwise (a variable
        frame rate in other containers, an imprecise seek, dropped frames) the file is decoded
        from its start, slower but always right. Seeking is
        used only inside the declared frame count: a window starting past it is reached from
        the last declared frame, without decoding the whole file first.
        """
        before = window.first_index - 1
        if before < 1 or not self.info.fps > 0:
            return 0, None
        if not self._seeks_exactly():
            times = frame_times(self.path, self.info.frame_count) if is_iso_media(self.path) else None
            return (0, None) if times is None else self._move_by_frame_times(times, window, limits, on_grab)
        # A window starting past the declared end: to the last declared frame, then grab on,
        # so a file holding more frames than it declares still reaches the window. The limits
        # are checked where the seek lands, not where the window starts: a window past the
        # end of a short video is empty, not over a limit (every frame grabbed on is checked).
        target = min(before, self.info.frame_count - 1)
        if target < 1:
            return 0, None
        limits.check_frame(target, target / self.info.fps, self.info.fps)
        # A frame landed on without a timestamp of its own (an AVI's last frames, with B-frames)
        # tells nothing of where the seek landed: `_presentation_time` would place it where the
        # declared rate does, and pass for a seek that landed frames away.
        if self._seek(target) and self._grab(on_grab) and (seconds := self._timestamp(target, None)) is not None:
            declared = target / self.info.fps
            if abs(seconds - declared) < 0.5 / self.info.fps and window.is_before(seconds):
                return target + 1, seconds
        return self._start_again()

    def _move_by_frame_times(
        self, times: FrameTimes, window: FrameWindow, limits: VideoLimits, on_grab: Callable[[], None] | None
    ) -> tuple[int, float | None]:
        """`_move_to` for an MP4 whose frames are not evenly spaced: seek before the window and
        number the frame landed on by finding its time in the sample table (`frame_times`).

        OpenCV turns a seek's target into a time at the average rate, seeks to the key frame
        before it and walks on frame by frame, counting from the number that key frame's
        time gives: around frames dropped or bunched it stops a few frames off. It is asked
        for the smaller of the frame's index and its number by time; landing inside the
        window, it is asked again as many frames earlier as it overshot, and one more; failing
        to land at all (near the end of a file with B-frames), a second earlier. A landing
        time the table does not hold, or a third miss, and the file is decoded from its start.

        The first frame is decoded first: the table counts from its first sample, the decoder
        from the first frame it can show, and a recording cut mid-GOP starts with samples it
        cannot. When that frame is not the table's first, every index would be off by as many,
        and the file is decoded from its start.
        """
        target = times.last_before(window.start_seconds)
        if target < 1:
            return 0, None
        if not self._grab(on_grab) or times.index_at(self._presentation_time(0, None)) != 0:
            return self._start_again()
        target_seconds = times.seconds(target)
        limits.check_frame(target, target_seconds, self.info.fps)
        asked = min(target, round(target_seconds * self.info.fps))
        for _attempt in range(_TABLE_SEEK_ATTEMPTS):
            if asked < 1:
                break
            if not (self._seek(asked) and self._grab(on_grab)):
                asked -= max(2, round(self.info.fps))  # near the end, where B-frames can defeat a seek
                continue
            seconds = self._timestamp(asked, None)
            landed = None if seconds is None else times.index_at(seconds)
            if seconds is None or landed is None:
                break
            if window.is_before(seconds):
                return landed + 1, seconds
            asked -= landed - target + 1
        return self._start_again()

    def _start_again(self) -> tuple[int, float | None]:
        """After a seek that missed: the capture opened again, to decode from the start."""
        self._capture.reopen()
        return 0, None

    def _seeks_exactly(self) -> bool:
        """Whether a seek lands on the frame index asked for. Seeking is trusted only in the
        containers it was verified on, which store their frames' index: an MPEG program stream
        made of two files joined end to end, say, reports landing where asked and then ends at
        the first file's declared count. Even there OpenCV numbers the frame it lands on by its
        time, which tells its index only when the frames are evenly spaced (`sample_spacing`,
        `avi_index`): after frames dropped, every later index would be off by as many. A
        fragmented MP4 keeps its frame table in its fragments, where it is not looked for."""
        if is_iso_media(self.path):
            return frames_evenly_spaced(self.path, self.info.frame_count) is True
        return avi_index.seeks_exactly(self.path)

    def _ended_at(self, frame_count: int, last_seconds: float | None, *, frames_follow: bool = False) -> None:
        """The video held `frame_count` frames, the last presented at `last_seconds`: the next
        one could not be read, and, with `frames_follow`, frames that could were found after it.

        A video that opens but holds no readable frame at all (cut short after its header,
        damaged, a codec OpenCV lacks) is refused: a run of it would report nothing, as if
        its window had been empty.
        """
        if frame_count == 0 and frames_follow:
            raise unreadable(self.path, "its first frames could not be decoded (damaged?), and in this container "
                                        "the frames after them cannot be numbered")
        if frame_count == 0:
            raise unreadable(self.path, "no frame of it could be decoded (cut short, damaged, or a codec OpenCV lacks)")
        self.frames_in_video = frame_count
        self.ended_early = frames_follow or self._short_of_declared(frame_count, last_seconds)

    def _grab_past_damage(self, frame_index: int, on_grab: Callable[[], None] | None, *, numbered: bool) -> bool:
        """After a grab that failed: whether a frame follows (grabbed), or the video ended.

        Past the frames a container declares, it ended. Otherwise the grab is tried again:
        FFmpeg gives up on a damaged stretch a frame at a time, and a file cut short still
        holds frames its decoder has taken in but not yet shown (B-frames). Where the frames
        found cannot be `numbered`, fewer tries only tell whether any follow.
        """
        if stores_frame_count(self.path) and frame_index >= self.info.frame_count:
            return False
        tries = _GRABS_PAST_DAMAGE if numbered else _GRABS_SEEKING_MORE
        return any(self._grab(on_grab) for _ in range(tries))

    def _numbering_past_damage(self, frame_index: int, last_seconds: float | None) -> FrameNumbering | None:
        """How to number the frames after damage by their times (`frame_numbering`); None where
        nothing tells, or where that numbering would not give the frame before the damage the
        index its count gave."""
        if self._timed_by_rate or (last_seconds is None and frame_index > 0):
            return None
        numbering = self._numbering_by_tables()
        if numbering is None or (last_seconds is not None and numbering.index_at(last_seconds) != frame_index - 1):
            return None
        return numbering

    def _numbering_by_tables(self) -> FrameNumbering | None:
        """The numbering the container's tables give, read once a video: a damaged file asks at
        every stretch of damage, and an upload's tables can take a second to read. (Not
        functools.cached_property, whose one lock for every instance before Python 3.12 made
        each run's read wait for the others'.)"""
        if not self._tables_read:
            if is_iso_media(self.path):
                self._tables_numbering = frame_times(self.path, self.info.frame_count)
            elif self.info.fps > 0 and avi_index.seeks_exactly(self.path):
                self._tables_numbering = EvenlySpaced(self.info.fps)
            self._tables_read = True
        return self._tables_numbering

    def _follows_on(self, last_seconds: float | None) -> bool:
        """Whether the frame just grabbed, after a grab that failed, is the one after `last_seconds`
        at the frame rate (the first, at 0, with None): no frame was lost. OpenCV gives a grab up
        after 4,096 packets of the other streams, and a Matroska file with minutes of sound
        after its picture, or sound muxed ahead of it, has its frames come after such a grab."""
        fps = self.info.fps
        seconds = self._capture.opencv.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not fps > 0 or not math.isfinite(seconds):
            return False
        expected = 0.0 if last_seconds is None else last_seconds + 1.0 / fps
        return abs(seconds - expected) < 0.5 / fps

    def _placed(self, numbering: FrameNumbering, next_index: int) -> tuple[int, float] | None:
        """The index and time of the frame just grabbed, numbered by its time; None for one
        without a time the numbering holds, or one before `next_index` (after damage FFmpeg
        may show a frame late, after later ones)."""
        seconds = self._capture.opencv.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not (math.isfinite(seconds) and seconds >= 0):
            return None
        index = numbering.index_at(seconds)
        if index is None or index < next_index:
            return None
        return index, seconds

    def _short_of_declared(self, frame_count: int, last_seconds: float | None) -> bool:
        """Whether `frame_count` frames, the last presented at `last_seconds`, fall short of the
        declared count by more than a second's worth, in a container that stores its count
        (others only estimate it). An MP4's count includes the frames its edit list hides:
        there the frames it shows count (`edit_list`). An AVI holding a variable frame rate
        declares a fixed grid (600 fps, say) whose empty slots are no frames: a video whose
        last frame is within a second of the declared end was not cut short."""
        if not stores_frame_count(self.path):
            return False
        fps = self.info.fps
        expected = self.info.frame_count
        if is_iso_media(self.path) and fps > 0 and (shown := shown_seconds(self.path)) is not None:
            expected = min(expected, round(shown * fps))
        if frame_count >= expected - max(1, math.ceil(fps)):
            return False
        return not (fps > 0 and last_seconds is not None and last_seconds >= expected / fps - 1.0)

    def _seek(self, frame_index: int) -> bool:
        try:
            if not self._capture.opencv.set(cv2.CAP_PROP_POS_FRAMES, frame_index):
                return False
            landed = self._capture.opencv.get(cv2.CAP_PROP_POS_FRAMES)
        except cv2.error:
            return False
        return math.isfinite(landed) and round(landed) == frame_index

    def _grab(self, on_grab: Callable[[], None] | None = None) -> bool:
        try:
            grabbed = bool(self._capture.opencv.grab())
        except cv2.error as error:
            raise unreadable(self.path, f"decoding failed: {error}") from error
        if on_grab is not None:
            on_grab()
        return grabbed

    def _retrieve(self, into: np.ndarray | None = None) -> np.ndarray | None:
        try:
            ok, image = self._capture.opencv.retrieve(into)
        except cv2.error as error:
            raise unreadable(self.path, f"decoding failed: {error}") from error
        if not (ok and image is not None and image.size):
            return None
        if self._mirror_flip is not None:
            cv2.flip(image, self._mirror_flip, dst=image)
        return image

    def _presentation_time(self, frame_index: int, previous_seconds: float | None) -> float:
        """When the frame just grabbed is presented, in seconds from the start of the video.

        The decoder's timestamp (the video track's start time taken off), which is right for
        a variable frame rate too. A raw stream's frames are at i / fps: raw H.264 and HEVC
        have no times, and FFmpeg times raw MPEG-1/2 video one frame late. A frame without
        one (an MPEG-PS stream's last frame may lack it) comes one frame period after the
        previous frame at the declared rate, or at i / fps when it is the first.
        """
        if self._timed_by_rate and self.info.fps > 0:
            return frame_index / self.info.fps
        if (seconds := self._timestamp(frame_index, previous_seconds)) is not None:
            return seconds
        fps = self.info.fps
        if fps > 0:
            return frame_index / fps if previous_seconds is None else previous_seconds + 1.0 / fps
        return previous_seconds or 0.0


    def _timestamp(self, frame_index: int, previous_seconds: float | None) -> float | None:
        """The decoder's time for the frame just grabbed; None when it has none (OpenCV reports
        one no later than the previous frame's, or 0 for any but the first)."""
        seconds = self._capture.opencv.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        has_timestamp = math.isfinite(seconds) and seconds >= 0 and (
            seconds > previous_seconds if previous_seconds is not None else frame_index == 0 or seconds > 0
        )
        return seconds if has_timestamp else None


@contextmanager
def open_video(source: str | os.PathLike[str]) -> Iterator[OpenedVideo]:
    """Open and probe a video; raises VideoUnreadable when OpenCV cannot use it.

    A `GrowingUpload` is read as its bytes arrive (`growing_upload`); any other path-like is a file.
    """
    video = OpenedVideo(source)
    try:
        yield video
    finally:
        video.close()


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's facts without decoding a frame; raises VideoUnreadable."""
    with open_video(path) as video:
        return video.info


def _lost_in_window(numbering: FrameNumbering, window: FrameWindow, next_index: int, found_index: int) -> int:
    """How many of the frames from `next_index` to before `found_index`, lost to damage, the
    window holds: the run counts what it could not read of what it was asked for."""
    first = max(next_index, numbering.first_at_or_after(window.start_seconds))
    end = found_index if window.end_seconds is None else min(found_index,
                                                             numbering.first_at_or_after(window.end_seconds))
    return max(0, end - first)
