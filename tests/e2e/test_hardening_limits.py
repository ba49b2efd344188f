"""Every limit refuses with a typed status and a clear message, before the work it guards."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import grpc
import pytest
from hardening_support import assert_still_serving, chunks, config, raw_call, rss_bytes, wait_until
from harness import ServerFactory, ServerHarness

import videodag_service.private_folders as private_folders
import videodag_service.video.orphan_sweeper as orphan_sweeper
import videodag_service.video.upload as upload_module
from fakes.hostile_media import claim_avi_frame_count, claim_avi_frame_size
from fakes.logs import why_it_ended
from fakes.media import ffmpeg_executable
from videodag_client import (
    FrameResult,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    RunOptions,
    Unavailable,
    UploadReceived,
    VideodagError,
    VideoOpened,
)
from videodag_service.server import main as server_main
from videodag_service.stop_signals import StopSignals
from videodag_service.video.upload import ORPHAN_MIN_AGE_SECONDS

MIB = 1024 * 1024


def events_until_refused(
    server: ServerHarness, video: Path, error_type: type[VideodagError]
) -> tuple[list[object], VideodagError]:
    events: list[object] = []
    with pytest.raises(error_type) as caught:
        for event in server.client.upload_and_run(video, "frame_stats_v1", timeout=30):
            events.append(event)
    return events, caught.value


@pytest.mark.parametrize(
    ("limits", "limit_name", "message", "values"),
    [
        ({"max_frame_width": 640, "max_frame_height": 640}, "width",
         "frame width 768 px is over the limit of 640 px (the limit is 640x640 px, either way round)", ("640", "768")),
        ({"max_frame_height": 480}, "height",
         "frame height 576 px is over the limit of 480 px (the limit is 7680x480 px, either way round)",
         ("480", "576")),
        ({"max_video_seconds": 5.0}, "duration", "the video declares 12.000 s, over the limit of 5 s", ("5", "12")),
        ({"max_video_frames": 100}, "frame_count", "the video declares 120 frames, over the limit of 100",
         ("100", "120")),
    ],
)
def test_a_video_over_a_limit_is_refused_before_any_frame(
    make_server: ServerFactory, sample_clip: Path, limits: dict[str, float], limit_name: str, message: str,
    values: tuple[str, str],
) -> None:
    server = make_server(**limits)
    events, error = events_until_refused(server, sample_clip, ResourceExhausted)
    assert [type(e) for e in events] == [UploadReceived]  # no VideoOpened, no frame
    assert error.reason == "VIDEO_TOO_LARGE"
    assert error.metadata == {"limit": limit_name, "maximum": values[0], "found": values[1]}
    assert message in error.message
    assert server.leftover_uploads() == []


def test_a_portrait_video_within_the_frame_limit_turned_is_accepted(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path,
) -> None:
    """A phone stores its portrait video as landscape frames and a rotation: delivered upright,
    768x576 becomes 576x768, and a limit set to the landscape clip's size still takes it."""
    portrait = tmp_path / "portrait.mp4"
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(sample_clip), "-c", "copy", str(portrait)], check=True, capture_output=True, timeout=60)
    server = make_server(max_frame_width=768, max_frame_height=576)
    events = list(server.client.upload_and_run(portrait, "frame_stats_v1", RunOptions(max_frames=3), timeout=60))
    opened = [event for event in events if isinstance(event, VideoOpened)]
    assert [(event.width, event.height) for event in opened] == [(576, 768)]
    assert [event.result["stats"]["width"] for event in events if isinstance(event, FrameResult)] == [576] * 3
    assert server.leftover_uploads() == []


