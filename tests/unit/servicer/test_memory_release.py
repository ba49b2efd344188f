"""Freed memory goes back to the system once the last run or job ends (glibc's allocator)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from videodag_service import memory_release

# Frame-sized blocks freed while one allocated after them pins the heap's top: glibc keeps
# them (its own trimming only cuts the top), as it kept a server's frames after a load.
_KEPT_AFTER_FREE = textwrap.dedent(
    """
    import ctypes

    from videodag_service.memory_release import release_freed_memory

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

    big = bytearray(8 << 20)  # freed, it raises glibc's threshold for mmap'ing, as frames do
    del big
    blocks = [bytearray(1 << 20) for _ in range(200)]
    pin = bytearray(1 << 20)
    del blocks
    before = rss_mb()
    release_freed_memory()
    print(before, rss_mb())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, on Linux")
def test_free_memory_the_allocator_kept_goes_back_to_the_system() -> None:
    finished = subprocess.run([sys.executable, "-c", _KEPT_AFTER_FREE], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    before, after = map(int, finished.stdout.split())
    assert before - after > 150, (before, after)


def test_memory_is_released_when_the_last_run_or_job_ends_only(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory_release, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    outer_started, inner_ended = threading.Event(), threading.Event()

    def other_run() -> None:
        with memory_release.video_work():
            outer_started.set()
            inner_ended.wait(10)

    runner = threading.Thread(target=other_run)
    runner.start()
    assert outer_started.wait(10)
    with memory_release.video_work():
        pass
    assert trims == []  # another run still works: its buffers are about to be reused
    inner_ended.set()
    runner.join(10)
    assert trims == [0]


def test_a_failing_run_releases_too(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory_release, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    with pytest.raises(RuntimeError), memory_release.video_work():
        raise RuntimeError("the run failed")
    assert trims == [0]
