"""`videodag run VIDEO --pipeline ID`: upload a video, run a pipeline, write JSON Lines results."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from videodag_client import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    FrameResult,
    InvalidArgument,
    RunOptions,
    RunStream,
    RunSummary,
    UploadReceived,
    VideodagClient,
    VideoOpened,
)
from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import UsageError, int_in_range, utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._progress import RunProgress, progress_wanted
from videodag_client.cli._results import STDOUT, JsonLinesOutput, print_output
from videodag_client.cli._sampling import add_sampling_arguments, sampling_options
from videodag_client.cli._terminal import terminal_safe
from videodag_client.cli._video_input import video_source

# Frame i is at i / fps; a window bound that lands on a frame's time within float noise
# (0.4 s * 25 fps = 10.000000000000002) must count that frame as inside.
_FRAME_TIME_TOLERANCE = 1e-6


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "run",
        parents=[connection_options_parent()],
        help="upload a video and run a pipeline on it",
        description="Upload VIDEO, run pipeline ID on its frames, and write one JSON object per frame.",
    )
    parser.add_argument("video", metavar="VIDEO", help="the video file to upload, or '-' to read it from stdin")
    parser.add_argument(
        "--pipeline", required=True, type=utf8_text, metavar="ID", help="the pipeline to run (see `videodag pipelines`)"
    )
    add_sampling_arguments(parser)
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write results as JSON Lines to FILE, or '-' for stdout; default: not written. A file is written "
        "as FILE.part and renamed at the end; a FIFO or device is written directly",
    )
    parser.add_argument(
        "--chunk-size", type=int_in_range(1, MAX_CHUNK_SIZE), default=DEFAULT_CHUNK_SIZE, metavar="BYTES",
        help=f"upload chunk size, 1 to {MAX_CHUNK_SIZE} (default {DEFAULT_CHUNK_SIZE})"
    )
    parser.add_argument(
        "--no-checksum", action="store_true", help="skip the SHA-256 pass over the file before the upload"
    )
    parser.add_argument(
        "--decode-during-upload",
        action="store_true",
        help="start decoding while the upload is still arriving (first results sooner for faststart MP4/MOV, "
        "MKV/WebM, and fragmented MP4 on a server isolating its decoders in processes, its default; other files "
        "wait for their end, as without it); needs a regular, "
        "non-empty file, whose size can be declared",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bars and no summary (its warnings still go to stderr)"
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    options = sampling_options(args)
    # Checked before connecting: a bad -o found after the run would lose its results.
    output = JsonLinesOutput(args.output, input_path=args.video)
    summary: RunSummary | None = None
    with (
        connect(args) as client,
        output,
        RunProgress(progress_wanted(args.quiet, output.lands_on_stdout)) as progress,
        _start_run(client, args, options, progress) as events,
    ):
        for event in events:
            if isinstance(event, UploadReceived):
                progress.upload_finished()
            elif isinstance(event, VideoOpened):
                progress.start_frames(expected_frame_count(event, options))
            elif isinstance(event, FrameResult):
                output.write(event)
                progress.frame_done()
            elif isinstance(event, RunSummary):
                summary = event
    if summary is not None and not args.quiet:
        # With results on stdout, the summary must not end up inside the JSON Lines.
        print_summary(format_summary(summary, args.output), on_stderr=output.lands_on_stdout)
    elif summary is not None:
        for warning in summary_warnings(summary):  # quiet drops the summary, not what went wrong
            print(warning, file=sys.stderr)
    return _exit_codes.SUCCESS


def _start_run(
    client: VideodagClient, args: argparse.Namespace, options: RunOptions, progress: RunProgress
) -> RunStream:
    """Starts the upload; what the client refuses before any call is a usage error."""
    try:
        return client.upload_and_run(
            video_source(args.video),
            args.pipeline,
            options,
            chunk_size=args.chunk_size,
            checksum=not args.no_checksum,
            decode_during_upload=args.decode_during_upload,
            on_upload_progress=progress.upload,
        )
    except InvalidArgument:  # only the client's own check (the size must be declared): no call was made
        raise UsageError("--decode-during-upload needs a non-empty file, not a pipe: the server must be told "
                         "the video's size before it arrives") from None


def expected_frame_count(video: VideoOpened, options: RunOptions) -> int | None:
    """How many frames the server will process, for the progress bar; None if unknown.

    Mirrors the contract's sampling order (window, then stride, then max_frames) on the
    container's declared frame count, which some formats only estimate. A window bound that
    lands on no frame number (a server's fps of infinity) makes the count unknown.
    """
    if video.frame_count <= 0:
        return None
    first: int | None = 0
    end: int | None = video.frame_count
    if video.fps > 0:
        if options.start_seconds is not None:
            first = _first_frame_at_or_after(options.start_seconds, video.fps)
        if options.end_seconds is not None:
            end = _first_frame_at_or_after(options.end_seconds, video.fps)
    if first is None or end is None:
        return None
    count = max(0, min(end, video.frame_count) - max(0, first))
    count = math.ceil(count / max(1, options.frame_stride))
    if options.max_frames > 0:
        count = min(count, options.max_frames)
    return count


def _first_frame_at_or_after(seconds: float, fps: float) -> int | None:
    """None when the frame number is no number: infinite, or NaN (0 s times an infinite fps)."""
    frames = seconds * fps - _FRAME_TIME_TOLERANCE
    return math.ceil(frames) if math.isfinite(frames) else None


def format_summary(summary: RunSummary, output_path: str | None) -> str:
    lines = [
        terminal_safe(f"pipeline:   {summary.pipeline_id} (version {summary.pipeline_version})", one_line=True),
        f"frames:     {summary.frames_processed} processed{_of_the_video(summary)}, "
        f"{summary.frames_with_errors} with node errors",
        f"wall time:  {summary.wall_time_seconds:.2f} s (decoding {summary.decode_time_seconds:.2f} s)",
    ]
    lines.extend(summary_warnings(summary))
    if summary.node_timings:
        lines.append(_node_table(summary))
    lines.append(f"results:    {_describe_output(output_path)}")
    return terminal_safe("\n".join(lines))


def print_summary(text: str, *, on_stderr: bool) -> None:
    if on_stderr:
        print(text, file=sys.stderr)
    else:
        print_output(text)


def summary_warnings(summary: RunSummary) -> list[str]:
    """What the summary says went wrong, a line each."""
    warnings = []
    if summary.frames_processed == 0 and not summary.ended_early:
        warnings.append("warning:    no frame was processed: no frame of the video falls in the window asked for "
                        "(--start, --end)")
    if summary.ended_early:
        warnings.append("warning:    the video ended early: a frame could not be read (a truncated or damaged "
                        "file?), so the frames after it have no results")
    if summary.frames_unreadable:
        warnings.append(f"warning:    {summary.frames_unreadable} frames could not be decoded (a damaged file?) and "
                        "have no results; the frames after them were read on")
    return warnings


def _of_the_video(summary: RunSummary) -> str:
    """How many the video held, when the run read it to its end and so counted them."""
    return f" (the video holds {summary.frames_in_video})" if summary.frames_in_video else ""


def _node_table(summary: RunSummary) -> str:
    header = ("node", "plugin", "calls", "total s", "ms/call", "errors")
    rows = [
        (
            terminal_safe(t.node_id, one_line=True),
            terminal_safe(t.plugin, one_line=True),
            str(t.calls),
            f"{t.total_seconds:.3f}",
            f"{t.seconds_per_call * 1000:.1f}",
            str(t.errors),
        )
        for t in summary.node_timings
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned.
    aligned = [
        [cell.ljust(width) if column < 2 else cell.rjust(width) for column, (cell, width) in enumerate(
            zip(row, widths, strict=True)
        )]
        for row in (header, *rows)
    ]
    return "\n".join("  " + "  ".join(cells) for cells in aligned)


def _describe_output(output_path: str | None) -> str:
    if output_path is None:
        return "not written (use --output FILE)"
    return "stdout" if output_path == STDOUT else output_path

