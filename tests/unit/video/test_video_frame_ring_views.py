"""A view of a ring slot outlives the ring's close safely: the mapping stays until the view goes, then goes.

Unmapping pages a numpy view still points into crashes the process (SIGSEGV) at the view's
next read. A node thread abandoned past its time limit is how a view outlives its run: the
run fails, its decoder ring is closed, and the node's call, still running, reads its frame.
Each case runs in a child process, so the crash of a regression fails the test instead of
ending the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_RING_SCRIPT = textwrap.dedent(
    """
    from videodag_service.video.frame_ring import FrameRing, RingLayout, lingering_rings

    ring = FrameRing.create(RingLayout(slots=2, slot_bytes=64 * 64 * 3))
    frame = ring.slot_array(1, (64, 64, 3))
    frame[...] = 7
    ring.close()
    print("after close", int(frame.sum()), lingering_rings())
    del frame  # the last view: the ring is unmapped as it goes
    print("after the view went", lingering_rings())
    """
)

_ABANDONED_NODE_SCRIPT = textwrap.dedent(
    """
    import gc, sys, threading, time
    from pathlib import Path
    from videodag_service.dag import DagPipelineService, Plugin, PluginRegistry, Port, Tool, load_pipeline_folder
    from videodag_service.errors import NodeTimedOut
    from videodag_service.video import VideoFilePipelineService
    from videodag_service.video.frame_ring import lingering_rings

    finished = threading.Event()

    class SlowReader:
        '''Stuck on frame 1 past the time limit, then reads the frame it was given.'''

        def process(self, inputs):
            image = inputs["image"]
            if inputs["index"] == 1:
                time.sleep(1.5)
                total = int(image.sum())
                finished.set()
                return {"sum": total}
            return {"sum": int(image[0, 0, 0])}

        def close(self):
            pass

    def main():
        tool = Tool(name="read", description="reads its frame", inputs=(Port("image"), Port("index")),
                    outputs=(Port("sum"),), params=(), open=lambda params: SlowReader())
        plugin = Plugin(name="slow", description="test", tools=(tool,))
        folder = Path(sys.argv[1])
        (folder / "slow_v1.yaml").write_text(
            "id: slow_v1\\nversion: '1'\\nnodes:\\n  - id: r\\n    plugin: slow.read\\n"
            "    inputs: {image: frame.image, index: frame.index}\\noutputs:\\n  sum: r.sum\\n"
        )
        dag = DagPipelineService(load_pipeline_folder(folder, PluginRegistry([plugin])), node_timeout_seconds=0.3)
        service = VideoFilePipelineService(dag, isolation="process")
        try:
            for _event in service.stream_run("slow_v1", sys.argv[2]):
                pass
        except NodeTimedOut:
            print("run failed: node timed out", flush=True)
        print("ring kept while the node holds its frame:", lingering_rings(), flush=True)
        print("node read its frame:", finished.wait(10), flush=True)
        deadline = time.monotonic() + 10
        while lingering_rings() and time.monotonic() < deadline:
            gc.collect()  # the failed run's traceback holds its last frame in a cycle
            time.sleep(0.01)
        print("ring unmapped once the node let go:", lingering_rings() == 0, flush=True)

    if __name__ == "__main__":
        main()
    """
)


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)


def test_a_view_held_past_close_still_reads_its_pixels_and_the_ring_is_unmapped_once_it_goes(
    tmp_path: Path,
) -> None:
    completed = _run(_RING_SCRIPT, tmp_path=tmp_path)
    assert completed.returncode == 0, (completed.returncode, completed.stderr[-2000:])
    assert completed.stdout.splitlines() == [f"after close {64 * 64 * 3 * 7} 1", "after the view went 0"]


def test_a_node_abandoned_past_its_time_limit_reads_its_frame_after_the_run_without_crashing(
    tmp_path: Path, sample_clip: Path
) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    completed = _run(_ABANDONED_NODE_SCRIPT, str(folder), str(sample_clip), tmp_path=tmp_path)
    assert completed.returncode == 0, (completed.returncode, completed.stderr[-2000:])
    assert completed.stdout.splitlines() == [
        "run failed: node timed out",
        "ring kept while the node holds its frame: 1",
        "node read its frame: True",
        "ring unmapped once the node let go: True",
    ]
