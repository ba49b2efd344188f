"""What decoding in a separate process costs: the same runs with the decoder in a thread and in a process.

    .venv/bin/python bench/bench_isolation.py CLIP [CLIP ...] --repeats 5    # prints JSON

Both sides run `VideoFilePipelineService.stream_run` with the real DAG service and the
near-free `frame_stats_v1` pipeline, interleaved, so decoding and the hand-over of frames
are nearly all there is to measure. Whole runs are timed: the process side also pays for
starting its decoder (a fork of the forkserver) and for waiting for it to exit.

It runs as its own small program, like the server: every decoder process runs the
parent's main module again (multiprocessing does, to find what it defines) and the
forkserver can preload only what that module imports by name. The benchmark's main
module imports its sibling modules from the bench folder, which the forkserver cannot
see, so measured from inside it every run would pay for importing them again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from videodag_service.dag import BUILTIN_PIPELINE_DIR, DagPipelineService
from videodag_service.video import FrameProcessed, Isolation, VideoFilePipelineService

PIPELINE_ID = "frame_stats_v1"
ISOLATIONS: tuple[Isolation, ...] = ("thread", "process")


def timed_run(service: VideoFilePipelineService, path: Path) -> tuple[int, float]:
    """Frames and seconds of one whole run, from opening the file to the last event."""
    frames = 0
    started = time.perf_counter()
    for event in service.stream_run(PIPELINE_ID, path):
        frames += isinstance(event, FrameProcessed)
    return frames, time.perf_counter() - started


def measure(paths: list[Path], repeats: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{clip: {isolation: [(frames, seconds), ...]}}, the two isolations interleaved."""
    dag = DagPipelineService.from_folder(BUILTIN_PIPELINE_DIR)
    # As the server runs them: decoder processes with a spare started ahead of each run.
    services = {isolation: VideoFilePipelineService(dag, isolation=isolation, spare_decoder=True)
                for isolation in ISOLATIONS}
    try:
        for service in services.values():  # the first process run also waits for the forkserver's imports
            timed_run(service, paths[0])
        runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for path in paths:
            runs[str(path)] = {isolation: [] for isolation in ISOLATIONS}
            for _ in range(repeats):
                for isolation, service in services.items():
                    runs[str(path)][isolation].append(timed_run(service, path))
        return runs
    finally:
        for service in services.values():
            service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.clips, args.repeats)))


if __name__ == "__main__":
    main()