def test_a_matroska_video_whose_sound_outlasts_it_is_held_to_the_duration_of_its_frames(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path,
) -> None:
    """FFmpeg estimates a Matroska file's frame count from its longest stream, and the duration
    from that: the 12 s clip with 30 s of sound "declares" 30 s, and a 20 s limit refused it
    before a frame was decoded. Its frames' own times decide, as they do for any video."""
    long_sound = tmp_path / "long_sound.mkv"
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(sample_clip),
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=30", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", "libvorbis", str(long_sound)], check=True, capture_output=True, timeout=120)
    server = make_server(max_video_seconds=20.0)
    events = list(server.client.upload_and_run(long_sound, "frame_stats_v1", RunOptions(frame_stride=10),
                                               timeout=60))
    [opened] = [event for event in events if isinstance(event, VideoOpened)]
    assert opened.duration_seconds > 20
    assert len([event for event in events if isinstance(event, FrameResult)]) == 12
    shorter = make_server(max_video_seconds=6.0)
    events, error = events_until_refused(shorter, long_sound, ResourceExhausted)
    assert error.metadata["limit"] == "duration" and "the video lasts more than 6 s" in error.message
    assert 0 < len([event for event in events if isinstance(event, FrameResult)]) <= 60  # 10 frames a second
    assert server.leftover_uploads() == shorter.leftover_uploads() == []


def test_a_header_claiming_huge_frames_is_refused_before_decoding(
    make_server: ServerFactory, make_video, tmp_path: Path
) -> None:
    server = make_server()  # default limits: 7680 x 4320
    real = make_video(20).read_bytes()
    claims_9000 = tmp_path / "claims_9000.avi"
    claims_9000.write_bytes(claim_avi_frame_size(real, 9000, 9000))
    claims_60000 = tmp_path / "claims_60000.avi"
    claims_60000.write_bytes(claim_avi_frame_size(real, 60000, 60000))
    rss_before = rss_bytes()

    events, error = events_until_refused(server, claims_9000, ResourceExhausted)
    assert [type(e) for e in events] == [UploadReceived]
    assert error.reason == "VIDEO_TOO_LARGE"
    assert "frame width 9000 px is over the limit of 7680 px" in error.message
    # FFmpeg itself refuses 60000 x 60000 (over its own pixel limit), so the file has no usable stream.
    events, error = events_until_refused(server, claims_60000, InvalidArgument)
    assert [type(e) for e in events] == [UploadReceived]
    assert error.reason == "VIDEO_UNREADABLE"
    assert "video declares frames of 60000 x 60000 px, more than FFmpeg decodes" in error.message
    # One decoded 9000 x 9000 frame alone would be 243 MB of BGR.
    assert rss_bytes() - rss_before < 100 * MIB
    assert server.leftover_uploads() == []


def test_a_header_that_understates_the_frame_count_cannot_beat_the_limit(
    make_server: ServerFactory, make_video, tmp_path: Path
) -> None:
    server = make_server(max_video_frames=50)
    liar = tmp_path / "claims_10_holds_200.avi"
    liar.write_bytes(claim_avi_frame_count(make_video(200).read_bytes(), 10))
    events, error = events_until_refused(server, liar, ResourceExhausted)
    frames = [e.frame_index for e in events if isinstance(e, FrameResult)]
    assert events[1].frame_count == 10  # VideoOpened: the header's claim passed the check
    assert frames == list(range(50))
    assert error.reason == "VIDEO_TOO_LARGE"
    assert error.metadata["limit"] == "frame_count"
    assert "more than 50 frames" in error.message
    assert server.leftover_uploads() == []


def test_a_message_over_the_grpc_limit_is_refused_by_grpc_and_frees_the_run_slot(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    server = make_server(max_message_bytes=64 * 1024, max_concurrent_runs=1)
    data = sample_clip.read_bytes()
    with grpc.insecure_channel(server.target) as channel:
        outcome = raw_call(channel, [config(), *chunks(data[:32 * 1024]), *chunks(data[:100_000], 100_000)])
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in outcome.details
    assert wait_until(lambda: server.leftover_uploads() == [])
    # The one run slot is free again: the refused call released it.
    assert_still_serving(server, sample_clip)


def test_the_client_library_chunks_stay_under_the_server_message_limit(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    server = make_server(max_message_bytes=64 * 1024)
    with pytest.raises(ResourceExhausted, match="larger than max"):
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1", chunk_size=256 * 1024))
    events = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(max_frames=2),
                                               chunk_size=60 * 1024))
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 1]


