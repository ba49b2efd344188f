"""The upload folder swept at the start and again while the server runs."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from fakes.waiting import wait_until
from videodag_service.video.orphan_sweeper import OrphanSweeper
from videodag_service.video.upload import ORPHAN_MIN_AGE_SECONDS, receive_upload


def _orphan(folder: Path, name: str, age_seconds: float) -> Path:
    path = folder / name
    path.write_bytes(b"x")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_an_orphan_too_young_at_the_start_is_removed_by_a_later_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A supervisor restarts a killed server within seconds: its predecessor's upload is still
    too young for the start's sweep, and goes once it has aged, while the server runs."""
    old = _orphan(tmp_path, "videodag-upload-killed00.mp4", 3600)
    recent = _orphan(tmp_path, "videodag-upload-killed01.mp4", 1)
    sweeper = OrphanSweeper(tmp_path, interval_seconds=0.05)
    with receive_upload(tmp_path, max_upload_bytes=1 << 20) as live, caplog.at_level(logging.INFO):
        live.write(b"video")
        sweeper.start()
        try:
            assert not old.exists() and recent.exists()  # the start's sweep, at once
            then = time.time() - ORPHAN_MIN_AGE_SECONDS - 1
            os.utime(recent, (then, then))  # as a minute later
            os.utime(live.path, (then, then))
            assert wait_until(lambda: not recent.exists(), timeout=10)
            assert live.path.exists()  # a live upload is locked: never an orphan, however old
        finally:
            sweeper.stop()
    assert sum("removed 1 upload(s) left in" in record.getMessage() for record in caplog.records) == 2


def test_stop_ends_the_sweeper_thread(tmp_path: Path) -> None:
    sweeper = OrphanSweeper(tmp_path / "not-made-yet", interval_seconds=60)
    sweeper.start()
    started = time.monotonic()
    sweeper.stop()
    assert time.monotonic() - started < 5
    assert not any(thread.name == "videodag-orphan-sweeper" for thread in threading.enumerate())
