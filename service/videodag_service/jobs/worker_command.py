"""`videodag-worker`: an RQ worker for the redis job backend, set up for videodag's queue.

`rq worker` runs the same worker when told the queue, the serializer and the worker class, but
it reads Redis before the worker exists, outside its outage handling: started while Redis is
out of reach (a deployment's first start, a host rebooting with its Redis), it exits 1. This
command needs only the Redis URL and waits for Redis to answer, so a worker started before its
Redis, or during an outage, starts serving once Redis is back. Its log lines are the server's
(`--log-format`, `--log-level`), its work horses' included.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from importlib.metadata import version

import redis
from rq.serializers import JSONSerializer

from videodag_service.jobs.defaults import DEFAULT_QUEUE_NAME, DEFAULT_REDIS_URL
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.redis_urls import redis_reason_without_secrets, redis_url_problem
from videodag_service.jobs.rq_task import VideodagWorker
from videodag_service.observability.logging import configure_logging, log_stray_output, say_why_it_ends
from videodag_service.video.frame_ring import shared_memory_problem

logger = logging.getLogger(__name__)
# The logger of the line saying why the worker ends: its module's name, run as `python -m` too.
_ENDING_LOGGER = "videodag_service.jobs.worker_command"

_REDIS_URL_VARIABLE = "VIDEODAG_REDIS_URL"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("json", "text")
# A Redis host that drops packets would hold each try for the kernel's minutes-long connect timeout.
_CONNECT_TIMEOUT_SECONDS = 5.0
_MAX_WAIT_SECONDS = VideodagWorker.max_connection_wait_time
# Redis answered and said no (a password, an ACL user's permissions): waiting would not change it.
_REFUSALS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.ResponseError)


def build_parser() -> argparse.ArgumentParser:
    """The `videodag-worker` argument parser; flags fall back on the server's environment variables."""
    parser = argparse.ArgumentParser(
        prog="videodag-worker",
        description=(
            "Run the jobs of a videodag-server started with --job-backend redis: an RQ worker on its queue "
            f"({DEFAULT_QUEUE_NAME}) that waits for Redis to answer, at its start as after an outage. "
            "Run one or more, on any machine that sees the servers' --data-dir."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('videodag')}")
    parser.add_argument(
        "--redis-url", default=None,
        help="the Redis the servers' --redis-url names; one with a password is best given in the environment, "
             f"out of sight of other users [env VIDEODAG_REDIS_URL; default {DEFAULT_REDIS_URL}]",
    )
    parser.add_argument("--name", help="the worker's name in Redis (RQ's); unique by default")
    parser.add_argument(
        "--heartbeat-seconds", type=_positive_int, default=30,
        help="how often a worker running a job renews RQ's record of it (RQ's job monitoring interval) [default 30]",
    )
    parser.add_argument(
        "--log-level", type=str.upper, choices=_LOG_LEVELS,
        default=(os.environ.get("VIDEODAG_LOG_LEVEL") or "INFO").upper(),  # empty means unset, as for the server
        help="[env VIDEODAG_LOG_LEVEL; default INFO]",
    )
    parser.add_argument(
        "--log-format", choices=_LOG_FORMATS, default=os.environ.get("VIDEODAG_LOG_FORMAT") or "json",
        help="json (one object per line) or text [env VIDEODAG_LOG_FORMAT; default json]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for Redis, then work the queue until told to stop (SIGTERM or SIGINT: the job under
    way is finished first). Exit 1 if Redis refuses the worker (a password, a permission, a TLS
    certificate it cannot verify)."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    for variable, value, allowed in (("VIDEODAG_LOG_LEVEL", arguments.log_level, _LOG_LEVELS),
                                     ("VIDEODAG_LOG_FORMAT", arguments.log_format, _LOG_FORMATS)):
        if value not in allowed:  # from the environment, which argparse does not check: named as the server names it
            parser.error(f"{variable} must be one of {', '.join(allowed)}, got {value!r}")
    redis_url, given_as = _redis_url(arguments.redis_url)
    if (problem := redis_url_problem(redis_url)) is not None:
        parser.error(f"{given_as} {problem}")
    configure_logging(arguments.log_level, json_lines=arguments.log_format == "json", forks=True)
    log_stray_output()
    try:
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS)
        probe = redis.Redis.from_url(redis_url, socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                                     socket_timeout=_CONNECT_TIMEOUT_SECONDS)
    except ValueError as error:  # redis-py's word for a URL it cannot read past its form (a setting's value)
        parser.error(f"{given_as} cannot be used: {redis_reason_without_secrets(str(error), redis_url)}")
    if (problem := _machine_problem()) is not None:
        say_why_it_ends("videodag-worker", f"cannot start: {problem}", _ENDING_LOGGER)
        return 1
    # Workers of two releases share a queue during an upgrade: the log tells them apart.
    logger.info("videodag-worker %s: working the queue %s of the Redis at %s", version("videodag"), DEFAULT_QUEUE_NAME,
                _address(connection))
    worker: VideodagWorker | None = None
    try:
        stops = _stop_on_signals()
        worker = _worker_once_redis_answers(connection, probe, arguments.name, arguments.heartbeat_seconds)
        worker.stops_before_its_handlers = stops
        worker.work(logging_level=arguments.log_level)
    except _ToldToStop as told:
        if worker is not None:  # stopped in RQ's start, which records the worker before its handlers are in place
            _record_death(worker)
        logger.info("told to stop (%s) as it started: the worker took no job", told)
        return 0
    except _CertificateRefused as error:
        say_why_it_ends("videodag-worker", f"Redis at {_address(connection)} has a TLS certificate the worker cannot "
                        f"verify ({error}); name the CA that signed it in the URL: "
                        "rediss://HOST:6379/0?ssl_ca_certs=/path/to/ca.pem", _ENDING_LOGGER)
        return 1
    except _REFUSALS as error:
        hint = ("; a password goes in the URL (redis://:PASSWORD@HOST:6379/0), best given in VIDEODAG_REDIS_URL"
                if isinstance(error, redis.exceptions.AuthenticationError) else "")
        reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
        refusal = f"Redis at {_address(connection)} refused the worker: {reason}{hint}"
        say_why_it_ends("videodag-worker", refusal, _ENDING_LOGGER)
        return 1
    except ValueError as error:  # RQ's refusal of a name a live worker has (--name)
        say_why_it_ends("videodag-worker", f"cannot start: {error}", _ENDING_LOGGER)
        return 1
    if worker._shutdown_requested_date is None:  # set by RQ as it is told to stop, idle or busy
        # RQ's loop quits on an error it does not handle (logged above it), and returns as for
        # a stop: a supervisor restarting only a failed worker must see a failure.
        say_why_it_ends("videodag-worker", "stopped by an error (see the log above)", _ENDING_LOGGER)
        return 1
    return 0


