"""The spare decoder process: handed out once ready and replaced, never handed out dead, and
ended by close() or at the program's exit."""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fakes.thread_limits import no_new_threads
from fakes.waiting import wait_until
from videodag_service.errors import VideoUnreadable
from videodag_service.video import isolation as isolation_module
from videodag_service.video import spare_decoder as spare_module
from videodag_service.video.decoder_lifecycle import DECODER_PROCESS_NAME, DecoderTimeouts, StartedProcess, end_decoder
from videodag_service.video.isolation import StartedDecoder, open_isolated_video
from videodag_service.video.limits import VideoLimits
from videodag_service.video.reader import OpenedVideo, open_video
from videodag_service.video.sampling import FrameWindow
from videodag_service.video.spare_decoder import SPARE_PROCESS_NAME, SPARE_STARTER_THREAD_NAME, SpareDecoder

SERVICE_ROOT = Path(__file__).resolve().parents[3] / "service"


def _spare_pids() -> set[int]:
    """This process's spare decoders; tests compare with those there before them (another
    test's server may still be stopping)."""
    return {process.pid for process in multiprocessing.active_children()
            if process.name == SPARE_PROCESS_NAME and process.pid is not None}


def _take_once_ready(spare: SpareDecoder, timeout: float = 60.0) -> StartedProcess:
    deadline = time.monotonic() + timeout
    while (taken := spare.take()) is None:
        assert time.monotonic() < deadline, "no spare was ready"
        time.sleep(0.01)
    return taken


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while its stat was read
        return False
    return state != "Z"


def test_a_taken_spare_decodes_a_file_and_a_new_spare_takes_its_place(sample_clip: Path) -> None:
    others = _spare_pids()
    spare = SpareDecoder(open_video, DecoderTimeouts())
    try:
        taken = _take_once_ready(spare)
        process = taken[0]
        assert process.is_alive()
        assert process.name == DECODER_PROCESS_NAME  # counted as a decoder from now on
        assert wait_until(lambda: len(_spare_pids() - others) == 1), _spare_pids()
        assert process.pid not in _spare_pids()
        decoder = StartedDecoder(open_video, DecoderTimeouts(), taken)
        pid = process.pid
        with open_isolated_video(sample_clip, started=decoder) as video:
            frames = [frame.frame_index for frame in video.frames(FrameWindow(max_frames=5), VideoLimits())]
        assert frames == [0, 1, 2, 3, 4]
        assert pid not in [child.pid for child in multiprocessing.active_children()]  # reaped by its run
    finally:
        spare.close()
    assert _spare_pids() - others == set()
    assert spare.take() is None  # closed: runs start their own


def test_a_spare_that_died_while_it_waited_is_not_handed_out() -> None:
    others = _spare_pids()
    spare = SpareDecoder(open_video, DecoderTimeouts())
    try:
        end_decoder(_take_once_ready(spare))  # the first one, only to know that the next is being started
        # The keeper's own spare, once it has said it is ready (a spare of another test's server may
        # be starting too, and a loaded machine may take more than a moment to start one).
        assert wait_until(lambda: (kept := spare._keeper._spare) is not None and kept[1].poll(0), timeout=60)
        kept = spare._keeper._spare
        assert kept is not None
        waiting = kept[0].pid
        assert waiting is not None and waiting in _spare_pids() - others
        os.kill(waiting, signal.SIGKILL)  # as the OOM killer would
        assert wait_until(lambda: not _is_running(waiting))
        assert spare.take() is None
        assert waiting not in [child.pid for child in multiprocessing.active_children()]  # reaped
        replacement = _take_once_ready(spare)
        assert replacement[0].pid != waiting
        assert replacement[0].is_alive()
        end_decoder(replacement)
    finally:
        spare.close()


