"""Chunk requests written as wire bytes are exactly what protobuf would have written."""

from __future__ import annotations

import itertools
import os

import pytest

from videodag.v1 import video_pipeline_service_pb2 as service_pb2
from videodag.v1 import video_pipeline_service_pb2_grpc as service_grpc
from videodag_client._wire import bytes_field_encoder, method_path

# Around every varint length boundary, and a chunk as large as the client sends.
SIZES = [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, 2_097_152, 4 * 1024 * 1024 - 16 * 1024]


@pytest.mark.parametrize("message_class", [service_pb2.UploadAndRunRequest, service_pb2.SubmitJobRequest])
@pytest.mark.parametrize("size", SIZES)
def test_an_encoded_chunk_is_the_messages_own_wire_form(message_class: type, size: int) -> None:
    data = os.urandom(size)
    encoded = bytes_field_encoder(message_class, "chunk")(data)
    assert encoded == message_class(chunk=data).SerializeToString()
    parsed = message_class.FromString(encoded)
    assert parsed.WhichOneof("payload") == "chunk" and parsed.chunk == data


def test_only_a_bytes_field_can_be_encoded() -> None:
    with pytest.raises(TypeError, match="not a bytes field"):
        bytes_field_encoder(service_pb2.SubmitJobConfig, "idempotency_key")


def test_method_paths_are_the_ones_the_generated_stub_calls() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"]
    calls: dict[str, str] = {}

    class RecordingChannel:
        def __getattr__(self, kind: str):  # type: ignore[no-untyped-def]
            return lambda path, **_: calls.setdefault(path.rsplit("/", 1)[1], path)

    service_grpc.VideoPipelineServiceStub(RecordingChannel())
    assert method_path(service, "UploadAndRun") == calls["UploadAndRun"]
    assert method_path(service, "SubmitJob") == calls["SubmitJob"]


def test_times_the_server_echoes_come_back_as_they_were_sent() -> None:
    """The server rounds a time to whole nanoseconds in a Duration; the client must not add a
    rounding of its own: a job's start of 1.118 s came back as 1.1179999999999999."""
    from videodag.v1 import job_pb2
    from videodag_client._job_values import job_from_proto
    from videodag_service.convert import duration

    sent = [millis / 1000 for millis in range(0, 100_000, 7)]  # as typed: 1.118, not 1.1179999999999999
    for seconds, end in itertools.pairwise(sent):
        job = job_pb2.Job(id="j", state=job_pb2.JOB_STATE_QUEUED)
        job.config.options.start_offset.CopyFrom(duration(seconds))
        job.config.options.end_offset.CopyFrom(duration(end))
        options = job_from_proto(job).options
        assert (options.start_seconds, options.end_seconds) == (seconds, end)


def test_a_job_state_this_client_does_not_know_is_read_as_unknown() -> None:
    """A state a later server release adds (enum values may be added) raised a bare ValueError,
    and one such job made a whole ListJobs page unreadable."""
    from videodag.v1 import job_pb2
    from videodag_client._job_values import JobState, job_from_proto

    later = job_pb2.Job(id="j")
    later.state = 6  # type: ignore[assignment]  # not a value this release's enum names
    assert job_from_proto(later).state is JobState.UNKNOWN
    assert not JobState.UNKNOWN.is_finished
    assert job_from_proto(job_pb2.Job(id="j", state=job_pb2.JOB_STATE_FAILED)).state is JobState.FAILED
    for not_a_state in ("QUEUED", None, "6"):
        with pytest.raises(ValueError):
            JobState(not_a_state)
