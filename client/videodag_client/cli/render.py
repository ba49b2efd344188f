"""`videodag render VIDEO RESULTS.jsonl -o annotated.mp4 [--snapshot sheet.png]`: look, don't read.

Draws the boxes, track ids, labels and text of a run's results onto the video they came from.
Works offline: it needs the video and the JSON Lines `videodag run -o` wrote, not a server.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import UsageError
from videodag_client.cli._results import print_output

RENDER_MODULES = ("cv2", "numpy")
"""What the `render` extra installs (opencv-python-headless, numpy), by import name."""


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "render",
        help="draw a run's results onto its video (needs the render extra)",
        description=(
            "Draw every box in RESULTS (with its track id, label, score and text) onto VIDEO and write "
            "the annotated video; frames without results are copied unchanged. It draws with OpenCV and "
            "NumPy: a client-only install needs pip install 'videodag[render]'."
        ),
    )
    parser.add_argument("video", metavar="VIDEO", help="the video the results came from")
    parser.add_argument("results", metavar="RESULTS.jsonl", help="results as written by `videodag run -o`")
    parser.add_argument(
        "--output", "-o", required=True, metavar="FILE", help="annotated video to write (.mp4, .m4v, .mov, .mkv, .avi)"
    )
    parser.add_argument(
        "--snapshot", metavar="PNG", help="also write a contact sheet of frames with results, first to last"
    )
    parser.add_argument(
        "--snapshot-frames", type=int, default=12, metavar="N", help="frames on the contact sheet (default 12)"
    )
    parser.set_defaults(handler=render_command)


def render_command(args: argparse.Namespace) -> int:
    # OpenCV is imported here, not at start-up: the other commands never pay for it, and a
    # client-only install (`pip install videodag`, no OpenCV) runs all of them.
    unloadable = _unloadable_render_module()
    if unloadable is not None:
        print(f"error: videodag render draws with OpenCV and NumPy, and this install cannot load them ({unloadable}): "
              "install the render extra, pip install 'videodag[render]' (from a checkout: pip install '.[render]'); "
              "OpenCV's headless build, opencv-python-headless, needs no GUI libraries", file=sys.stderr)
        return _exit_codes.USAGE
    from videodag_client._render import quiet_opencv_logs, render_video
    from videodag_client._render_error import RenderError
    from videodag_client._results_file import load_results

    quiet_opencv_logs()  # the errors are reported here, a line each
    if args.snapshot_frames < 1:
        print("error: --snapshot-frames must be at least 1", file=sys.stderr)
        return _exit_codes.USAGE
    inputs = (args.video, args.results)
    check_destination(args.output, "-o", inputs)
    if args.snapshot is not None:
        check_destination(args.snapshot, "--snapshot", (*inputs, args.output))
    try:
        results = load_results(args.results)
        summary = render_video(
            args.video, results, args.output, snapshot=args.snapshot, snapshot_frames=args.snapshot_frames
        )
    except RenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return _exit_codes.USAGE
    if summary.results_beyond_video:
        print(f"warning: {summary.results_beyond_video} of the {len(results)} results are for frames past the "
              f"video's last ({summary.frames_written - 1}): are they the results of another video?", file=sys.stderr)
    print_output(
        f"wrote {args.output}: {summary.frames_written} frames, {summary.frames_annotated} with results, "
        f"{summary.boxes_drawn} boxes"
        + (f"; contact sheet {args.snapshot} ({summary.snapshot_frames} frames)" if args.snapshot else "")
    )
    return _exit_codes.SUCCESS


def _unloadable_render_module() -> str | None:
    """Why OpenCV or NumPy cannot be imported, or None when both can: missing in a
    client-only install, or installed but failing to load (the GUI build of OpenCV without
    libGL, in a slim container)."""
    for name in RENDER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            return f"{name}: {error}"
    return None


def check_destination(path: str, option: str, inputs: tuple[str, ...]) -> None:
    """Refuses, before the video is decoded, a destination the final rename would fail on or
    that names an input: a directory, a missing directory or one this user cannot write in
    (where the file is written first, under a temporary name), or the video or results themselves."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: it is a directory; name a file in it")
    parent = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: cannot write it: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write it: the directory {parent} is not writable")
    if os.path.exists(path):
        for source in inputs:
            if os.path.exists(source) and os.path.samefile(path, source):
                raise UsageError(f"{option} {path}: it is an input ({source}); write to another file")
