"""`videodag` where standard output is not UTF-8 (a Latin-1 or EUC-JP locale, PYTHONIOENCODING=ascii):
text it cannot encode is written as escapes, never a traceback, and JSON Lines stay valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    frame_response,
    serving,
    summary_response,
    video_info_response,
)

from videodag.v1 import job_pb2, video_pipeline_service_pb2

NAME = "行人 café 🎬.mp4"  # none of the three encodings holds all of it
LABEL = "€5 CAFÉ 行人"


class _ListingServicer(FakeVideoPipelineServicer):
    def ListJobs(
        self, request: video_pipeline_service_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.ListJobsResponse:
        job = job_pb2.Job(id="job-1", state=job_pb2.JOB_STATE_QUEUED)
        job.config.pipeline_id, job.config.file_name = "p", NAME
        job.create_time.FromSeconds(1_765_000_000)
        return video_pipeline_service_pb2.ListJobsResponse(jobs=[job])


@pytest.fixture
def listing() -> Iterator[str]:
    servicer = _ListingServicer()
    servicer.run_script = [AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=1),
                           frame_response(0, 25.0, {"label": LABEL}), summary_response(1)]
    with serving(servicer) as address:
        yield address


def _videodag(*arguments: str, encoding: str) -> subprocess.CompletedProcess[bytes]:
    environment = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONUTF8": "0"}
    return subprocess.run([sys.executable, "-m", "videodag_client.cli", *arguments], capture_output=True,
                          env=environment, timeout=60, check=False)


@pytest.mark.parametrize("encoding", ["latin-1", "ascii", "euc-jp"])
def test_a_listing_with_a_name_the_terminal_cannot_show_is_listed_with_escapes(listing: str, encoding: str) -> None:
    listed = _videodag("--server", listing, "jobs", encoding=encoding)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.decode(encoding).splitlines()[1]
    assert row.startswith("job-1") and "caf" in row and "Traceback" not in listed.stderr.decode(encoding)


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_results_to_a_stdout_that_is_not_utf8_are_ascii_json_of_the_same_text(
    listing: str, video_path: Path, encoding: str
) -> None:
    """They were the locale's bytes (Latin-1: not JSON Lines; `render` refused them), or a traceback."""
    ran = _videodag("--server", listing, "run", str(video_path), "--pipeline", "motion_v1", "-q", "-o", "-",
                    encoding=encoding)
    assert ran.returncode == 0, ran.stderr
    (line,) = ran.stdout.splitlines()
    assert line.isascii()
    assert json.loads(line)["result"] == {"label": LABEL}


def test_a_results_file_whose_name_is_not_utf8_gets_its_summary(listing: str, video_path: Path, tmp_path: Path) -> None:
    """The file was written, then the summary naming it failed: a traceback, exit 1, for a run that succeeded."""
    output = os.fsdecode(bytes(tmp_path) + b"/r\xe9sultats.jsonl")
    ran = _videodag("--server", listing, "run", str(video_path), "--pipeline", "motion_v1", "-o", output,
                    encoding="utf-8")
    assert ran.returncode == 0, ran.stderr
    assert "r\\udce9sultats.jsonl" in ran.stdout.decode()
    assert json.loads(Path(output).read_text())["result"] == {"label": LABEL}
