"""Real job deployments for end-to-end tests: in-process servers, a real `redis-server` on a free
loopback port, real `rq worker` processes, and `videodag-server` processes that can be killed.

Workers load pipelines the way production workers do: from the server's pipeline folder, with
the plugin registry of built-ins plus installed entry points. The test plugin (`test.counter`,
which can sleep or fail on chosen frames) is installed for them as a real entry point: a
`.dist-info` folder on the workers' PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import TEST_PIPELINES

from fakes.fake_plugins import Recorder, make_test_plugin
from fakes.redis_server import RedisServer
from videodag_client import FrameResult, Job, JobState, VideodagClient
from videodag_service.dag import DagPipelineService, PluginRegistry, builtin_plugins, load_pipeline_folder
from videodag_service.jobs.defaults import DEFAULT_QUEUE_NAME
from videodag_service.server import RunningServer, start_server
from videodag_service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
VENV_BIN = Path(sys.executable).parent

# `paced` sleeps per frame so a job is still running when a test cancels, kills or watches it.
JOB_TEST_PIPELINES = {
    "paced": """
        id: paced
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {delay_seconds: 0.03}
            inputs: {index: frame.index}
        outputs:
          seen: count.count
          index: count.index
    """,
    # 100 kB of text a frame: over the result limit of a server whose messages take 64 KiB.
    "oversized": """
        id: oversized
        version: "1"
        nodes:
          - id: pad
            plugin: test.padding
            params: {size_bytes: 100000}
            inputs: {index: frame.index}
        outputs:
          text: pad.text
    """,
    # Frame 2 never returns, like a plugin stuck in native code: the node time limit must end the job.
    "hanging": TEST_PIPELINES["hanging"],
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
}

_PLUGIN_MODULE = """
import sys
import tempfile
sys.path.insert(0, {tests_dir!r})
from harness import TEST_PIPELINES

from fakes.fake_plugins import Recorder, make_test_plugin
from fakes.redis_server import RedisServer

PLUGIN = make_test_plugin(Recorder())
"""


_SLOW_START_MODULE = """
import time
from pathlib import Path

from videodag_service.dag import Plugin

_FOLDER = Path({folder!r})


def plugin():
    with open(_FOLDER / "loads", "a") as loads:
        loads.write("loading\\n")
    time.sleep(float((_FOLDER / "seconds").read_text()))
    return Plugin(name="slow_start", description="Takes its time to load.", tools=())
"""


def write_pipeline_folder(folder: Path) -> Path:
    """The built-in pipelines plus the test ones, as a server's --pipeline-dir."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (REPO_ROOT / "service" / "videodag_service" / "pipelines").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    for name, text in JOB_TEST_PIPELINES.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


def make_job_dag(folder: Path) -> DagPipelineService:
    registry = PluginRegistry([*builtin_plugins(), make_test_plugin(Recorder())])
    return DagPipelineService(load_pipeline_folder(folder, registry))


def install_test_plugin(site_dir: Path) -> Path:
    """Install the test plugin as a `videodag.plugins` entry point visible on `site_dir`."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "videodag_job_test_plugin.py").write_text(_PLUGIN_MODULE.format(tests_dir=str(TESTS_DIR)))
    dist_info = site_dir / "videodag_job_test_plugin-0.0.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: videodag-job-test-plugin\nVersion: 0.0\n")
    (dist_info / "entry_points.txt").write_text("[videodag.plugins]\ntest = videodag_job_test_plugin:PLUGIN\n")
    return site_dir


class SlowStart:
    """A plugin entry point, installed for the workers, that takes `seconds` to load. A work horse
    loads the pipelines, this with them, after RQ started its task and before it claims its job:
    the window a test kills the worker or cuts Redis in, once `wait_until_loading` returned."""

    def __init__(self, site_dir: Path, seconds: float) -> None:
        self._folder = site_dir / "slow_start"
        self._folder.mkdir(parents=True, exist_ok=True)
        self.seconds = seconds
        (site_dir / "videodag_slow_start_plugin.py").write_text(_SLOW_START_MODULE.format(folder=str(self._folder)))
        dist_info = site_dir / "videodag_slow_start_plugin-0.0.dist-info"
        dist_info.mkdir(exist_ok=True)
        (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: videodag-slow-start-plugin\nVersion: 0.0\n")
        (dist_info / "entry_points.txt").write_text(
            "[videodag.plugins]\nslow_start = videodag_slow_start_plugin:plugin\n"
        )

    @property
    def seconds(self) -> float:
        return float((self._folder / "seconds").read_text())

    @seconds.setter
    def seconds(self, seconds: float) -> None:
        (self._folder / "seconds").write_text(repr(seconds))

    def loads(self) -> int:
        """How many times a work horse began to load it."""
        path = self._folder / "loads"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def wait_until_loading(self, loads_before: int = 0, timeout: float = 30.0) -> None:
        wait_until(lambda: self.loads() > loads_before, timeout=timeout, what="a work horse loading the pipelines")


# `videodag-worker` whose work horses pause a fixed time before handing a job queued again over
# (`run_again_pause`, random otherwise), as tests of embedded workers patch it.
_FIXED_PAUSE_WORKER = """
import sys

