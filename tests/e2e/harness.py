"""A real server on loopback with a client, its private upload folder and a recorder of plugin calls."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fakes.fake_plugins import Recorder, make_test_plugin
from videodag_client import VideodagClient
from videodag_service.dag import DagPipelineService, PluginRegistry, builtin_plugins, load_pipeline_folder
from videodag_service.server import RunningServer

# Pipelines built from the test plugin next to the real ones: failure injection over gRPC.
TEST_PIPELINES = {
    "failing": """
        id: failing
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {fail_on: [3]}
            inputs: {index: frame.index}
        outputs:
          seen: count.count
    """,
    # A library's sys.exit() inside a plugin, on frame 2.
    "exiting": """
        id: exiting
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {fail_on: [2], raising: SystemExit}
            inputs: {index: frame.index}
        outputs:
          seen: count.count
    """,
    "skipping": """
        id: skipping
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {fail_on: [1]}
            inputs: {index: frame.index}
            on_error: skip
        outputs:
          seen: count.count
    """,
    "slow": """
        id: slow
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {delay_seconds: 0.05}
            inputs: {index: frame.index}
        outputs:
          seen: count.count
    """,
    # Frame 2 never returns (a plugin stuck in native code): the node time limit must end the run.
    "hanging": """
        id: hanging
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            inputs: {index: frame.index}
          - id: hang
            plugin: test.hang
            params: {hang_on: [2]}
            inputs: {index: count.index}
            on_error: skip
        outputs:
          seen: count.count
          index: hang.index
    """,
    "raw_bytes": """
        id: raw_bytes
        version: "1"
        nodes:
          - id: raw
            plugin: test.raw_output
            params: {kind: bytes, on_frames: [1]}
            inputs: {index: frame.index}
        outputs:
          value: raw.value
    """,
    "raw_nan": """
        id: raw_nan
        version: "1"
        nodes:
          - id: raw
            plugin: test.raw_output
            params: {kind: nan, on_frames: [1]}
            inputs: {index: frame.index}
        outputs:
          value: raw.value
    """,
    # 64 KiB of result per frame, counted by the recorder: shows how far a run gets ahead of its reader.
    "padded": """
        id: padded
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            inputs: {index: frame.index}
          - id: pad
            plugin: test.padding
            params: {size_bytes: 65536}
            inputs: {index: count.index}
        outputs:
          seen: count.count
          text: pad.text
    """,
}


class ServerHarness:
    """A started server, its private upload folders, and a client connected to it."""

    def __init__(self, running: RunningServer, upload_dir: Path, recorder: Recorder) -> None:
        self.running = running
        self.upload_dir = upload_dir
        """Where UploadAndRun receives its uploads."""
        self.job_upload_dir = running.settings.data_dir / "uploads" / "incoming"
        """Where SubmitJob receives its uploads until they are checked."""
        self.recorder = recorder
        self.target = f"127.0.0.1:{running.port}"
        self.client = VideodagClient(self.target)

    def leftover_uploads(self) -> list[Path]:
        """The uploads being received or left behind, of runs and of job submissions alike."""
        return [path for folder in (self.upload_dir, self.job_upload_dir) if folder.exists()
                for path in sorted(folder.iterdir())]

    def uploads_left_after(self, timeout: float = 10.0) -> list[Path]:
        """The uploads still there once the server has had `timeout` seconds to clean up: for
        calls the client ended (cancel, deadline), whose server side unwinds after the client returns."""
        deadline = time.monotonic() + timeout
        while self.leftover_uploads() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.leftover_uploads()

    def job_videos_left_after(self, timeout: float = 10.0) -> list[Path]:
        """The stored videos of jobs still there once the server has had `timeout` seconds to
        remove those of finished jobs: for a test whose jobs have all finished."""
        stored = self.job_upload_dir.parent

        def videos() -> list[Path]:
            return sorted(path for path in stored.iterdir() if path.is_file()) if stored.exists() else []

        deadline = time.monotonic() + timeout
        while videos() and time.monotonic() < deadline:
            time.sleep(0.02)
        return videos()

    def frames_when_the_run_stopped(self, timeout: float = 10.0) -> int:
        """Waits for the server to close its one pipeline run (a call the client ended), checks
        that no frame is processed after that, and returns how many were processed before."""
        deadline = time.monotonic() + timeout
        while self.recorder.count("close") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.recorder.count("close") == 1
        processed_at_close = self.recorder.count("frame")
        time.sleep(0.3)
        assert self.recorder.count("frame") == processed_at_close, "frames were processed after the run closed"
        return processed_at_close

    def run_threads(self) -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("videodag-"))

    def stop(self, grace: float = 0.0) -> None:
        self.client.close()
        self.running.stop(grace)


def make_dag(tmp_path: Path, recorder: Recorder) -> DagPipelineService:
    folder = tmp_path / "pipelines"
    folder.mkdir(parents=True)
    builtin = Path(__file__).resolve().parents[2] / "service" / "videodag_service" / "pipelines"
    for path in builtin.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    for name, text in TEST_PIPELINES.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    registry = PluginRegistry([*builtin_plugins(), make_test_plugin(recorder)])
    return DagPipelineService(load_pipeline_folder(folder, registry))


ServerFactory = Callable[..., ServerHarness]
