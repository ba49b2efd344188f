"""A server logging JSON lines keeps to one JSON object a line, FFmpeg's own messages included,
and each line of a call carries the call's request id, a call the token check refused included.

FFmpeg and OpenCV write straight to the decoder process's stderr; the decoder passes each
line on as a JSON object naming its logger and the request id of the run it decoded for.
"""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import ServerFactory
from jobs_harness import SERVER_SCRIPT, ServerProcess, subprocess_environment, wait_for_job

from fakes.logs import json_log_lines
from fakes.media import write_cut_copy
from videodag_client import FrameResult, InvalidArgument, JobState, VideodagClient
from videodag_service.video.decoder_log import LOGGER_NAME


def _json_log_of_a_server_calling(tmp_path: Path, call: Callable[[VideodagClient], None]) -> list[dict[str, Any]]:
    """The entries a real server logging JSON lines writes while `call` runs and until it stops."""
    arguments = ["--host", "127.0.0.1", "--port", "0", "--temp-dir", str(tmp_path / "uploads"),
                 "--data-dir", str(tmp_path / "data"), "--log-format", "json"]
    log = tmp_path / "server.log"
    process = ServerProcess(arguments, subprocess_environment(tmp_path / "site"), log, SERVER_SCRIPT)
    try:
        with VideodagClient(f"127.0.0.1:{process.port}") as client:
            call(client)
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(30) == 0
    finally:
        process.kill()
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # one JSON object a line


def _decoder_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from_decoder = [entry for entry in entries if entry["logger"] == LOGGER_NAME]
    assert any("ended prematurely" in entry["message"] for entry in from_decoder), from_decoder
    return from_decoder


@pytest.mark.parametrize("decode_during_upload", [False, True], ids=["stored first", "decoded while arriving"])
def test_ffmpegs_messages_reach_a_json_log_as_json_lines_with_the_runs_request_id(
    sample_clip: Path, tmp_path: Path, decode_during_upload: bool
) -> None:
    """Stored first, the decoder is started in the call's thread, or is the spare the server
    started before the call and learns the call's id with its file (the second call, after
    a pause); decoded while arriving, it is started in the run's thread."""
    header_only = write_cut_copy(sample_clip, tmp_path / "cut.mkv", keep_bytes=8000)  # "ended prematurely"

    def run(client: VideodagClient) -> None:
        for _ in range(2):
            with pytest.raises(InvalidArgument):
                list(client.upload_and_run(header_only, "frame_stats_v1", decode_during_upload=decode_during_upload))
            time.sleep(1)  # time for the next spare to start

    entries = _json_log_of_a_server_calling(tmp_path, run)
    refused = [entry for entry in entries if "UploadAndRun INVALID_ARGUMENT" in entry["message"]]
    assert len(refused) == 2
    decoder_entries = _decoder_entries(entries)
    assert {entry["request_id"] for entry in decoder_entries} == {entry["request_id"] for entry in refused}
    assert len({entry["decoder_pid"] for entry in decoder_entries}) == 2


def test_ffmpegs_messages_from_a_jobs_run_carry_the_jobs_id(sample_clip: Path, tmp_path: Path) -> None:
    """A job runs after its SubmitJob call has ended: its lines carry the id its caller knows it by."""
    header_only = write_cut_copy(sample_clip, tmp_path / "cut.mkv", keep_bytes=8000)
    submitted: list[str] = []

    def submit(client: VideodagClient) -> None:
        job = client.submit_job(header_only, "frame_stats_v1")
        wait_for_job(client, job.id, lambda found: found.state is JobState.FAILED)
        submitted.append(job.id)

    entries = _json_log_of_a_server_calling(tmp_path, submit)
    [job_id] = submitted
    assert {entry.get("request_id") for entry in _decoder_entries(entries)} == {job_id}
    assert any(entry.get("request_id") == job_id and f"job {job_id} failed" in entry["message"] for entry in entries)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The in-process server's log as JSON lines in a buffer; the previous handlers come back afterwards."""
    with json_log_lines("INFO") as stream:
        yield stream


def test_a_call_refused_for_its_token_logs_the_refusal_with_its_request_id(
    make_server: ServerFactory, json_log: io.StringIO
) -> None:
    server = make_server(tokens="secret")
    method = "/videodag.v1.VideoPipelineService/ListPipelines"
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(method)(b"", metadata=[("x-request-id", "refused-1")], timeout=10)

    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    entries = [json.loads(line) for line in json_log.getvalue().splitlines()]
    of_the_call = [entry for entry in entries if entry.get("request_id") == "refused-1"]
    refusal = [entry for entry in entries if entry["message"].startswith(f"refused {method}: missing bearer token")]
    assert len(refusal) == 1 and refusal[0] in of_the_call
    assert [entry["grpc_code"] for entry in of_the_call if "grpc_code" in entry] == ["UNAUTHENTICATED"]


class _HeldVideo(io.RawIOBase):
    """A seekable video whose reads past its middle wait for `release`: an upload held there."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self._middle = len(data) // 2
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def readinto(self, buffer: Any) -> int:
        if self._data.tell() >= self._middle:
            self.release.wait(60)
        block = self._data.read(min(len(buffer), max(self._middle - self._data.tell(), 0) or len(buffer)))
        buffer[:len(block)] = block
        return len(block)


def test_runs_decoded_while_arriving_that_their_clients_cancel_log_nothing_of_the_cut_file(
    sample_clip: Path, tmp_path: Path
) -> None:
    """FFmpeg reads the end of the file the cancel cut short: each such run logged its complaints
    ("partial file", "Invalid NAL unit size", up to a hundred) as if the video were damaged."""
    def run(client: VideodagClient) -> None:
        for _ in range(5):
            video = _HeldVideo(sample_clip.read_bytes())
            stream = client.upload_and_run(video, "frame_stats_v1", checksum=False, decode_during_upload=True,
                                           chunk_size=64 * 1024)
            assert any(isinstance(event, FrameResult) for event in stream), "a frame came during the upload"
            stream.close()  # the client's cancel, half the video unsent
            video.release.set()

    entries = _json_log_of_a_server_calling(tmp_path, run)
    assert [entry for entry in entries if entry["logger"] == LOGGER_NAME] == []
