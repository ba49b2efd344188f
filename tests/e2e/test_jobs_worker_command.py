"""`videodag-worker`, as operators run it beside replicas of the Redis backend: a real process
against a real redis-server, running jobs submitted to a real `videodag-server`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import redis
from jobs_harness import VENV_BIN, RqWorker, deployment, finished, wait_for_job, wait_until
from test_e2e_access_control import pki  # noqa: F401 - the CA and the certificate for 127.0.0.1

from fakes.logs import why_it_ended
from fakes.python_environment import NO_TEMPORARY_FOLDER, READ_ONLY_SHARED_MEMORY, environment_running
from fakes.redis_server import RedisServer
from videodag_client import JobState, RunOptions

WORKER = str(VENV_BIN / "videodag-worker")


def test_a_worker_started_while_redis_is_down_waits_and_runs_jobs_once_it_is_back(
    tmp_path: Path, sample_clip: Path
) -> None:
    """`rq worker` exits 1 when Redis is out of reach as it starts (a deployment's first start,
    a host rebooting with its Redis): this one waits, saying so in the server's log format."""
    with deployment("redis", tmp_path) as jobs:
        assert jobs.redis is not None
        client = jobs.start_server()
        jobs.workers[0].stop()  # the job must be this test's worker's
        jobs.redis.shut_down()
        try:
            worker = RqWorker(jobs.redis.url, jobs.environment, tmp_path / "worker.log", tmp_path / "worker-tmp",
                              log_format="json")
            jobs.workers.append(worker)
            wait_until(lambda: worker.log_count("the worker tries again in") >= 2 or worker.process.poll() is not None,
                       timeout=60, what="the worker waiting for Redis")
        finally:
            jobs.redis.start_again()
        assert worker.process.poll() is None, worker.log_path.read_text()
        worker.wait_until_listening()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        done = wait_for_job(client, job.id, finished, timeout=120)
        assert (done.state, done.frames_done) == (JobState.SUCCEEDED, 3), done.error
        lines = [json.loads(line) for line in worker.log_path.read_text().splitlines()]
        started, *waits = [line for line in lines if line["logger"] == "videodag_service.jobs.worker_command"]
        assert started["message"] == (
            f"videodag-worker {version('videodag')}: working the queue videodag-jobs of the Redis at "
            f"127.0.0.1:{jobs.redis.port}")
        assert waits[0]["level"] == "WARNING"
        assert waits[0]["message"].startswith(f"Redis at 127.0.0.1:{jobs.redis.port} is out of reach (ConnectionError")
        assert any(job.id in line["message"] for line in lines if line["logger"] == "rq.worker"), "RQ's own lines too"
        ran = [line["message"] for line in lines if line.get("request_id") == job.id]
        assert ran == [f"job {job.id} attempt 1 started: pipeline paced", f"job {job.id} succeeded: 3 frames"], (
            "the work horse's lines, with the job's id")


def test_jobs_run_through_a_redis_that_takes_tls_only(
    tmp_path: Path, pki: Path, sample_clip: Path  # noqa: F811 - the fixture imported above
) -> None:
    """Servers and workers given the CA in the URL (rediss://...?ssl_ca_certs=...), as the README says."""
    with deployment("redis", tmp_path, redis_tls=pki) as jobs:
        assert jobs.redis is not None and jobs.redis.url.startswith("rediss://")
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        done = wait_for_job(client, job.id, finished, timeout=120)
        assert (done.state, done.frames_done) == (JobState.SUCCEEDED, 3), done.error


def test_a_worker_that_cannot_verify_the_tls_certificate_of_redis_exits_1_naming_the_fix(
    tmp_path: Path, pki: Path  # noqa: F811 - the fixture imported above
) -> None:
    """It took the failure for an outage and tried again every 5 s, forever."""
    server = RedisServer(tmp_path / "redis", tls=pki)
    refused = _worker_run_against(server, f"rediss://127.0.0.1:{server.port}/0")
    assert refused.returncode == 1
    # OpenSSL's reason: the chain's self-signed CA, or its issuer not found, by version.
    assert re.fullmatch(
        rf"Redis at 127\.0\.0\.1:{server.port} has a TLS certificate the worker cannot verify "
        r"\([^)]*certificate[^)]*\); name the CA that signed it in the URL: "
        r"rediss://HOST:6379/0\?ssl_ca_certs=/path/to/ca\.pem", why_it_ended(refused.stderr)), refused.stderr
    assert "out of reach" not in refused.stderr, "not an outage to wait out"


