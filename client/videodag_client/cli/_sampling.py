"""The frame-sampling flags `run` and `submit` share, and the RunOptions they make."""

from __future__ import annotations

import argparse

from videodag_client import RunOptions
from videodag_client.cli._arguments import INT32_MAX, MAX_DURATION_SECONDS, float_in_range, int_in_range


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling flags, each limited to what its RunOptions field (int32, Duration) holds."""
    count = int_in_range(0, INT32_MAX)
    seconds = float_in_range(0, MAX_DURATION_SECONDS)
    parser.add_argument("--stride", type=count, default=1, metavar="N", help="process every Nth frame")
    parser.add_argument(
        "--max-frames", type=count, default=0, metavar="N", help="process at most N frames (0: no limit)"
    )
    parser.add_argument("--start", type=seconds, metavar="SECONDS", help="start of the time window")
    parser.add_argument("--end", type=seconds, metavar="SECONDS", help="end of the time window (exclusive)")


def sampling_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        frame_stride=args.stride, max_frames=args.max_frames, start_seconds=args.start, end_seconds=args.end
    )
