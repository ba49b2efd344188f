"""The `videodag` command against the fake server: JSON Lines, summary, exit codes, pipelines."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from fake_servicer import (
    AbortWith,
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    frame_response,
    rich_status,
    summary_response,
    video_info_response,
)
from google.rpc import code_pb2, status_pb2

from videodag.v1 import run_pb2
from videodag_client import RunOptions, VideoOpened
from videodag_client.cli import build_parser, main
from videodag_client.cli.run import expected_frame_count

_TRACK_ERROR = run_pb2.NodeError(
    node_id="track", plugin="bytetrack.track", status=status_pb2.Status(code=code_pb2.INTERNAL, message="lost")
)


def _script_run(servicer: FakeVideoPipelineServicer) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=6),
        frame_response(0, 25.0, {"tracks": [{"track_id": 1, "box": [0, 0, 10, 20]}]}),
        frame_response(2, 25.0, {"tracks": []}, node_errors=[_TRACK_ERROR]),
        frame_response(4, 25.0, {"tracks": [{"track_id": 1, "box": [2, 0, 12, 20]}]}),
        summary_response(3, frames_with_errors=1),
    ]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_writes_one_json_object_per_frame_and_a_summary(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _script_run(servicer)
    output = tmp_path / "results.jsonl"

    exit_code = main(
        ["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1", "--stride", "2",
         "--output", str(output), "--chunk-size", "65536"]
    )

    assert exit_code == 0
    assert _read_jsonl(output) == [
        {"frame_index": 0, "timestamp": 0.0, "result": {"tracks": [{"track_id": 1.0, "box": [0.0, 0.0, 10.0, 20.0]}]}},
        {
            "frame_index": 2,
            "timestamp": 0.08,
            "result": {"tracks": []},
            "node_errors": [{"node_id": "track", "plugin": "bytetrack.track", "code": "INTERNAL", "message": "lost"}],
        },
        {"frame_index": 4, "timestamp": 0.16, "result": {"tracks": [{"track_id": 1.0, "box": [2.0, 0.0, 12.0, 20.0]}]}},
    ]
    assert not Path(f"{output}.part").exists()
    assert servicer.config.options.frame_stride == 2
    assert {len(chunk) for chunk in servicer.chunks[:-1]} == {65536}
    out = capsys.readouterr().out
    assert "3 processed, 1 with node errors" in out
    assert "1.75 s" in out
    assert "ssdlite.detect_people" in out and "bytetrack.track" in out
    assert str(output) in out


@pytest.mark.parametrize("quiet", [False, True])
def test_frames_decoded_past_get_a_warning_even_when_quiet(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture, quiet: bool,
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=6), frame_response(0, 25.0, {}),
        frame_response(4, 25.0, {}), summary_response(2, frames_in_video=6, frames_unreadable=3),
    ]
    arguments = ["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1"]
    assert main(arguments + (["-q"] if quiet else [])) == 0
    printed = capsys.readouterr()
    assert ("warning:    3 frames could not be decoded (a damaged file?) and have no results; the frames after "
            "them were read on") in (printed.err if quiet else printed.out)


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.parametrize("ended_early", [True, False])
def test_a_video_that_ended_early_gets_a_warning_even_when_quiet(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture,
    ended_early: bool, quiet: bool,
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=6), frame_response(0, 25.0, {}),
        summary_response(1, ended_early=ended_early),
    ]
    arguments = ["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1"]
    assert main(arguments + (["-q"] if quiet else [])) == 0
    printed = capsys.readouterr()
    # Quiet drops the summary (on stdout), not its warning (then on stderr).
    assert ("pipeline:" in printed.out) is not quiet
    warning = "warning:    the video ended early: a frame could not be read"
    warned = warning in (printed.err if quiet else printed.out)
    assert warned is ended_early
    if quiet:
        assert printed.err == "" or printed.err.startswith(warning)


@pytest.mark.parametrize(("frames_in_video", "said"), [(6, "1 processed (the video holds 6), 0 with"),
                                                       (0, "1 processed, 0 with")])
def test_the_summary_says_how_many_frames_the_video_holds_when_they_were_counted(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture,
    frames_in_video: int, said: str,
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=0), frame_response(0, 25.0, {}),
        summary_response(1, frames_in_video=frames_in_video),
    ]
    assert main(["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1"]) == 0
    assert f"frames:     {said} node errors" in capsys.readouterr().out


@pytest.mark.parametrize("frames", [0, 1])
def test_a_run_without_frames_gets_a_warning_in_the_summary(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture, frames: int
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=6),
        *[frame_response(index, 25.0, {}) for index in range(frames)], summary_response(frames),
    ]
    assert main(["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1", "--start", "9"]) == 0
    warned = "warning:    no frame was processed: no frame of the video falls in the window" in capsys.readouterr().out
    assert warned is (frames == 0)


def test_results_on_stdout_keep_the_summary_on_stderr(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _script_run(servicer)

    exit_code = main(["run", str(video_path), "--pipeline", "people_tracking_v1", "-o", "-", "--server", target])

    captured = capsys.readouterr()
    assert exit_code == 0
    assert [json.loads(line)["frame_index"] for line in captured.out.splitlines()] == [0, 2, 4]
    assert "3 processed" in captured.err


def test_results_to_the_file_stdout_is_redirected_to_keep_the_summary_on_stderr(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`-o FILE > FILE`: the finished FILE replaces the one stdout leads to, so a summary
    printed there would be in neither."""
    results = tmp_path / "results.jsonl"
    for redirected_to in (results, tmp_path / "results.jsonl.part"):  # `> FILE`, and `> FILE.part`
        _script_run(servicer)
        with redirected_to.open("w", encoding="utf-8") as redirected:
            monkeypatch.setattr(sys, "stdout", redirected)
            exit_code = main(["run", str(video_path), "--pipeline", "people_tracking_v1", "-o", str(results),
                              "--server", target])

        assert exit_code == 0
        assert [json.loads(line)["frame_index"] for line in results.read_text().splitlines()] == [0, 2, 4]
        assert "3 processed" in capsys.readouterr().err


