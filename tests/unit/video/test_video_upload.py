"""Receiving uploads: limits enforced as bytes arrive, checks at the end, a private file that
never outlives its block."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
import tracemalloc
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

import pytest

from videodag_service.errors import (
    DiskFull,
    EmptyUpload,
    InvalidOptions,
    UploadCorrupted,
    UploadTooLarge,
)
from videodag_service.video import StoredUpload, receive_upload, suffix_for_file_name
from videodag_service.video import upload as upload_module
from videodag_service.video.upload import remove_orphaned_uploads

CHUNK = bytes(range(256)) * 64  # 16 KiB


def _files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


def test_chunks_are_stored_with_their_size_and_checksum(tmp_path: Path) -> None:
    payload = CHUNK * 5 + b"tail"
    with receive_upload(
        tmp_path, max_upload_bytes=len(payload), declared_size=len(payload),
        declared_sha256=hashlib.sha256(payload).hexdigest().upper(), suffix=".mov",
    ) as upload:
        for start in range(0, len(payload), 7000):
            upload.write(memoryview(payload)[start:start + 7000])
        assert upload.received_bytes == len(payload)
        stored = upload.finish()
        assert stored == StoredUpload(stored.path, len(payload), hashlib.sha256(payload).hexdigest())
        assert stored.path.parent == tmp_path and stored.path.suffix == ".mov"
        assert stored.path.read_bytes() == payload
    assert not stored.path.exists()
    assert _files_in(tmp_path) == []


def test_the_file_is_private_and_a_new_directory_is_too(tmp_path: Path) -> None:
    directory = tmp_path / "uploads" / "nested"
    old_umask = os.umask(0o022)
    try:
        with receive_upload(directory, max_upload_bytes=100) as upload:
            assert stat.S_IMODE(upload.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


def test_an_existing_folder_open_to_others_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    warning = upload_module.temp_dir_open_to_others(shared)
    assert warning is not None and str(shared) in warning and "mode 0755" in warning
    with receive_upload(shared, max_upload_bytes=100) as upload:
        assert stat.S_IMODE(upload.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # a shared folder such as /tmp is not tightened


@pytest.mark.parametrize("mode", [0o700, 0o500])
def test_a_private_or_missing_folder_needs_no_warning(tmp_path: Path, mode: int) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(mode)
    try:
        assert upload_module.temp_dir_open_to_others(private) is None
        assert upload_module.temp_dir_open_to_others(tmp_path / "not yet created") is None
    finally:
        private.chmod(0o700)


def test_crossing_the_limit_mid_stream_raises_at_once_without_writing(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=40_000) as upload:
        upload.write(CHUNK)
        upload.write(CHUNK)
        with pytest.raises(UploadTooLarge, match="over the limit of 40000 bytes") as raised:
            upload.write(CHUNK)
        # What is stored is exactly what came before the refused chunk.
        stored = upload.finish()
        assert stored.size_bytes == stored.path.stat().st_size == 2 * len(CHUNK)
        assert stored.sha256 == hashlib.sha256(CHUNK * 2).hexdigest()
    assert raised.value.status_code == "RESOURCE_EXHAUSTED"
    assert _files_in(tmp_path) == []


def test_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=len(CHUNK)) as upload:
        upload.write(CHUNK)
        assert upload.finish().size_bytes == len(CHUNK)


def test_a_declared_size_over_the_limit_is_refused_before_a_file_exists(tmp_path: Path) -> None:
    directory = tmp_path / "uploads"
    with (
        pytest.raises(UploadTooLarge, match="declared upload size 1001"),
        receive_upload(directory, max_upload_bytes=1000, declared_size=1001),
    ):
        pytest.fail("the block must not run")
    assert not directory.exists()


@pytest.mark.parametrize("received", [b"x" * 99, b"x" * 101])
def test_a_size_mismatch_is_corruption(tmp_path: Path, received: bytes) -> None:
    with (
        pytest.raises(UploadCorrupted, match="size mismatch: 100 bytes declared") as raised,
        receive_upload(tmp_path, max_upload_bytes=1000, declared_size=100) as upload,
    ):
        upload.write(received)
        upload.finish()
    assert raised.value.status_code == "DATA_LOSS"
    assert _files_in(tmp_path) == []


def test_bytes_beyond_the_declared_size_are_refused_as_they_arrive(tmp_path: Path) -> None:
    """A reader of the growing file trusts the declared end: it must never see more."""
    with receive_upload(tmp_path, max_upload_bytes=1000, declared_size=100) as upload:
        upload.write(b"x" * 60)
        with pytest.raises(UploadCorrupted, match="100 bytes declared, 101 \\(at least\\) received"):
            upload.write(b"x" * 41)
        assert upload.received_bytes == 60
        assert upload.path.stat().st_size <= 60
    assert _files_in(tmp_path) == []


def test_a_checksum_mismatch_is_corruption(tmp_path: Path) -> None:
    declared = hashlib.sha256(b"what the client meant").hexdigest()
    with (
        pytest.raises(UploadCorrupted, match="checksum mismatch"),
        receive_upload(tmp_path, max_upload_bytes=1000, declared_sha256=declared) as upload,
    ):
        upload.write(b"what arrived")
        upload.finish()
    assert _files_in(tmp_path) == []


def test_zero_bytes_is_an_empty_upload(tmp_path: Path) -> None:
    with pytest.raises(EmptyUpload), receive_upload(tmp_path, max_upload_bytes=1000) as upload:
        upload.write(b"")
        upload.finish()
    assert _files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"declared_size": -1}, "declared_size_bytes"), ({"declared_sha256": "abc"}, "sha256")],
)
def test_bad_declarations_are_invalid_options(tmp_path: Path, arguments: dict, field: str) -> None:
    with pytest.raises(InvalidOptions) as raised:
        receive_upload(tmp_path, max_upload_bytes=1000, **arguments).__enter__()
    assert [violation.field for violation in raised.value.details.field_violations] == [field]


@pytest.mark.parametrize(("declared", "fault"), [
    ("abc", "got 3 characters"), (" " * 3, "got only whitespace"), ("f" * 65, "got 65 characters"),
    ("F" * 63 + "g", "got 'g' as character 64"), ("\t" + "0" * 31 + "-" + "0" * 32, "got '-' as character 32"),
])
def test_a_bad_declared_checksum_is_refused_saying_what_is_wrong_with_it(
    tmp_path: Path, declared: str, fault: str
) -> None:
    with pytest.raises(InvalidOptions) as raised:
        receive_upload(tmp_path, max_upload_bytes=1000, declared_sha256=declared).__enter__()
    [violation] = raised.value.details.field_violations
    assert violation.description == f"must be 64 hexadecimal characters, {fault}"
    assert _files_in(tmp_path) == []


def test_a_declared_checksum_in_capitals_and_with_spaces_around_it_is_taken(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=1000, declared_sha256=f" {'AB' * 32}\n") as upload:
        assert upload is not None


def test_a_declared_size_of_zero_means_unknown(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=1000, declared_size=0) as upload:
        upload.write(b"abc")
        assert upload.finish().size_bytes == 3


@pytest.mark.parametrize("suffix", ["../escape", ".mp4/x", "mp4", ".toolongsuffix"])
def test_a_suffix_can_never_name_another_directory(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        receive_upload(tmp_path, max_upload_bytes=10, suffix=suffix).__enter__()
    assert _files_in(tmp_path) == []


def test_suffix_for_file_name() -> None:
    assert suffix_for_file_name("Match Day.MOV") == ".mov"
    assert suffix_for_file_name("../../etc/passwd") == ".mp4"
    assert suffix_for_file_name("clip.tar/../x") == ".mp4"
    assert suffix_for_file_name("") == ".mp4"
    assert suffix_for_file_name("stream.M2TS") == ".m2ts"
    # Extensions FFmpeg would trust over the content (text as "ANSI art", a still image) are dropped.
    for name in ("notes.txt", "photo.jpg", "song.mp3", "readme.nfo"):
        assert suffix_for_file_name(name) == ".mp4", name


def test_the_file_is_removed_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), receive_upload(tmp_path, max_upload_bytes=1000) as upload:
        upload.write(b"partial")
        raise RuntimeError("client went away")
    assert _files_in(tmp_path) == []


def test_the_file_is_removed_when_a_generator_holding_it_is_closed(tmp_path: Path) -> None:
    def receive(chunks: list[bytes]) -> Generator[Path, None, None]:
        with receive_upload(tmp_path, max_upload_bytes=1000) as upload:
            for chunk in chunks:
                upload.write(chunk)
                yield upload.path

    stream = receive([b"a", b"b", b"c"])
    path = next(stream)
    assert path.exists()
    stream.close()
    assert not path.exists()
    assert _files_in(tmp_path) == []


def test_the_file_is_removed_even_if_the_caller_deleted_it(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=1000) as upload:
        upload.write(b"x")
        upload.finish().path.unlink()
    assert _files_in(tmp_path) == []


def test_writing_after_finish_is_a_programming_error(tmp_path: Path) -> None:
    with receive_upload(tmp_path, max_upload_bytes=1000) as upload:
        upload.write(b"x")
        upload.finish()
        with pytest.raises(ValueError, match="already finished"):
            upload.write(b"y")


@pytest.mark.parametrize("chunk_size", [1 << 20, 10])
def test_a_full_disk_raises_disk_full_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    # /dev/full fails every write with ENOSPC. Chunks are written in a thread and small ones
    # buffered, so the error comes with a later write or, at the latest, with finish().
    real_create = upload_module._create_private_file

    def create_on_full_device(temp_dir: Path, suffix: str) -> tuple[Path, BinaryIO, int]:
        path, file, lock = real_create(temp_dir, suffix)
        file.close()
        return path, open("/dev/full", "wb"), lock

    monkeypatch.setattr(upload_module, "_create_private_file", create_on_full_device)
    finished = False
    with (
        pytest.raises(DiskFull, match="no space left") as raised,
        receive_upload(tmp_path, max_upload_bytes=10 << 20) as upload,
    ):
        for _ in range(3):
            upload.write(b"v" * chunk_size)
        upload.finish()
        finished = True
    assert not finished
    assert raised.value.status_code == "RESOURCE_EXHAUSTED"
    assert _files_in(tmp_path) == []
    assert "videodag-upload-writer" not in {thread.name for thread in threading.enumerate()}


def test_the_video_is_never_held_in_memory(tmp_path: Path) -> None:
    chunk = b"v" * (1 << 20)
    tracemalloc.start()
    try:
        with receive_upload(tmp_path, max_upload_bytes=64 << 20) as upload:
            tracemalloc.reset_peak()
            for _ in range(32):
                upload.write(chunk)
            assert upload.finish().size_bytes == 32 << 20
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated while receiving 32 MiB"


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_only_uploads_no_process_holds_are_removed_as_orphans(tmp_path: Path) -> None:
    """A killed server's uploads go at the next start; another server's live ones stay, however old."""
    orphan = tmp_path / "videodag-upload-killed00.mp4"
    orphan.write_bytes(b"x")
    _age(orphan, 3600)
    young = tmp_path / "videodag-upload-justmade.mp4"  # between its creation and its lock
    young.write_bytes(b"x")
    unrelated = [tmp_path / name for name in ("notes.txt", "upload-report.csv", "videodag-upload-notes000.txt",
                                              "videodag-upload-longer-than-mkstemp.mp4")]
    for path in unrelated:  # someone else's, in a folder such as /tmp the server may share
        path.write_bytes(b"x")
        _age(path, 3600)
    with receive_upload(tmp_path, max_upload_bytes=1 << 20) as live:
        live.write(b"video")
        live.flush()
        _age(live.path, 3600)

        assert remove_orphaned_uploads(tmp_path) == [orphan]

        assert live.path.exists() and young.exists() and all(path.exists() for path in unrelated)
        assert not orphan.exists()
        live.finish()
        assert remove_orphaned_uploads(tmp_path) == [], "still held until its block ends, though finished"
    assert _files_in(tmp_path) == sorted([young, *unrelated])


def test_a_symlink_named_like_an_upload_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    precious = target / "precious"
    precious.write_bytes(b"keep")
    _age(precious, 3600)
    (tmp_path / "videodag-upload-linkname.mp4").symlink_to(precious)
    assert remove_orphaned_uploads(tmp_path) == []
    assert precious.read_bytes() == b"keep"