class _CappedFile:
    """A file object that refuses to grow past `capacity` bytes, as a full disk does."""

    def __init__(self, file: BinaryIO, capacity: int) -> None:
        self._file = file
        self._capacity = capacity
        self._written = 0

    def write(self, data: bytes) -> int:
        size = memoryview(data).nbytes
        if self._written + size > self._capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._written += size
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class _SmallDiskOs:
    """Stands in for `os` in the upload module: the files it opens hold at most `capacity` bytes."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity

    def fdopen(self, descriptor: int, *args: Any, **kwargs: Any) -> _CappedFile:
        return _CappedFile(os.fdopen(descriptor, *args, **kwargs), self._capacity)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str, stand_in: Callable[[], None]) -> Iterator[Path]:
    """A tmpfs mounted at `folder` with `options` where mounting is allowed (root, as on the test
    machines), otherwise `stand_in()` to fake what it would do. An existing folder is mounted over."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False, capture_output=True,
    ).returncode == 0
    if not mounted:
        stand_in()
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(folder)], check=False, capture_output=True)


def small_disk(
    folder: Path, capacity_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> contextlib.AbstractContextManager[Path]:
    """A filesystem of `capacity_bytes` at `folder`, or uploads whose files fail with ENOSPC past that size."""
    return _tmpfs(folder, f"size={capacity_bytes},mode=0700",
                  lambda: monkeypatch.setattr(upload_module, "os", _SmallDiskOs(capacity_bytes)))


def test_a_full_disk_is_resource_exhausted_and_leaves_no_partial_file(
    make_server: ServerFactory, sample_clip: Path, make_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with small_disk(tmp_path / "small", 512 * 1024, monkeypatch) as upload_dir:
        server = make_server(temp_dir=upload_dir)
        big = tmp_path / "big.avi"
        big.write_bytes(sample_clip.read_bytes() * 2)  # 1.7 MB into 512 kB
        with pytest.raises(ResourceExhausted) as caught:
            list(server.client.upload_and_run(big, "frame_stats_v1", timeout=30))
        assert caught.value.reason == "DISK_FULL"
        assert "no space left" in caught.value.message
        # The operator's to act on: a warning naming the folder, not an INFO line like a client's mistake.
        [warning] = [record for record in caplog.records if record.name == upload_module.__name__]
        assert warning.levelname == "WARNING"
        assert warning.getMessage().startswith(f"no space left in {upload_dir} to store an upload (")
        assert os.listdir(upload_dir) == []
        # The space came back: a small video still runs on the same filesystem.
        assert_still_serving(server, make_video(5))
        assert os.listdir(upload_dir) == []
        server.stop()  # before the filesystem goes


class _ReadOnlyTempfile:
    """Stands in for `tempfile` in the upload module: creating a file fails as on a read-only file system."""

    def mkstemp(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))


def read_only_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> contextlib.AbstractContextManager[Path]:
    """A folder nobody can create files or folders in (file modes would not stop root), or a
    stand-in where creating them there fails with EROFS: the uploads' files, the start's check
    of the folder, the folders the start makes in it."""

    def stand_in() -> None:
        monkeypatch.setattr(upload_module, "tempfile", _ReadOnlyTempfile())
        monkeypatch.setattr(private_folders, "tempfile", _ReadOnlyFolderFiles(folder))
        make_folder = Path.mkdir

        def mkdir(path: Path, *args: Any, **kwargs: Any) -> None:
            if path.parent == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            make_folder(path, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)

    return _tmpfs(folder, "ro,size=1m,mode=0700", stand_in)


class _ReadOnlyFolderFiles:
    """Stands in for `tempfile` in `private_folders`: no file can be made in `folder`."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def TemporaryFile(self, *, dir: Path) -> Any:  # tempfile's own names
        if Path(dir) == self._folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return tempfile.TemporaryFile(dir=dir)


def test_an_upload_folder_that_turns_read_only_is_internal_storage_unwritable_naming_no_path(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mounted read-only while the server runs. It was INTERNAL "internal error: OSError: [Errno 30]
    Read-only file system: '<the upload's path>'", with no reason to branch on, and a traceback in
    the log for every call."""
    server = make_server(temp_dir=tmp_path / "uploads")
    with read_only_folder(tmp_path / "uploads", monkeypatch) as upload_dir:
        with pytest.raises(Internal) as caught:
            list(server.client.upload_and_run(sample_clip, "frame_stats_v1", timeout=30))
        assert caught.value.reason == "STORAGE_UNWRITABLE"
        assert "upload folder is not writable (Read-only file system)" in caught.value.message
        assert str(tmp_path) not in caught.value.message
        assert [record.getMessage() for record in caplog.records if record.name == upload_module.__name__] == [
            f"cannot store an upload in {upload_dir}: Read-only file system"
        ]
        assert not any(record.exc_info for record in caplog.records)
        assert os.listdir(upload_dir) == []
        server.stop()  # before the filesystem goes


@pytest.mark.parametrize("where", ["in", "below"])
def test_a_read_only_upload_folder_stops_the_start_naming_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """It said only "cannot start: [Errno 30] Read-only file system: '<a path>'" for a folder it
    had to make, and started on an existing one, to fail every upload."""

    def served(self: object) -> str:
        raise AssertionError("the server started on a read-only upload folder")

    monkeypatch.setattr(StopSignals, "wait_for_first", served)
    with read_only_folder(tmp_path / "read-only", monkeypatch) as read_only:
        upload_dir = read_only if where == "in" else read_only / "uploads"
        data_dir = tmp_path / "data"
        assert server_main(["--port", "0", "--temp-dir", str(upload_dir), "--data-dir", str(data_dir)]) == 1
        because = "it is on a read-only file system (mount a writable volume there, or choose another folder)"
        said = capsys.readouterr().err
        named = f"cannot start: upload folder (--temp-dir) {upload_dir}"
        assert len(said.splitlines()) == 1, said
        if where == "in":
            assert why_it_ended(said) == f"{named} cannot be written in: {because}"
        else:
            assert why_it_ended(said) == f"{named}: {upload_dir} cannot be made: {because}"
        assert not data_dir.exists()


@pytest.mark.parametrize("decode_during_upload", [False, True])
def test_an_upload_a_cleaner_removes_before_it_is_decoded_is_unavailable_video_file_missing(
    make_server: ServerFactory, sample_clip: Path, monkeypatch: pytest.MonkeyPatch, decode_during_upload: bool
) -> None:
    """A cleaner of temporary files removes each upload as soon as it is made (the server writes
    on into the removed file). It was INVALID_ARGUMENT VIDEO_UNREADABLE, blaming the video, and
    while decoding during the upload the message gave the upload's private path."""
    create = upload_module._create_private_file

    def created_then_removed(temp_dir: Path, suffix: str) -> tuple[Path, BinaryIO, int]:
        path, file, lock = create(temp_dir, suffix)
        path.unlink()
        return path, file, lock

    monkeypatch.setattr(upload_module, "_create_private_file", created_then_removed)
    server = make_server()
    with pytest.raises(Unavailable) as caught:
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1", decode_during_upload=decode_during_upload,
                                          timeout=30))
    assert caught.value.reason == "VIDEO_FILE_MISSING"
    assert caught.value.message == (
        "Unable to read video file 'pedestrians_120.mp4': the server's stored copy is gone, removed from its folder "
        "before it was decoded (a cleaner of temporary files, say); send it again"
    )
    monkeypatch.undo()
    assert_still_serving(server, sample_clip)