def _worker_run_against(server: RedisServer, redis_url: str) -> subprocess.CompletedProcess[str]:
    """A worker's run against `server`, given `redis_url`; the server is stopped afterwards."""
    try:
        return subprocess.run([WORKER, "--redis-url", redis_url], capture_output=True, text=True, timeout=60)
    finally:
        server.stop()


def test_a_worker_whose_password_redis_refuses_exits_1_saying_so(tmp_path: Path) -> None:
    """Waiting would not change a refusal: the supervisor's restarts, and the message, tell the operator."""
    server = RedisServer(tmp_path)
    server.client.config_set("requirepass", "the-password")
    refused = _worker_run_against(server, f"redis://:not-the-password@127.0.0.1:{server.port}/0")
    assert refused.returncode == 1, refused.stderr
    last_line = why_it_ended(refused.stderr)
    assert last_line.startswith(
        f"Redis at 127.0.0.1:{server.port} refused the worker: AuthenticationError: ")
    assert last_line.endswith(
        "; a password goes in the URL (redis://:PASSWORD@HOST:6379/0), best given in VIDEODAG_REDIS_URL")
    assert "not-the-password" not in refused.stderr


def test_a_worker_whose_redis_user_may_not_run_rqs_commands_exits_1_saying_so(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.client.acl_setuser("limited", enabled=True, passwords=["+the-password"], keys=["*"], channels=["*"],
                              commands=["+@all", "-hset"])
    refused = _worker_run_against(server, f"redis://limited:the-password@127.0.0.1:{server.port}/0")
    assert refused.returncode == 1, refused.stderr
    assert f"Redis at 127.0.0.1:{server.port} refused the worker: NoPermissionError: " in refused.stderr
    assert "this user has no permissions to run the 'hset' command" in refused.stderr


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        (["--redis-url", "http://127.0.0.1:6379/0"], {},
         "--redis-url 'http://127.0.0.1:6379/0' cannot be used: Redis URL must specify"),
        # redis-py reads a password holding a `/` as the port, and quoted it in its reason; the
        # URL was given as a variable, not as the flag the message named.
        ([], {"VIDEODAG_REDIS_URL": "redis://:Sup3r/Secret@127.0.0.1:6379/0"},
         "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:6379/0' cannot be used: Port could not be cast to integer value "
         "as '***'"),
        (["--redis-url", "redis://:Sup3r/Secret@127.0.0.1:6379/0"], {"VIDEODAG_REDIS_URL": "redis://127.0.0.1:1/0"},
         "--redis-url 'redis://***@127.0.0.1:6379/0' cannot be used: Port could not be cast"),
        (["--heartbeat-seconds", "0"], {}, "argument --heartbeat-seconds: must be at least 1, got 0"),
        ([], {"VIDEODAG_LOG_FORMAT": "xml"}, "VIDEODAG_LOG_FORMAT must be one of json, text, got 'xml'"),
        ([], {"VIDEODAG_LOG_LEVEL": "warn"},
         "VIDEODAG_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'WARN'"),
    ],
)
def test_a_worker_given_what_it_cannot_use_exits_2_naming_it(
    arguments: list[str], environment: dict[str, str], message: str
) -> None:
    refused = subprocess.run([WORKER, *arguments], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", **environment})
    assert refused.returncode == 2
    assert f"videodag-worker: error: {message}" in refused.stderr
    assert "Sup3r" not in refused.stderr


def test_a_worker_started_while_redis_is_silent_tries_again_within_seconds(tmp_path: Path) -> None:
    """RQ gives the worker's connection a timeout of minutes (for its blocking wait for jobs): a
    Redis that said nothing (a partition, a paused host) held the start seven minutes, unlogged."""
    server = RedisServer(tmp_path / "redis")
    server.pause()
    worker = RqWorker(server.url, dict(os.environ), tmp_path / "worker.log", tmp_path / "worker-tmp")

    def gave_up_or_ended() -> bool:
        return worker.log_count("is out of reach (TimeoutError") >= 1 or worker.process.poll() is not None

    try:
        try:
            wait_until(gave_up_or_ended, timeout=60, what="the worker giving up on a silent Redis")
        finally:
            server.resume()
        worker.wait_until_listening()
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_told_to_stop_while_it_waits_for_redis_at_its_start_exits_0(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGTERM killed it (143), and Ctrl-C ended it 130: a supervisor stopping a fleet while its
    Redis was down counted failures."""
    server = RedisServer(tmp_path / "redis")
    server.shut_down()
    worker = RqWorker(server.url, dict(os.environ), tmp_path / "worker.log", tmp_path / "worker-tmp")
    try:
        wait_until(lambda: worker.log_count("the worker tries again in") >= 1 or worker.process.poll() is not None,
                   timeout=60, what="the worker waiting for Redis")
        worker.process.send_signal(stop)
        assert worker.process.wait(30) == 0, worker.log_path.read_text()
        assert worker.log_count(f"told to stop ({stop.name}) as it started: the worker took no job") == 1
    finally:
        worker.stop()
        server.stop()


def _stopped_as_redis_sees(server: RedisServer, tmp_path: Path, name: str, command: str, held: str) -> RqWorker:
    """A worker named `name`, sent SIGTERM as it starts: once Redis sees it send `command` (the
    start of a command, upper case), Redis holds its next ones (CLIENT PAUSE `held`), so the signal
    lands inside RQ's start, before RQ's own handlers are in place. Its exit status is 0. On a
    loaded machine the pause can come once RQ's handlers are in place, and RQ stops the worker
    (exit 0 as well): the start is tried again, up to 5 times, until the signal lands inside it."""
    for attempt in range(5):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        worker = _signalled_as_redis_sees(server, folder, name, command, held)
        try:
            assert worker.process.wait(30) == 0, worker.log_path.read_text()
        except BaseException:  # a worker that does not end is killed, not left running past the test
            worker.stop()
            raise
        if worker.log_count("told to stop (SIGTERM) as it started: the worker took no job") == 1:
            return worker
        worker.stop()
    raise AssertionError("in none of 5 attempts did the stop land inside RQ's start")


def _signalled_as_redis_sees(server: RedisServer, tmp_path: Path, name: str, command: str, held: str) -> RqWorker:
    """As `_stopped_as_redis_sees`, its exit left to the caller: on a loaded machine the pause can
    come after the worker's next command, which then goes through."""
    watcher = redis.Redis.from_url(server.url)
    try:
        with watcher.monitor() as commands:
            worker = RqWorker(server.url, dict(os.environ), tmp_path / "worker.log", tmp_path / "worker-tmp",
                              name=name)
            for seen in commands.listen():
                if seen["command"].upper().startswith(command):
                    server.client.execute_command("CLIENT", "PAUSE", "3000", held)
                    break
    finally:
        watcher.close()
    time.sleep(0.5)
    worker.process.send_signal(signal.SIGTERM)
    return worker


def test_a_worker_told_to_stop_as_rq_records_its_start_leaves_no_live_worker_behind(tmp_path: Path) -> None:
    """RQ records the worker (its birth) before it installs its signal handlers: stopped between
    the two (here as RQ subscribes), it had exited 0 leaving a record of a live worker for 8
    minutes, and a worker of the same --name on another host was refused meanwhile."""
    server = RedisServer(tmp_path / "redis")
    try:
        worker = _stopped_as_redis_sees(server, tmp_path, "starting", "SUBSCRIBE", "WRITE")
        worker.stop()
        assert not server.client.sismember("rq:workers", "rq:worker:starting"), worker.log_path.read_text()
        assert server.client.hget("rq:worker:starting", "death") is not None
    finally:
        server.stop()


def test_a_worker_told_to_stop_before_its_start_is_recorded_leaves_the_live_worker_of_its_name_alone(
    tmp_path: Path,
) -> None:
    """Stopped as it read the record of its --name, another host's live worker's: that record is not its own."""
    server = RedisServer(tmp_path / "redis")
    live = {"hostname": "other-host", "pid": "4242", "birth": "2026-01-01T00:00:00.000000Z", "state": "busy"}
    try:
        server.client.hset("rq:worker:shared", mapping=live)
        server.client.sadd("rq:workers", "rq:worker:shared")
        for attempt in range(5):
            folder = tmp_path / f"attempt-{attempt}"
            folder.mkdir()
            worker = _signalled_as_redis_sees(server, folder, "shared", "HMGET RQ:WORKER:SHARED", "ALL")
            try:
                ended = worker.process.wait(30)
            finally:  # a worker that does not end is killed, not left running past the test
                worker.stop()
            assert server.client.sismember("rq:workers", "rq:worker:shared"), "still a live worker"
            assert server.client.hgetall("rq:worker:shared") == live
            if ended == 0:
                break
            # The pause came too late: the worker read the live record and refused the name first.
            assert "There exists an active worker named 'shared' already" in worker.log_path.read_text()
        assert ended == 0, "in none of 5 attempts did the stop reach the worker inside RQ's start"
        assert worker.log_count("told to stop (SIGTERM) as it started: the worker took no job") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_told_to_stop_while_it_waits_for_jobs_exits_0(tmp_path: Path, stop: signal.Signals) -> None:
    server = RedisServer(tmp_path / "redis")
    worker = RqWorker(server.url, dict(os.environ), tmp_path / "worker.log", tmp_path / "worker-tmp")
    try:
        worker.wait_until_listening()
        worker.process.send_signal(stop)
        assert worker.process.wait(30) == 0
    finally:
        worker.stop()
        server.stop()


def test_a_worker_told_to_stop_after_redis_went_away_exits_0_without_a_traceback(tmp_path: Path) -> None:
    """RQ's teardown unsubscribes from the worker's command channel first: with Redis gone that
    raised, and the worker exited 1 with four tracebacks, a failure to its supervisor."""
    server = RedisServer(tmp_path / "redis")
    worker = RqWorker(server.url, dict(os.environ), tmp_path / "worker.log", tmp_path / "worker-tmp")
    try:
        worker.wait_until_listening()
        server.shut_down()
        wait_until(lambda: worker.log_count("could not connect to Redis instance") >= 1,
                   what="the worker's listener noticing the outage")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0
        assert worker.log_count("Traceback") == 0
        assert worker.log_count("Redis is out of reach (ConnectionError: ") >= 1
        assert worker.log_count("it stops listening without unsubscribing") == 1
    finally:
        worker.stop()
        server.stop()


def test_a_worker_whose_wait_for_jobs_redis_refuses_exits_1_for_its_supervisor(tmp_path: Path) -> None:
    """RQ's loop quits on an error it does not handle and returns as for a stop: the worker
    exited 0, and a supervisor restarting failed workers only left it down."""
    server = RedisServer(tmp_path)
    server.client.acl_setuser("unblocking", enabled=True, passwords=["+the-password"], keys=["*"], channels=["*"],
                              commands=["+@all", "-@blocking"])
    ended = _worker_run_against(server, f"redis://unblocking:the-password@127.0.0.1:{server.port}/0")
    assert ended.returncode == 1
    assert "NoPermissionError" in ended.stderr
    assert why_it_ended(ended.stderr) == "stopped by an error (see the log above)"


def test_a_name_a_live_worker_holds_is_refused_and_one_a_killed_worker_held_is_taken_again(tmp_path: Path) -> None:
    """A fixed name (--name) restarted after kill -9 (the out-of-memory killer) was refused until
    RQ's record of the dead worker expired, eight minutes later; a live one's, with a traceback."""
    server = RedisServer(tmp_path / "redis")
    workers: list[RqWorker] = []
    try:
        first = RqWorker(server.url, dict(os.environ), tmp_path / "first.log", tmp_path / "first-tmp", name="twin")
        workers.append(first)
        first.wait_until_listening()
        twin = subprocess.run([WORKER, "--redis-url", server.url, "--name", "twin"], capture_output=True, text=True,
                              timeout=60)
        assert twin.returncode == 1
        assert why_it_ended(twin.stderr) == (
            "cannot start: There exists an active worker named 'twin' already")
        assert "Traceback" not in twin.stderr
        first.kill()
        again = RqWorker(server.url, dict(os.environ), tmp_path / "again.log", tmp_path / "again-tmp", name="twin")
        workers.append(again)
        again.wait_until_listening()
        assert server.client.smembers("rq:workers") == {"rq:worker:twin"}
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


@pytest.mark.parametrize(
    ("trouble", "said"),
    [
        (NO_TEMPORARY_FOLDER, "no temporary folder is writable (No usable temporary directory found in "
                              "['/nonexistent/videodag-test']), and each job's decoder processes start from a socket "
                              "in one: set TMPDIR to a writable folder"),
        (READ_ONLY_SHARED_MEMORY, "decoder processes cannot hand frames over: no shared memory can be made in "
                                  "/dev/shm (Read-only file system)"),
    ],
    ids=["no temporary folder", "read-only shared memory"],
)
def test_a_worker_on_a_machine_where_no_decoder_could_run_refuses_to_start(
    tmp_path: Path, trouble: str, said: str
) -> None:
    """Found by the first job, it failed each job the worker took, one after the other."""
    refused = subprocess.run([WORKER, "--redis-url", "redis://127.0.0.1:1/0"], capture_output=True, text=True,
                             timeout=60, env=environment_running(tmp_path, trouble))
    assert refused.returncode == 1
    assert why_it_ended(refused.stderr).startswith(f"cannot start: {said}")