def _redis_url(flag_value: str | None) -> tuple[str, str]:
    """The Redis URL, and how it was given: a worker configured by variables (a container) is
    told of VIDEODAG_REDIS_URL, not of a flag it never wrote."""
    if flag_value is not None:
        return flag_value, "--redis-url"
    if os.environ.get(_REDIS_URL_VARIABLE):  # empty means unset, as for the server's variables
        return os.environ[_REDIS_URL_VARIABLE], _REDIS_URL_VARIABLE
    return DEFAULT_REDIS_URL, "--redis-url"


class _CertificateRefused(Exception):
    """Redis's TLS certificate failed verification: no wait changes that (a CA not named, a
    certificate for another name or expired), where an outage passes."""


class _ToldToStop(BaseException):
    """SIGTERM or SIGINT while the worker waits for Redis at its start, before RQ's own handlers
    are in place: a stop like any other, no job taken (SIGTERM had killed the process, 143).
    Not an Exception, as KeyboardInterrupt is not: raised where the signal lands, inside a log
    handler's write or a library's `except Exception`, it was swallowed there, and the worker
    went on to work the queue, deaf to the one SIGTERM its supervisor sent."""


def _stop_on_signals() -> list[int]:
    """Until RQ's worker installs its own handlers, as its work begins, SIGTERM and SIGINT raise
    _ToldToStop. Each is also kept in the list returned: one landing in a finaliser (`__del__`),
    whose exceptions Python only prints, is acted on once RQ's handlers are in place."""
    received: list[int] = []

    def stop(signal_number: int, frame: object) -> None:
        received.append(signal_number)
        raise _ToldToStop(signal.Signals(signal_number).name)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    return received


def _record_death(worker: VideodagWorker) -> None:
    """Take the worker's record out of Redis's list of live workers, as RQ does as it stops: left,
    it stood for a live worker for minutes, and a worker started under the same --name on
    another host was refused meanwhile. Only a record this process made: stopped before its
    birth was recorded, the record of its --name is another worker's, live. Redis out of reach:
    the record expires by itself."""
    with suppress(redis.RedisError, _ToldToStop):
        recorded = worker.connection.hmget(worker.key, ["hostname", "pid"])
        if [value.decode() if isinstance(value, bytes) else value for value in recorded] == [
                worker.hostname, str(worker.pid)]:
            worker.register_death()


def _machine_problem() -> str | None:
    """What keeps this machine from running any job's decoders, found before a job is taken:
    found by the first job, it failed each job the worker took, one after the other."""
    try:
        tempfile.gettempdir()
    except FileNotFoundError as error:
        return (f"no temporary folder is writable ({error.strerror}), and each job's decoder processes start "
                "from a socket in one: set TMPDIR to a writable folder")
    return shared_memory_problem()


def _worker_once_redis_answers(
    connection: redis.Redis, probe: redis.Redis, name: str | None, heartbeat_seconds: int
) -> VideodagWorker:
    """A worker on videodag's queue, made once Redis answers. It is asked first on `probe`, a
    connection that gives up after seconds: RQ gives the worker's own a timeout of minutes (for
    its blocking wait for jobs), and a silent Redis (a partition, a paused host) held the start
    that long. A refusal rather than an outage is raised at once."""
    wait_seconds = 1.0
    while True:
        try:
            probe.ping()
            return VideodagWorker(
                [DEFAULT_QUEUE_NAME], name=name, connection=connection, serializer=JSONSerializer,
                job_monitoring_interval=heartbeat_seconds,
            )
        except _REFUSALS:
            raise
        except RedisJobStore.outage_errors as error:
            if isinstance(failed := error.__cause__, ssl.SSLCertVerificationError):
                raise _CertificateRefused(failed.verify_message or str(failed)) from error
            logger.warning("Redis at %s is out of reach (%s: %s); the worker tries again in %.0f s",
                           _address(connection), type(error).__name__, error, wait_seconds)
        finally:
            probe.connection_pool.disconnect()
        connection.connection_pool.disconnect()
        time.sleep(wait_seconds)
        wait_seconds = min(wait_seconds * 2, _MAX_WAIT_SECONDS)


def _address(connection: redis.Redis) -> str:
    """Where Redis is, without the URL's password."""
    settings = connection.connection_pool.connection_kwargs
    if "path" in settings:
        return str(settings["path"])
    return f"{settings.get('host', 'localhost')}:{settings.get('port', 6379)}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
