"""A repeated idempotency key whose job was created while this submission's video arrived (two
submits with one key at once): the video that arrived is compared with the job's, since nothing
declared it before the upload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.job_queue import QueueThatRunsNothing
from videodag_service.dag import DagPipelineService
from videodag_service.errors import IdempotencyKeyReused
from videodag_service.jobs import DirectoryUploadStorage, Job, JobRequest, JobService, JobState, SqliteJobStore
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import StoredVideo
from videodag_service.video import SamplingOptions

VIDEO = b"\x00" * 4096  # never decoded here: no worker runs
SHA256_OF_VIDEO = "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"


class _Jobs:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SqliteJobStore(tmp_path / "data")
        self.uploads = DirectoryUploadStorage(tmp_path / "uploads")
        self.service = JobService(self.store, QueueThatRunsNothing(), self.uploads, DagPipelineService.from_folder(),
                                  max_upload_bytes=10**6, retention_seconds=60)

    def submit_while_the_key_is_taken(self, key: str, taken: StoredVideo) -> Job:
        """Submits VIDEO with `key`; before its first chunk arrives, another submit records its
        job, of the video `taken`, under the same key."""
        def chunks() -> Iterator[bytes]:
            self.store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(), taken, 0.0,
                                  idempotency_key=key))
            yield VIDEO

        return self.service.submit(JobRequest("frame_stats_v1", idempotency_key=key), chunks())


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[_Jobs]:
    jobs = _Jobs(tmp_path)
    yield jobs
    jobs.service.close()


def test_the_same_video_arriving_for_a_key_taken_meanwhile_gets_the_keys_job(jobs: _Jobs) -> None:
    taken = StoredVideo("theirs.avi", len(VIDEO), SHA256_OF_VIDEO)
    assert jobs.submit_while_the_key_is_taken("k", taken).video == taken
    assert list(jobs.uploads.refs()) == [], "the copy that arrived second is removed"


def test_another_video_arriving_for_a_key_taken_meanwhile_is_refused(jobs: _Jobs) -> None:
    with pytest.raises(IdempotencyKeyReused) as reused:
        jobs.submit_while_the_key_is_taken("k", StoredVideo("theirs.avi", len(VIDEO), "0" * 64))
    assert reused.value.details.metadata["differs"] == "video"
    assert list(jobs.uploads.refs()) == [], "the video that arrived is removed"


def test_a_retry_declaring_the_checksum_as_the_first_did_finds_the_first_job(jobs: _Jobs) -> None:
    """The upload takes a SHA-256 with spaces around it (grpcurl's JSON ending in a newline); the
    comparison of the retry did not, and refused the identical retry as another video."""
    request = JobRequest("frame_stats_v1", idempotency_key="k", declared_sha256=f" {SHA256_OF_VIDEO.upper()}\n")
    first = jobs.service.submit(request, iter([VIDEO]))
    assert jobs.service.submit(request, iter([VIDEO])).id == first.id
