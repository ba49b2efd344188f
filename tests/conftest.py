"""Shared fixtures: the committed sample clip and small generated videos.

`tests/` has no `__init__.py`; it is put on `sys.path` here so test modules can
`import fakes` (the shared test doubles) whatever pytest's import mode.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from fakes.media import write_indexed_video  # noqa: E402

REPO_ROOT = TESTS_DIR.parent
SAMPLE_CLIP_NAME = "pedestrians_120.mp4"
# The committed copy is preferred; the shared media folder beside the repo is the origin.
SAMPLE_CLIP_CANDIDATES = (
    REPO_ROOT / "samples" / SAMPLE_CLIP_NAME,
    REPO_ROOT.parent / "shared" / "media" / SAMPLE_CLIP_NAME,
)

VideoFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    """The real 120-frame H.264 clip (768x576, 10 fps) of pedestrians."""
    for candidate in SAMPLE_CLIP_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.fail(f"sample clip not found; looked in {[str(c) for c in SAMPLE_CLIP_CANDIDATES]}")


@pytest.fixture
def make_video(tmp_path: Path) -> VideoFactory:
    """Build an indexed video in tmp_path: `make_video(frame_count, fps=25.0, fourcc="MJPG")`."""

    def build(frame_count: int, *, fps: float = 25.0, fourcc: str = "MJPG") -> Path:
        # Written aside, then renamed over the name: a test asking twice for the same video
        # while a client still uploads the first would otherwise truncate the file under it
        # (an upload that read it empty failed EMPTY_UPLOAD, now and then, in CI).
        suffix = ".avi" if fourcc == "MJPG" else ".mp4"
        path = tmp_path / f"indexed_{frame_count}_{fourcc}_{fps:g}{suffix}"
        descriptor, partial = tempfile.mkstemp(dir=tmp_path, prefix=".writing_", suffix=suffix)
        os.close(descriptor)
        write_indexed_video(Path(partial), frame_count, fps=fps, fourcc=fourcc)
        os.replace(partial, path)
        return path

    return build


@pytest.fixture(scope="session")
def thousand_frame_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 indexed 64x48 MJPG frames at 25 fps (40 s), written once per session."""
    path = tmp_path_factory.mktemp("media") / "indexed_1000.avi"
    return write_indexed_video(path, 1000, fps=25.0, fourcc="MJPG")


@pytest.fixture(autouse=True)
def _server_logging_undone() -> Iterator[None]:
    """A test that runs the server's `main` leaves its log handler on the root logger, writing to
    that test's captured stderr: once pytest closed it, every later log line printed a "Logging
    error" traceback into whatever the next tests read from stderr (a CLI's output)."""
    from videodag_service.observability.log_stream import UnblockingStreamHandler

    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler, UnblockingStreamHandler) and handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
