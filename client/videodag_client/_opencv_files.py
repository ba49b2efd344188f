"""Writing files through OpenCV: names it can take, and outputs never left half-written.

OpenCV crashes on a name that is not UTF-8, picks the format by a name's suffix, and reports
no failed write of a video. `OpenCvNames` and `partial_name` give it names it takes, with the
suffix kept; `write_image` and `written_video_problem` make sure a failed write leaves the
earlier file in place. Apart from the renderer, which only asks for names and writes frames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from videodag_client._file_names import beside, hash_mark
from videodag_client._render_error import RenderError


class OpenCvNames:
    """File names OpenCV can take, for any file.

    OpenCV's Python binding converts a name to UTF-8, and crashes the process (SIGSEGV) on the
    lone surrogates that stand for bytes that are not UTF-8 in a name given on the command line.
    Such a file, or the folder of one to create, is reached through a symbolic link with a plain
    name in a private temporary folder, removed at the end.
    """

    def __init__(self) -> None:
        self._folder: str | None = None
        self._links = 0

    def __enter__(self) -> OpenCvNames:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def of(self, path: Path) -> str:
        """The name of an existing file (or folder): its own, or a link's."""
        if opencv_takes(str(path)):
            return str(path)
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="videodag-render-")
        self._links += 1
        link = os.path.join(self._folder, f"{self._links}{plain_name(path.suffix)}")
        if not opencv_takes(link):
            raise RenderError(f"{str(path)!r}: OpenCV takes only UTF-8 names, and the temporary folder "
                              f"{self._folder!r} it could be linked from has none either; set TMPDIR")
        os.symlink(os.path.abspath(path), link)
        return link

    def of_new(self, path: Path) -> str:
        """The name of a file to create, whose own name is plain (see `partial_name`): in its folder, through a link
        to the folder if need be."""
        return os.path.join(self.of(path.parent), path.name)


def opencv_takes(name: str) -> bool:
    """Whether OpenCV, which takes a name as UTF-8 text, reaches the file by it: whether the name's
    bytes on disk are its UTF-8. Not so for a byte that is not UTF-8 (kept by Python as a lone
    surrogate), nor, under a Latin-1 locale, for any name that is not ASCII."""
    try:
        return name.encode("utf-8") == os.fsencode(name)
    except UnicodeEncodeError:
        return False


def plain_name(name: str) -> str:
    """`name` with each character OpenCV would not reach the file by as "?"."""
    return "".join(character if opencv_takes(character) else "?" for character in name)


def partial_name(path: Path) -> Path:
    """Where `path` is written first, to be renamed over it at the end: hidden, beside it, with its
    suffix (which OpenCV picks the format by), and a name OpenCV can take whatever `path`'s. A
    name that is not UTF-8 gets a hash of its bytes too: `r\\xe9.mp4` and `r\\xe8.mp4`, both
    `r?.mp4` to OpenCV, would otherwise share one partial file when rendered at once."""
    stem = plain_name(path.stem)
    if not opencv_takes(path.name):
        stem += hash_mark(path.name)
    return Path(beside(str(path.with_name(stem)), ".", f".partial{plain_name(path.suffix)}"))


def write_image(path: Path, image: np.ndarray, names: OpenCvNames) -> bool:
    """Writes `path` under its partial name and renames it, so that it is never half-written;
    through a symbolic link, whose target is replaced."""
    written = Path(os.path.realpath(path))
    partial = partial_name(written)
    if not cv2.imwrite(names.of_new(partial), image):
        partial.unlink(missing_ok=True)
        return False
    partial.replace(written)
    return True


def written_video_problem(path: str, frames_written: int) -> str | None:
    """What is wrong with the video just written, read back: OpenCV's writer reports no failed
    write (a full disk leaves an MP4 without its index, an AVI without its count), only
    warnings on stderr."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened() or not capture.read()[0]:
            return "it cannot be read back"
        held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if held <= 0:  # no count declared, as a cut AVI: count the frames (grabbed, not converted)
            held = 1 + sum(1 for _ in iter(capture.grab, False))
        if held < frames_written - 1:  # Matroska's count is estimated from its duration
            return f"it holds {held} of the {frames_written} frames"
        return None
    finally:
        capture.release()