def test_uploads_a_killed_server_left_are_removed_at_the_start_and_while_running(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor restarts a killed server at once: the upload it was receiving is too young
    for the start's sweep (it might be another server's, an instant before its lock), and goes
    at a later sweep while the server runs, its other uploads untouched."""
    monkeypatch.setattr(orphan_sweeper, "SWEEP_INTERVAL_SECONDS", 0.2)
    folder = tmp_path / "uploads0"  # the first server's upload folder (conftest.make_server)
    folder.mkdir()
    long_dead, just_killed = folder / "videodag-upload-killed00.mp4", folder / "videodag-upload-killed01.mp4"
    for path, age in ((long_dead, 3600.0), (just_killed, 1.0)):
        path.write_bytes(b"\0" * 1000)
        os.utime(path, (time.time() - age, time.time() - age))

    server = make_server()

    assert not long_dead.exists() and just_killed.exists()
    aged = time.time() - ORPHAN_MIN_AGE_SECONDS - 1
    os.utime(just_killed, (aged, aged))  # as a minute later
    assert wait_until(lambda: not just_killed.exists(), timeout=10)
    events = list(server.client.upload_and_run(sample_clip, "frame_stats_v1"))
    assert sum(isinstance(event, FrameResult) for event in events) == 120
    assert server.leftover_uploads() == []