from videodag_service.jobs import rq_task
from videodag_service.jobs.worker_command import main

rq_task.run_again_pause = lambda ended_attempt: {seconds!r}
sys.exit(main(sys.argv[1:]))
"""


def subprocess_environment(site_dir: Path) -> dict[str, str]:
    """The test process's import path (including any overlay), plus the test plugin."""
    paths = [str(site_dir), *(p for p in sys.path if p and Path(p).is_dir())]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


class RqWorker:
    """One `videodag-worker` process, or with `rq_command_line` the `rq worker` the README also
    describes (in its own process group, so its work horse dies with it). `run_again_pause`: the
    pause, in seconds, of its work horses before they hand a job queued again over."""

    def __init__(
        self, redis_url: str, environment: dict[str, str], log_path: Path, temp_dir: Path, *,
        rq_command_line: bool = False, log_format: str = "text", name: str | None = None,
        run_again_pause: float | None = None,
    ) -> None:
        assert not (rq_command_line and run_again_pause is not None), "a fixed pause is videodag-worker's only"
        self.temp_dir = temp_dir  # its TMPDIR, its own: what it leaves there is told from the rest
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # Heartbeats every second (RQ's default is 30 s), so an outage a test makes meets one.
        command = (
            [str(VENV_BIN / "rq"), "worker", "--url", redis_url, "--serializer", "json", "--job-monitoring-interval",
             "1", "--worker-class", "videodag_service.jobs.rq_task.VideodagWorker", DEFAULT_QUEUE_NAME]
            if rq_command_line else
            [*([sys.executable, "-c", _FIXED_PAUSE_WORKER.format(seconds=run_again_pause)]
               if run_again_pause is not None else [str(VENV_BIN / "videodag-worker")]),
             "--redis-url", redis_url, "--heartbeat-seconds", "1", "--log-format", log_format,
             *(["--name", name] if name else [])]
        )
        self.process = subprocess.Popen(
            command,
            env={**environment, "TMPDIR": str(temp_dir)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_count(self, text: str) -> int:
        """How many times the worker's output (its log, RQ's and videodag's) says `text` so far."""
        return self.log_path.read_text(errors="replace").count(text)

    def wait_until_listening(self, timeout: float = 60.0) -> None:
        """Until the worker waits for jobs. Before that, RQ's command line reads Redis outside the
        worker's outage handling: a test's Redis outage meeting a worker slow to start (a loaded
        machine) ended it, and the jobs the test then submitted never ran."""
        deadline = time.monotonic() + timeout
        while not self.log_count("*** Listening on"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the RQ worker did not start: {self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Like a machine that dies: the worker and its work horse, at once, no cleanup.

        RQ puts each work horse in a session of its own, so it is found as a child first.
        """
        horses = child_pids(self.process.pid)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def child_pids(parent: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields.get("PPid", "0").strip()) == parent:
                children.append(int(status.parent.name))
    return children


SERVER_SCRIPT = [str(VENV_BIN / "videodag-server")]
SERVER_MODULE = [sys.executable, "-m", "videodag_service.server"]


class ServerProcess:
    """`videodag-server` (or `command`) as a child process, for tests that kill it mid-job."""

    def __init__(
        self, arguments: list[str], environment: dict[str, str], log_path: Path, command: list[str] = SERVER_SCRIPT
    ) -> None:
        self._log_path = log_path
        # Its own TMPDIR, removed in kill(): a server killed mid-job leaves its multiprocessing
        # folder there, not in the machine's. Short, as the forkserver's Unix socket goes in it.
        self._temp_dir = tempfile.mkdtemp(prefix="videodag-test-server-")
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*command, *arguments],
            env={**environment, "TMPDIR": self._temp_dir},
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.search(r"listening on .*:(\d+)", line)
        if match is None:
            self.kill()
            raise RuntimeError(f"videodag-server did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
        self.port = int(match.group(1))

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()
        shutil.rmtree(self._temp_dir, ignore_errors=True)


class JobsDeployment:
    """Servers and (for Redis) workers sharing one job backend, with helpers to start more."""

    def __init__(self, backend: str, root: Path, *, workers: int = 1, redis_tls: Path | None = None,
                 run_again_pause: float | None = None, **settings_overrides: Any) -> None:
        """`redis_tls`: the CA and certificate folder of a Redis that takes TLS only (`RedisServer`).
        `run_again_pause`: the workers' fixed pause before they hand a job queued again over."""
        self.backend = backend
        self.root = root
        self.pipeline_dir = write_pipeline_folder(root / "pipelines")
        self.dag = make_job_dag(self.pipeline_dir)
        self.site_dir = install_test_plugin(root / "site")
        self.environment = subprocess_environment(self.site_dir)
        self.redis: RedisServer | None = RedisServer(root / "redis", tls=redis_tls) if backend == "redis" else None
        self.run_again_pause = run_again_pause
        self.workers: list[RqWorker] = []
        self.servers: list[RunningServer] = []
        self.clients: list[VideodagClient] = []
        try:
            self._set_up(backend, workers, settings_overrides)
        except BaseException:  # settings refused, a worker not started: nothing left running
            self.close()
            raise

    def _set_up(self, backend: str, workers: int, settings_overrides: dict[str, Any]) -> None:
        self.settings = Settings(
            host="127.0.0.1",
            port=0,
            temp_dir=self.root / "tmp",
            data_dir=self.root / "data",
            pipeline_dir=self.pipeline_dir,
            job_backend=backend,
            redis_url=self.redis.url if self.redis else "redis://127.0.0.1:1/0",
            job_workers=workers,
            job_lease_seconds=3.0,
        )
        if settings_overrides:
            self.settings = replace(self.settings, **settings_overrides)
        if self.redis is not None:
            for _ in range(workers):
                self.start_worker()

    def start_server(self) -> VideodagClient:
        """A replica, once the workers started with the deployment wait for jobs."""
        running = start_server(self.settings, self.dag)
        self.servers.append(running)
        for worker in self.workers:
            worker.wait_until_listening()
        client = VideodagClient(f"127.0.0.1:{running.port}")
        self.clients.append(client)
        return client

    def start_worker(self, *, rq_command_line: bool = False) -> RqWorker:
        assert self.redis is not None
        name = f"worker{len(self.workers)}"
        worker = RqWorker(self.redis.url, self.environment, self.root / f"{name}.log", self.root / f"{name}-tmp",
                          rq_command_line=rq_command_line, run_again_pause=self.run_again_pause)
        self.workers.append(worker)
        return worker

    def stored_uploads(self) -> list[str]:
        uploads = self.settings.data_dir / "uploads"
        return sorted(p.name for p in uploads.iterdir() if p.is_file()) if uploads.is_dir() else []

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for running in self.servers:
            running.stop(0)
        for worker in self.workers:
            worker.stop()
        if self.redis is not None:
            self.redis.stop()


@contextmanager
def deployment(backend: str, root: Path, **options: Any) -> Iterator[JobsDeployment]:
    # The jobs' steps (handed to the workers, recovered) in a failed test's captured log.
    jobs_logger = logging.getLogger("videodag_service.jobs")
    level_before = jobs_logger.level
    jobs_logger.setLevel(min(logging.INFO, jobs_logger.getEffectiveLevel()))
    try:
        deployed = JobsDeployment(backend, root, **options)
        try:
            yield deployed
        except BaseException:
            # A failure in CI leaves no files to read afterwards: what the workers said goes into
            # the test's report (pytest shows a failed test's output).
            for worker in deployed.workers:
                print(f"--- the end of {worker.log_path.name}:\n{worker.log_path.read_text(errors='replace')[-6000:]}")
            raise
        finally:
            deployed.close()
    finally:
        jobs_logger.setLevel(level_before)


def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_for_job(client: VideodagClient, job_id: str, predicate: Callable[[Job], bool], *,
                 timeout: float = 30.0, what: str = "the job") -> Job:
    found: list[Job] = []

    def check() -> bool:
        job = client.get_job(job_id)
        found[:] = [job]
        return predicate(job)

    try:
        wait_until(check, timeout=timeout, what=what)
    except AssertionError as timed_out:
        last = found[0] if found else None
        seen = (f"{last.state.name}, attempt {last.attempt}, {last.frames_done} frame(s) done, error {last.error}"
                if last else "never read")
        raise AssertionError(f"{timed_out}; the job was last seen {seen}") from None
    return found[0]


def watch_all(client: VideodagClient, job_id: str, after: int | None = None) -> tuple[list[FrameResult], list[Job]]:
    """Every event of a watch to its end, split into frames and job updates."""
    frames: list[FrameResult] = []
    updates: list[Job] = []
    with client.watch_job(job_id, after_frame_index=after) as events:
        for event in events:
            (frames if isinstance(event, FrameResult) else updates).append(event)  # type: ignore[arg-type]
    return frames, updates


def finished(job: Job) -> bool:
    return job.state.is_finished


def is_running_with_frames(minimum: int) -> Callable[[Job], bool]:
    return lambda job: job.state is JobState.RUNNING and job.frames_done >= minimum