def test_quiet_run_without_output_prints_nothing(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _script_run(servicer)

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "people_tracking_v1", "--quiet"])

    assert exit_code == 0
    assert capsys.readouterr() == ("", "")


class _TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bars_show_on_a_terminal_unless_quiet(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    _script_run(servicer)
    terminal = _TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)

    exit_code = main(
        ["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "--stride", "2"]
        + (["--quiet"] if quiet else [])
    )

    assert exit_code == 0
    shown = terminal.getvalue()
    if quiet:
        assert shown == ""
    else:
        assert f"/{video_path.stat().st_size / 1024:.0f}k" in shown  # upload bar sized by the file
        assert "frames:" in shown and "0/3" in shown  # 6 declared frames at stride 2


@pytest.mark.parametrize("stdout_on_the_terminal", [True, False])
def test_results_printed_on_the_terminal_get_no_progress_bar_to_break_their_lines(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, monkeypatch: pytest.MonkeyPatch,
    stdout_on_the_terminal: bool,
) -> None:
    _script_run(servicer)
    terminal, results = _TerminalStream(), _TerminalStream() if stdout_on_the_terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", results)

    assert main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-o", "-"]) == 0

    upload_bar = f"/{video_path.stat().st_size / 1024:.0f}k"
    assert (upload_bar in terminal.getvalue()) is not stdout_on_the_terminal
    assert all(line.startswith("{") for line in results.getvalue().splitlines())


def test_with_decoding_during_the_upload_both_bars_show(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server sends frames before upload_received: the upload bar stays until the upload ends."""
    servicer.run_script = [
        video_info_response(fps=25.0, frame_count=2),
        frame_response(0, 25.0, {"tracks": []}),
        AcknowledgeUpload(),
        frame_response(1, 25.0, {"tracks": []}),
        summary_response(2),
    ]
    terminal = _TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "--decode-during-upload"])

    assert exit_code == 0
    shown = terminal.getvalue()
    assert f"/{video_path.stat().st_size / 1024:.0f}k" in shown and "frames:" in shown


def test_the_upload_bar_stays_open_while_frames_come_before_the_upload_ends() -> None:
    from videodag_client.cli._progress import RunProgress

    with RunProgress(enabled=True) as progress:
        progress.upload(100, 1000)
        progress.start_frames(10)
        progress.upload(500, 1000)  # still counted: the upload goes on under the frames
        assert progress._upload_bar is not None and progress._upload_bar.n == 500
        progress.upload_finished()
        progress.upload(1000, 1000)
        assert progress._upload_bar.n == 500  # closed once the upload was received


def test_window_and_limits_are_sent_as_options(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    _script_run(servicer)

    main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "--start", "0.5", "--end", "2",
          "--max-frames", "7", "-q"])

    options = servicer.config.options
    assert options.max_frames == 7
    assert (options.start_offset.seconds, options.start_offset.nanos) == (0, 500_000_000)
    assert (options.end_offset.seconds, options.end_offset.nanos) == (2, 0)


def test_decode_during_upload_is_passed_on(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    _script_run(servicer)

    main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "--decode-during-upload", "-q"])

    assert servicer.config.decode_during_upload
    assert servicer.config.declared_size_bytes == video_path.stat().st_size


@pytest.mark.parametrize(
    ("code", "name", "expected_exit"),
    [
        (code_pb2.NOT_FOUND, "NOT_FOUND", 3),
        (code_pb2.INVALID_ARGUMENT, "INVALID_ARGUMENT", 4),
        (code_pb2.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", 5),
        (code_pb2.DATA_LOSS, "DATA_LOSS", 6),
        (code_pb2.UNAVAILABLE, "UNAVAILABLE", 7),
        (code_pb2.UNAUTHENTICATED, "UNAUTHENTICATED", 8),
        (code_pb2.INTERNAL, "INTERNAL", 1),
    ],
)
def test_run_errors_print_the_status_and_exit_with_its_code(
    target: str,
    servicer: FakeVideoPipelineServicer,
    video_path: Path,
    capsys: pytest.CaptureFixture,
    code: int,
    name: str,
    expected_exit: int,
) -> None:
    servicer.abort_after_config = rich_status(
        code, "it went wrong", field_violations=[("options.frame_stride", "must not be negative")]
    )

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-q"])

    assert exit_code == expected_exit
    assert capsys.readouterr().err.splitlines() == [
        f"error: {name}: it went wrong",
        "  options.frame_stride: must not be negative",
    ]


@pytest.mark.parametrize("last_error", [
    "Peer name other.example is not in peer certificate",  # grpcio 1.66 to 1.76
    "Hostname Verification Check failed",  # grpcio 1.78 and later
])
def test_a_certificate_for_another_name_is_a_tls_failure_in_every_grpcio_the_client_admits(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, capsys: pytest.CaptureFixture,
    last_error: str,
) -> None:
    """gRPC's own UNAVAILABLE, no reason: told as a handshake that fails until the setup changes, not "retry"."""
    servicer.abort_after_config = rich_status(
        code_pb2.UNAVAILABLE,
        f"failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:443: {last_error}")

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-q"])

    assert exit_code == 8
    error = capsys.readouterr().err
    assert error.startswith("error: TLS handshake with the server failed")
    assert "the server's certificate does not hold the host name or address of --server" in error


def test_failure_after_some_frames_keeps_them_in_a_part_file(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(),
        frame_response(0, 25.0, {"motion": 0.5}),
        AbortWith(rich_status(code_pb2.INTERNAL, "node 'motion' failed on frame 1")),
    ]
    output = tmp_path / "out.jsonl"

    exit_code = main(["--server", target, "run", str(video_path), "--pipeline", "motion_v1", "-o", str(output)])

    assert exit_code == 1
    assert not output.exists()
    assert _read_jsonl(Path(f"{output}.part")) == [{"frame_index": 0, "timestamp": 0.0, "result": {"motion": 0.5}}]
    assert "error: INTERNAL: node 'motion' failed on frame 1" in capsys.readouterr().err


def test_usage_errors_exit_with_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "video.mp4"]) == 2  # no --pipeline
    assert main(["run", str(tmp_path / "absent.mp4"), "--pipeline", "motion_v1", "--server", "127.0.0.1:9"]) == 2
    assert "absent.mp4" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "usage"), [
    ("pipelines", "usage: videodag pipelines [options] [show ID]"),
    ("jobs", "usage: videodag jobs [options] [show JOB | delete JOB]"),
])
def test_commands_that_list_without_an_action_say_the_action_is_optional(
    command: str, usage: str, capsys: pytest.CaptureFixture
) -> None:
    assert main([command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(usage + "\n")
    # The action's own errors name it plainly, not after the command's usage line.
    assert main([command, "show"]) == 2
    assert f"videodag {command} show: error: the following arguments are required" in capsys.readouterr().err


def test_server_comes_from_the_environment(
    target: str, servicer: FakeVideoPipelineServicer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    servicer.required_token = "tok"
    monkeypatch.setenv("VIDEODAG_SERVER", target)
    monkeypatch.setenv("VIDEODAG_TOKEN", "tok")

    assert main(["pipelines"]) == 0
    assert servicer.metadata[-1]["authorization"] == "Bearer tok"


def test_a_token_sent_in_clear_text_off_this_machine_is_warned_of(
    target: str, servicer: FakeVideoPipelineServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.required_token = "tok"
    assert main(["--server", target, "--token", "tok", "pipelines"]) == 0
    assert "warning" not in capsys.readouterr().err  # loopback: nobody between

    # 192.0.2.1 (TEST-NET-1) is never anyone's: the call fails, after the warning.
    faraway = ["--server", "192.0.2.1:50051", "--timeout", "0.2", "pipelines"]
    assert main([*faraway, "--token", "tok"]) != 0
    assert ("warning: the token goes to 192.0.2.1:50051 in clear text (no --tls): anyone on the network between can "
            "read it and use it; connect with --tls, or --tls-ca FILE\n") in capsys.readouterr().err
    assert main([*faraway, "--token", "tok", "--tls"]) != 0
    assert "warning" not in capsys.readouterr().err
    assert main(faraway) != 0
    assert "warning" not in capsys.readouterr().err


def test_pipelines_lists_id_version_and_description(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--server", target, "pipelines"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "VERSION", "DESCRIPTION"]
    assert lines[1].split(maxsplit=2) == ["motion_v1", "0.3.0", "Measures how much of each frame moved."]
    assert lines[2].split(maxsplit=2) == [
        "people_tracking_v1", "1.2.0", "Finds people and follows them across frames."
    ]


def test_pipelines_json_includes_the_nodes(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--server", target, "pipelines", "--json"]) == 0

    pipelines = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in pipelines] == ["motion_v1", "people_tracking_v1"]
    track = pipelines[1]["nodes"][1]
    assert track == {
        "id": "track",
        "plugin": "bytetrack.track",
        "inputs": [
            {"name": "detections", "source": "detect.detections"},
            {"name": "timestamp", "source": "frame.timestamp"},
        ],
        "params": {},
        "on_error": "skip",
        "stateful": True,
    }
    assert pipelines[1]["nodes"][0]["params"] == {"min_score": 0.5, "max_detections": 50.0}


def test_pipelines_show_prints_the_graph(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["pipelines", "show", "people_tracking_v1", "--server", target]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == "people_tracking_v1 (version 1.2.0)"
    assert "  detect: ssdlite.detect_people  [on_error=fail]" in out
    assert "  track: bytetrack.track  [on_error=skip, stateful]" in out
    assert "    detections <- detect.detections" in out
    assert "  tracks <- track.tracks" in out


def test_pipelines_show_json_given_before_the_action(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--server", target, "pipelines", "--json", "show", "motion_v1"]) == 0

    assert json.loads(capsys.readouterr().out)["outputs"] == [{"name": "motion", "source": "motion.score"}]


def test_pipelines_show_unknown_id_exits_not_found(target: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--server", target, "pipelines", "show", "nope"]) == 3
    assert capsys.readouterr().err.startswith("error: NOT_FOUND: unknown pipeline 'nope'")


def _frames_chosen(video: VideoOpened, options: RunOptions) -> int:
    """The contract's sampling spelled out frame by frame: window, then stride, then max_frames."""
    start = -math.inf if options.start_seconds is None else options.start_seconds
    end = math.inf if options.end_seconds is None else options.end_seconds
    window = [i for i in range(video.frame_count) if start <= i / video.fps < end]
    strided = window[:: max(1, options.frame_stride)]
    return len(strided[: options.max_frames] if options.max_frames else strided)


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(),
        RunOptions(frame_stride=5, max_frames=3),
        RunOptions(frame_stride=7),
        RunOptions(start_seconds=0.4, end_seconds=2.0),
        RunOptions(start_seconds=1.0 / 3.0, end_seconds=4.0, frame_stride=4),
        RunOptions(start_seconds=10.0),
        RunOptions(end_seconds=0.0),
        RunOptions(max_frames=500),
    ],
)
@pytest.mark.parametrize("fps", [25.0, 29.97, 30.0])
def test_expected_frame_count_matches_the_sampling_rules(options: RunOptions, fps: float) -> None:
    video = VideoOpened(fps=fps, frame_count=120, width=1, height=1, duration_seconds=120 / fps, codec="", size_bytes=1)

    assert expected_frame_count(video, options) == _frames_chosen(video, options)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "video.mp4", "--pipeline", "p"],
        ["pipelines"],
        ["pipelines", "show", "p"],
        ["submit", "video.mp4", "--pipeline", "p"],
        ["watch", "JOB"],
        ["jobs"],
        ["jobs", "show", "JOB"],
        ["jobs", "delete", "JOB"],
        ["cancel", "JOB"],
    ],
)
def test_every_command_that_calls_the_server_takes_the_connection_options_after_it(command: list[str]) -> None:
    after = build_parser().parse_args([*command, "--server", "after:1", "--token", "t", "--timeout", "5"])
    assert (after.server, after.token, after.timeout) == ("after:1", "t", 5.0)
    before = build_parser().parse_args(["--server", "before:1", *command])
    assert before.server == "before:1"  # not overwritten by a default after the command


def test_a_reader_closing_the_output_early_ends_the_command_quietly(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    # `videodag run ... -o - | head -1`: the pipe closes while results are still being written.
    _script_run(servicer)
    command = [sys.executable, "-m", "videodag_client.cli", "--server", target, "run", str(video_path),
               "--pipeline", "people_tracking_v1", "-o", "-", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(60) == 141
    assert errors == ""