def test_a_spare_killed_once_it_was_taken_is_replaced_by_a_process_of_the_runs_own(
    sample_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed a moment before it is taken still looks alive until its exit has closed
    its pipe (the OOM killer on a busy machine): the run must not report the file as unreadable."""
    spare = SpareDecoder(open_video, DecoderTimeouts())
    try:
        taken = _take_once_ready(spare)
        taken[0].kill()
        decoder = StartedDecoder(open_video, DecoderTimeouts(), taken)
        with (caplog.at_level(logging.WARNING, logger=isolation_module.__name__),
              open_isolated_video(sample_clip, started=decoder) as video):
            frames = [frame.frame_index for frame in video.frames(FrameWindow(max_frames=3), VideoLimits())]
        assert frames == [0, 1, 2]
        assert "a spare decoder process ended before it opened 'pedestrians_120.mp4'" in caplog.text
        assert "SIGKILL" in caplog.text
    finally:
        spare.close()


@contextmanager
def open_exiting_while_probing(path: Path) -> Iterator[OpenedVideo]:
    """Module level: a decoder process imports it by name."""
    os._exit(3)
    yield OpenedVideo(Path(path))  # never reached


def test_a_file_that_ends_its_decoder_while_probing_is_unreadable_though_the_spare_was_replaced(
    sample_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spare = SpareDecoder(open_exiting_while_probing, DecoderTimeouts())
    try:
        decoder = StartedDecoder(open_exiting_while_probing, DecoderTimeouts(), _take_once_ready(spare))
        with (caplog.at_level(logging.WARNING, logger=isolation_module.__name__),
              pytest.raises(VideoUnreadable, match="the decoder exited with status 3"),
              open_isolated_video(sample_clip, started=decoder)):
            pass
        assert caplog.text.count("a spare decoder process ended before it opened") == 1  # replaced once, no more
    finally:
        spare.close()


def test_a_spare_decoder_dropped_without_close_ends_its_spare_when_collected() -> None:
    others = _spare_pids()
    spare = SpareDecoder(open_video, DecoderTimeouts())
    assert wait_until(lambda: len(_spare_pids() - others) == 1)
    [pid] = _spare_pids() - others
    del spare
    gc.collect()
    assert wait_until(lambda: not _is_running(pid))
    assert _spare_pids() - others == set()


def test_a_spare_decoder_collected_in_the_middle_of_a_poll_of_its_process_kills_it_without_waiting() -> None:
    """The garbage collector may run inside multiprocessing's poll of the spare (in another
    start, in `active_children()`), which holds the process's status lock: the finalizer
    must not poll or reap it there, or that thread waits on itself for good."""
    others = _spare_pids()
    spare = SpareDecoder(open_video, DecoderTimeouts())
    assert wait_until(lambda: len(_spare_pids() - others) == 1)
    [process] = [p for p in multiprocessing.active_children() if p.pid in _spare_pids() - others]
    spare.cycle = spare  # type: ignore[attr-defined]  # only the garbage collector can free it
    del spare

    def collect_while_polling() -> None:
        with process._popen._status_lock:  # type: ignore[attr-defined]  # as a poll holds it
            gc.collect()

    collecting = threading.Thread(target=collect_while_polling, daemon=True)
    collecting.start()
    collecting.join(10)
    assert not collecting.is_alive(), "the finalizer waited for the poll it ran in"
    assert wait_until(lambda: not _is_running(process.pid or 0))
    assert wait_until(lambda: _spare_pids() - others == set())  # reaped by multiprocessing's next poll


def test_a_spare_that_cannot_start_is_logged_and_tried_again_at_the_next_take(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def out_of_descriptors(*args: object, **kwargs: object) -> StartedProcess:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(spare_module, "start_decoder_process", out_of_descriptors)
    with caplog.at_level(logging.WARNING, logger=spare_module.__name__):
        spare = SpareDecoder(open_video, DecoderTimeouts())
        try:
            assert wait_until(lambda: caplog.records != [])
            assert "could not start a spare decoder process: [Errno 24] Too many open files" in caplog.text
            assert spare.take() is None
            monkeypatch.undo()
            end_decoder(_take_once_ready(spare))
        finally:
            spare.close()


def test_close_ends_a_spare_still_being_started() -> None:
    others = _spare_pids()
    spare = SpareDecoder(open_video, DecoderTimeouts())
    spare.close()  # at once: the starter thread is still forking
    assert not [thread for thread in threading.enumerate() if thread.name == SPARE_STARTER_THREAD_NAME]
    assert _spare_pids() - others == set()
    assert spare.take() is None


def test_a_program_that_never_closes_its_spare_still_exits(tmp_path: Path) -> None:
    """A decoder ignores SIGTERM, which multiprocessing sends its daemon children at exit
    before it waits for them: a spare left running made that wait endless."""
    script = tmp_path / "leaves_a_spare.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing
        import time

        from videodag_service.video.decoder_lifecycle import DecoderTimeouts
        from videodag_service.video.reader import OpenedVideo, open_video
        from videodag_service.video.spare_decoder import SPARE_PROCESS_NAME, SpareDecoder

        if __name__ == "__main__":
            spare = SpareDecoder(open_video, DecoderTimeouts())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pids = [p.pid for p in multiprocessing.active_children() if p.name == SPARE_PROCESS_NAME]
                if pids:
                    break
                time.sleep(0.01)
            time.sleep(0.5)
            print(pids[0], flush=True)
    """))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SERVICE_ROOT), os.environ.get("PYTHONPATH", "")])}
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                              env=environment, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    spare_pid = int(finished.stdout.split()[0])
    assert wait_until(lambda: not _is_running(spare_pid))


def test_a_spare_whose_starter_thread_could_not_start_is_started_at_the_next_take(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The starter thread that failed to start (a pids limit) was kept all the same: taken for a
    start under way, no spare was started again, and close() failed joining it (the server's
    shutdown ended in a traceback)."""
    others = _spare_pids()
    with no_new_threads(SPARE_STARTER_THREAD_NAME):
        spare = SpareDecoder(open_video, DecoderTimeouts())
    try:
        assert "could not start a spare decoder process: can't start new thread" in caplog.text
        end_decoder(_take_once_ready(spare))
    finally:
        spare.close()
    assert _spare_pids() - others == set()
