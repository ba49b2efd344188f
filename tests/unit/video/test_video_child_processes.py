"""Decoder processes started and reaped by many threads at once (`child_processes`)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from videodag_service.errors import DecoderDidNotStart
from videodag_service.video import decoder_lifecycle
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_lifecycle import (
    DECODER_PROCESS_NAME,
    DecoderTimeouts,
    end_decoder,
    reap_decoder,
    start_decoder_process,
)
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.decoder_process import DECODER_OOM_SCORE_ADJ
from videodag_service.video.reader import open_video

RUNS = 300
THREADS = 4


def test_decoders_started_and_reaped_by_many_threads_at_once_report_their_own_exit_status(tmp_path: Path) -> None:
    """multiprocessing reads a child's exit status in whatever thread starts another child.
    Unguarded, about 1 decoder in 100 here was reported as exit status 255 (the thread that
    lost the read takes the pipe's end for a dead forkserver), and a read just after a
    process's close reads the pipe of a run starting then. Each decoder here says `ready`,
    is sent a file that does not exist, reports it, and exits with status 0."""
    missing = tmp_path / "missing.mp4"

    def one_decoder(_: int) -> tuple[str, str, int | None]:
        process, connection = start_decoder_process(None, open_video, DecoderTimeouts())
        try:
            first = messages.decode(connection.recv_bytes())["type"]
            connection.send_bytes(messages.open_file(messages.OpenRequest(missing, DecoderLogFormat(False))))
            reply = messages.decode(connection.recv_bytes())["type"]
        finally:
            connection.close()
        return first, reply, reap_decoder(process)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = Counter(pool.map(one_decoder, range(RUNS)))

    assert outcomes == {("ready", "failed", 0): RUNS}
    assert [p for p in multiprocessing.active_children() if p.name == DECODER_PROCESS_NAME] == []


def _parent_pid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_a_start_stuck_in_a_stopped_forkserver_holds_up_no_other_decoder() -> None:
    """Another decoder's status and kill do not wait for a start that cannot end (its guard is its own)."""
    running = start_decoder_process(None, open_video, DecoderTimeouts())
    process, connection = running
    assert messages.decode(connection.recv_bytes())["type"] == "ready"
    forkserver = _parent_pid(process.pid or 0)
    stuck = threading.Thread(target=lambda: end_decoder(start_decoder_process(None, open_video, DecoderTimeouts())),
                             daemon=True)
    answered: list[int | None] = []
    asking = threading.Thread(target=lambda: (answered.append(process.exitcode), process.kill()), daemon=True)
    os.kill(forkserver, signal.SIGSTOP)
    try:
        stuck.start()
        time.sleep(0.2)  # in its start, waiting for the forkserver
        asking.start()
        asking.join(5)
        assert not asking.is_alive(), "a running decoder's status waited for another's start"
        assert answered == [None]
        assert stuck.is_alive()
    finally:
        os.kill(forkserver, signal.SIGCONT)
    stuck.join(30)
    assert not stuck.is_alive()
    end_decoder(running)


def test_a_decoder_is_offered_to_the_out_of_memory_killer_before_the_server() -> None:
    """At a container's memory limit the server, holding every run's frames, was killed with all
    its calls (a bare UNAVAILABLE to each client, nothing in its log) rather than a decoder."""
    process, connection = start_decoder_process(None, open_video, DecoderTimeouts())
    try:
        assert messages.decode(connection.recv_bytes())["type"] == "ready"
        assert process.pid is not None
        decoder = int(Path(f"/proc/{process.pid}/oom_score_adj").read_text())
        server = int(Path("/proc/self/oom_score_adj").read_text())
        assert decoder == DECODER_OOM_SCORE_ADJ == 1000 > server, "the most: above the server whatever it holds"
    finally:
        connection.close()
        reap_decoder(process)


def _forkserver_gone_for(starts: int, monkeypatch: pytest.MonkeyPatch, *, ending: bool = False) -> list[int]:
    """The next `starts` decoder starts find the forkserver gone as they ask it (its listener
    closed: what a kill, or a fork it could not make, leaves), and with `ending` it is killed
    then, as it would have ended by itself a moment later."""
    refused: list[int] = []
    connect = multiprocessing.forkserver.connect_to_new_process

    def gone(fds: Any) -> Any:
        if len(refused) < starts:
            refused.append(len(refused))
            if ending:
                os.kill(multiprocessing.forkserver._forkserver._forkserver_pid, signal.SIGKILL)
            raise ConnectionRefusedError(111, "Connection refused")
        return connect(fds)

    monkeypatch.setattr(multiprocessing.forkserver, "connect_to_new_process", gone)
    return refused


def test_a_decoder_whose_forkserver_was_gone_as_it_was_asked_is_started_by_the_next_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run failed INTERNAL "internal error: ConnectionRefusedError", when multiprocessing
    starts another forkserver once it has seen the first end."""
    ended = multiprocessing.forkserver._forkserver._forkserver_pid
    refused = _forkserver_gone_for(1, monkeypatch, ending=True)
    process, connection = start_decoder_process(None, open_video, DecoderTimeouts())
    try:
        assert refused == [0]
        assert multiprocessing.forkserver._forkserver._forkserver_pid != ended, "started by a new forkserver"
        assert messages.decode(connection.recv_bytes())["type"] == "ready"
    finally:
        end_decoder((process, connection))
    assert "the forkserver that starts decoder processes could not start one (ConnectionRefusedError: " in caplog.text


def test_a_decoder_whose_forkserver_cannot_be_reached_twice_fails_the_run_blaming_no_video(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _forkserver_gone_for(2, monkeypatch)
    monkeypatch.setattr(decoder_lifecycle, "_FORKSERVER_END_SECONDS", 0.5)  # it lives on: the wait ends unseen
    with pytest.raises(DecoderDidNotStart) as raised:
        start_decoder_process(None, open_video, DecoderTimeouts())
    assert str(raised.value) == (
        "the server could not start a decoder: the forkserver that starts them could not be reached, twice "
        "(ConnectionRefusedError: [Errno 111] Connection refused); the video is not to blame")
    assert not [child for child in multiprocessing.active_children() if child.name == DECODER_PROCESS_NAME]
