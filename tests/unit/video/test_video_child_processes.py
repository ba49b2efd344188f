"""Decoder processes started and reaped by many threads at once (`child_processes`)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from videodag_service.video import child_processes
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.isolation import DECODER_PROCESS_NAME, DecoderTimeouts, reap_decoder, start_decoder_process
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
    assert [p for p in child_processes.live_children() if p.name == DECODER_PROCESS_NAME] == []
