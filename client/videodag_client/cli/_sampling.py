"""The frame-sampling flags `run` and `submit` share, and the RunOptions they make."""

from __future__ import annotations

import argparse

from videodag_client import RunOptions


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stride", type=int, default=1, metavar="N", help="process every Nth frame")
    parser.add_argument("--max-frames", type=int, default=0, metavar="N", help="process at most N frames")
    parser.add_argument("--start", type=float, metavar="SECONDS", help="start of the time window")
    parser.add_argument("--end", type=float, metavar="SECONDS", help="end of the time window (exclusive)")


def sampling_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        frame_stride=args.stride, max_frames=args.max_frames, start_seconds=args.start, end_seconds=args.end
    )
