"""Server settings: one frozen dataclass, and the checks a value must pass to start a server.

Each field declares its help text and its bounds in one place; its type says what a flag's
text converts to and, for a Literal, the words it accepts. `server_arguments` fills it from
flags, then environment variables (VIDEODAG_<NAME>), then these defaults, so a bad value
stops the server at start with a message naming the setting as it was given.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from videodag_service.disk_space import MIB
from videodag_service.jobs.defaults import (
    DEFAULT_JOB_TIMEOUT_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_QUEUED_JOBS,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_REDIS_URL,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_WORKERS,
)
from videodag_service.jobs.redis_urls import redis_url_problem
from videodag_service.video import Isolation, VideoLimits

ENV_PREFIX = "VIDEODAG_"


def _setting(
    default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
    least_when_on: float | None = None,
) -> Any:
    """`least_when_on`: for a setting that 0 turns off, the least value that leaves it on. Below
    it a limit fails every call (a result read limit of 1e-6 s cancels each run at its first
    result) with nothing to say why."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum,
                                            "least_when_on": least_when_on})


_MAX_PORT = 65535
# gRPC keeps message sizes in a C int.
_MAX_INT32 = 2**31 - 1
# And its keepalive times, in milliseconds: at most 24 days.
_MAX_GRPC_SECONDS = _MAX_INT32 // 1000
# Frame workers (a thread and node instances each, a detector's network among them) and job
# workers (a thread and a decoder each): more than any machine runs at once, and far fewer than
# the threads a huge value built before failing, a minute later, with MemoryError.
_MAX_FRAME_WORKERS = 64
_MAX_JOB_WORKERS = 256
# Settings that turn protection on. A flag given empty (`--token-file "$TOKEN_FILE"` with the
# variable unset) is an error, not "off": the server would fail open. An empty environment
# variable means unset, as for every setting (compose files write `${VIDEODAG_TOKENS:-}`),
# and the server warns when it then serves unprotected (`unprotected_by_empty_variables`).
PROTECTING_SETTINGS = ("token_file", "tokens", "tls_cert_file", "tls_key_file", "tls_client_ca_file")


# The longest time a setting gives (every float setting is seconds): about 31 years, within
# what a protobuf Timestamp holds from now and what a thread's wait accepts; a longer one,
# inf included ("never"), is taken as this.
MAX_SECONDS = 1e9

# Room a FrameResult message needs around its result (index, timestamp, the event around it).
RESULT_ENVELOPE_BYTES = 1024
# The largest message a gRPC client receives unless it is told otherwise.
CLIENT_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024
# A chunk message of the videodag client's and CLI's default size, 256 KiB, with its field's tag and length.
CLIENT_DEFAULT_CHUNK_MESSAGE_BYTES = 256 * 1024 + 4

LogFormat = Literal["json", "text"]
Tracing = Literal["off", "otel"]
JobBackendName = Literal["embedded", "redis"]
"""The values of `jobs.JobBackend`, as a flag or variable gives them."""


def _system_temp_folder() -> Path:
    """Where the defaults of the folders go. With no usable temporary folder (a read-only root
    filesystem, TMPDIR unset) it is the usual one, which a server left to use it cannot write,
    and says so at its start: Python's search for a usable one failed at import, `--help` too."""
    try:
        return Path(tempfile.gettempdir())
    except FileNotFoundError:
        return Path(os.environ.get("TMPDIR") or "/tmp")


@dataclass(frozen=True)
class Settings:
    """Everything a server needs to start; see `videodag-server --help`."""

    host: str = _setting("127.0.0.1", "address to listen on: 0.0.0.0 or :: for all, IPv4 and IPv6")
    port: int = _setting(50051, "TCP port to listen on (0 picks a free one)", minimum=0, maximum=_MAX_PORT)
    pipeline_dir: Path | None = _setting(None, "folder of pipeline files (default: the built-in pipelines)")
    temp_dir: Path = _setting(
        _system_temp_folder() / "videodag", "private folder for uploaded videos while they run"
    )
    max_upload_bytes: int = _setting(4096 * MIB, "largest video accepted, in bytes", minimum=1)
    max_message_bytes: int = _setting(
        8 * MIB, "largest gRPC message accepted, in bytes (a chunk plus framing)", minimum=64 * 1024,
        maximum=_MAX_INT32,
    )
    max_concurrent_runs: int = _setting(
        4, "runs at once; the next callers wait in line (--max-waiting-runs), then get RESOURCE_EXHAUSTED", minimum=1
    )
    max_waiting_runs: int = _setting(
        16, "UploadAndRun calls waiting in line for a run slot, first come first served (each holds a server "
        "thread); the next gets RESOURCE_EXHAUSTED at once; 0 refuses every call that finds no free slot",
        minimum=0,
    )
    run_wait_seconds: float = _setting(
        30.0, "how long a call waits in line for a run slot, from its start, before RESOURCE_EXHAUSTED "
        "TOO_MANY_RUNS", minimum=0.0,
    )
    max_job_watches: int = _setting(
        64, "WatchJob streams open at once (each holds a server thread); the next gets RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_health_watches: int = _setting(
        64, "health Watch streams open at once (they need no token, as every health call, and each holds a server "
        "thread); the next gets UNIMPLEMENTED, which gRPC's client-side health checking takes as 'healthy, not "
        "watched'", minimum=1,
    )
    max_reflection_streams: int = _setting(
        16, "server reflection streams open at once (grpcurl opens one a command, grpcui one a session, each "
        "kept until it ends or has asked nothing for --reflection-idle-timeout-seconds; each holds a server "
        "thread); the next gets RESOURCE_EXHAUSTED", minimum=1,
    )
    reflection_idle_timeout_seconds: float = _setting(
        3.0, "longest a server reflection stream may go without a request before the server ends it (status "
        "OK), freeing its slot and thread: grpcurl and grpcui keep theirs open for a whole command or session, "
        "and open another when they ask again; 0 turns it off, else at least 0.5", minimum=0, least_when_on=0.5,
    )
    max_job_uploads: int = _setting(
        16, "SubmitJob uploads arriving at once (each holds a server thread); the next gets RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_frame_width: int = _setting(
        7680, "with --max-frame-height, the largest frame accepted, in pixels, either way round: a portrait frame "
        "fits when it fits turned (2160x3840 within 3840x2160)", minimum=1,
    )
    max_frame_height: int = _setting(4320, "see --max-frame-width", minimum=1)
    max_video_frames: int = _setting(
        1_000_000, "most frames a video may have: refused before decoding when it declares more, and stopped "
        "when it decodes more (a count estimated from the duration, as every format but MP4, MOV and AVI gives "
        "it, is no declaration: such a file is stopped as its frames are decoded)", minimum=1
    )
    max_video_seconds: float = _setting(
        6 * 3600.0, "longest video accepted, in seconds: refused before decoding when it declares more, and "
        "stopped at a frame past it (a duration made of an estimated count, as for --max-video-frames, is no "
        "declaration)", minimum=0.001
    )
    node_timeout_seconds: float = _setting(
        60.0, "longest one pipeline node may take on one frame, or to open for a run; over it the run fails "
        "(INTERNAL); 0 turns it off; "
        "tools that promise a bounded time (stats.frame_stats) are not limited",
        minimum=0,
    )
    frame_workers: int = _setting(
        0, "frames a run's frame-independent nodes (a detector, not a tracker) work on at once, each with an "
        "instance of its own, up to 64; 0: one per core the server may use (its CPU quota counts), at most 8",
        minimum=0, maximum=_MAX_FRAME_WORKERS,
    )
    decode_isolation: Isolation = _setting(
        "process",
        "where uploaded videos are decoded: process (a decoder process per run: a decoder crash or hang fails "
        "that run only) or thread (inside the server: a little faster, unprotected)",
    )
    decode_frame_timeout_seconds: float = _setting(
        10.0, "process isolation: longest the decoder may go without progress (the probe, a frame, or frames it "
        "skips) before it is killed and the run fails (DEADLINE_EXCEEDED); 0 turns it off", minimum=0,
    )
    decode_run_timeout_seconds: float = _setting(
        6 * 3600.0, "process isolation: longest a run may wait for its decoder in total, pipeline time not "
        "counted, before it is killed and the run fails (DEADLINE_EXCEEDED); 0 turns it off", minimum=0,
    )
    upload_idle_timeout_seconds: float = _setting(
        60.0, "longest an upload may send no config or no bytes (UploadAndRun, SubmitJob) before the call fails "
        "(DEADLINE_EXCEEDED) and its slot and file are freed; 0 turns it off", minimum=0,
    )
    upload_min_bytes_per_second: int = _setting(
        1024, "least an upload must send on average (UploadAndRun, SubmitJob): each byte buys 1/rate s of "
        "waiting, up to --upload-idle-timeout-seconds, and an upload that runs out fails as an idle one; a client "
        "trickling a byte at a time would otherwise hold its slot for good; 0 turns it off, and so does an idle "
        "limit of 0", minimum=0,
    )
    result_read_timeout_seconds: float = _setting(
        600.0, "longest gRPC may wait to hand a client one more result (UploadAndRun, WatchJob) before the call is "
        "cancelled and what it holds (a run slot, a decoder) is freed; 0 turns it off. A client that reads slowly "
        "frees gRPC's buffers in batches: keep this well above the time it takes to read what they hold; at least 1",
        minimum=0, least_when_on=1.0,
    )
    keepalive_interval_seconds: float = _setting(
        30.0, "how often the server pings each connection: a load balancer keeps a quiet stream's connection, "
        "and a client that went away without a word is found by the answer it does not send. Keep it below the "
        "idle limit of any proxy in front (60 s in nginx's grpc_read_timeout and AWS's load balancers), which "
        "otherwise resets a stream that sends nothing for that long",
        minimum=1, maximum=_MAX_GRPC_SECONDS,
    )
    keepalive_timeout_seconds: float = _setting(
        120.0, "longest the server waits for a ping's answer before it closes the connection, failing its calls "
        "(UNAVAILABLE): how long a client paused whole (a debugger, a frozen VM) or cut off without a word keeps "
        "what its calls hold. The answer queues behind what the client's link holds (seconds of data on a slow "
        "uplink with deep buffers): keep it well above that",
        minimum=1, maximum=_MAX_GRPC_SECONDS,
    )
    max_connection_age_seconds: float = _setting(
        0.0, "after this long a connection is asked to end (HTTP/2 GOAWAY): its calls go on to their end, and the "
        "client's next calls go down a new connection, which a balancer behind one address (a Kubernetes Service, "
        "an L4 load balancer) may give to another replica, one started since, say. 0 keeps connections as long as "
        "clients do, else at least 1",
        minimum=0, maximum=_MAX_GRPC_SECONDS, least_when_on=1.0,
    )
    shutdown_grace_seconds: float = _setting(
        20.0, "on SIGTERM, SIGHUP or SIGINT, how long the runs, job uploads and jobs in progress may finish before "
        "they are cancelled (jobs are queued again)", minimum=0
    )
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = _setting("json", "json (one object per line, with the request id) or text")
    metrics_port: int = _setting(
        0, "port of the Prometheus /metrics endpoint on --host; 0 turns it off", minimum=0, maximum=_MAX_PORT
    )
    tracing: Tracing = _setting("off", "off, or otel: an OpenTelemetry span per call, sent as the OTEL_* variables say "
                            "(needs the 'tracing' extra)")
    tls_cert_file: Path | None = _setting(None, "PEM certificate chain: serve TLS instead of plaintext")
    tls_key_file: Path | None = _setting(None, "PEM private key of --tls-cert-file")
    tls_client_ca_file: Path | None = _setting(
        None, "PEM CA bundle: require client certificates it signed (mutual TLS)"
    )
    token_file: Path | None = _setting(
        None, "file of accepted bearer tokens, one per line (lines starting with # are comments): calls without "
        "one get UNAUTHENTICATED"
    )
    tokens: str = _setting("", "accepted bearer tokens, comma-separated (prefer the environment to the flag)")
    job_backend: JobBackendName = _setting(
        "embedded", "where jobs live: embedded (SQLite and worker threads in this server) or redis (Redis + RQ workers)"
    )
    data_dir: Path = _setting(
        _system_temp_folder() / "videodag-data",
        "jobs' database, uploads and results (embedded); with redis, the uploads, on a path every RQ worker sees",
    )
    redis_url: str = _setting(DEFAULT_REDIS_URL, "the Redis of the redis job backend")
    job_workers: int = _setting(
        DEFAULT_WORKERS, "embedded job backend: jobs run at once, 1 to 256", minimum=1, maximum=_MAX_JOB_WORKERS,
    )
    job_min_free_bytes: int = _setting(
        DEFAULT_MIN_FREE_BYTES,
        "free space, in bytes, SubmitJob uploads must leave on the disk of --data-dir, for the jobs' "
        "results and records: an upload that would leave less is refused (RESOURCE_EXHAUSTED, reason DISK_FULL), "
        "counting its declared size and what the uploads in progress declared and have still to send; one without "
        "a declared size is checked again at every chunk as it arrives; 0 turns the check off", minimum=0,
    )
    job_retention_seconds: float = _setting(
        DEFAULT_RETENTION_SECONDS,
        "how long finished jobs and their results are kept (a job's video is deleted as soon as it is finished)",
        minimum=0,
    )
    job_timeout_seconds: float = _setting(
        DEFAULT_JOB_TIMEOUT_SECONDS, "longest a job may run; then it FAILS with DEADLINE_EXCEEDED", minimum=1
    )
    max_queued_jobs: int = _setting(
        DEFAULT_MAX_QUEUED_JOBS, "jobs waiting for a worker past which SubmitJob refuses new ones "
        "(RESOURCE_EXHAUSTED, reason TOO_MANY_QUEUED_JOBS, with a retry hint); 0: no cap", minimum=0,
    )
    job_lease_seconds: float = _setting(
        DEFAULT_LEASE_SECONDS, "redis job backend: a job whose worker is silent this long runs again on another",
        minimum=1,
    )

    def __post_init__(self) -> None:
        self._check_value_types()
        self._check_host()
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError.of_setting("log_level",
                                           f"must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        for item in fields(self):
            minimum = item.metadata.get("minimum")
            value = getattr(self, item.name)
            if value_type(item.name) is float and isinstance(value, int | float) and not isinstance(value, bool):
                if math.isnan(value):
                    raise SettingsError.of_setting(item.name, f"must be a number of seconds, got {value}")
                if value > MAX_SECONDS:
                    # No Timestamp holds an expiry past year 9999 (inf, or 1e12 s, as a retention), and
                    # 31 years still means "no limit" for a time limit.
                    object.__setattr__(self, item.name, MAX_SECONDS)
                    value = MAX_SECONDS
            if minimum is not None and value < minimum:
                raise SettingsError.of_setting(item.name, f"must be at least {minimum}, got {value}")
            maximum = item.metadata.get("maximum")
            if maximum is not None and value > maximum:
                raise SettingsError.of_setting(item.name, f"must be at most {maximum}, got {value}")
            least_when_on = item.metadata.get("least_when_on")
            if least_when_on is not None and 0 < value < least_when_on:
                raise SettingsError.of_setting(item.name, f"must be 0 (off) or at least {least_when_on}, got {value}")
        if self.metrics_port and self.metrics_port == self.port:
            # Both listen on --host: the second to bind would fail as if another process held the port.
            raise SettingsError.of_setting("metrics_port", f"must differ from the gRPC port: both are {self.port}")
        for item in fields(self):  # the words a Literal setting accepts
            kind, value = value_type(item.name), getattr(self, item.name)
            if get_origin(kind) is Literal and value not in get_args(kind):
                raise SettingsError.of_setting(item.name, f"must be {' or '.join(get_args(kind))}, got {value!r}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError("--tls-cert-file and --tls-key-file (or their variables) go together: give both or "
                                "neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file (or their "
                                "variables)")
        for name in ("temp_dir", "data_dir"):
            if not _opencv_can_open_under(getattr(self, name)):
                raise SettingsError.of_setting(
                    name, f"{str(getattr(self, name))!r}: OpenCV opens videos by their path written in UTF-8, "
                          f"which is not how this path is written on disk (file names here are "
                          f"{sys.getfilesystemencoding()}): every video would be unreadable; choose a path in ASCII")
        if self.job_backend == "redis" and (problem := redis_url_problem(self.redis_url)) is not None:
            # Found as the job store opened, it was named --redis-url in a container given VIDEODAG_REDIS_URL.
            raise SettingsError.of_setting("redis_url", problem)
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "token_file", "pipeline_dir"):
            path = getattr(self, name)
            if path is not None and not path.exists():
                raise SettingsError.of_setting(name, f"{str(path)!r} does not exist")

    def _check_value_types(self) -> None:
        """Refuse a value of the wrong kind from Python, where no flag converts it: `port=True` was
        port 1, `max_queued_jobs=1.5` a cap no count meets, and `port="80"` a TypeError from a
        comparison. A folder given as text is taken as its path, as `open()` takes it."""
        for item in fields(self):
            kind, value = value_type(item.name), getattr(self, item.name)
            if value is None and item.default is None:
                continue
            if kind is Path and isinstance(value, str | os.PathLike) and not isinstance(value, bytes) and str(value):
                object.__setattr__(self, item.name, Path(value))  # "" would be ".", the folder the server started in
            elif kind is Path:
                raise SettingsError.of_setting(item.name, f"must be a path, got {value!r}")
            elif kind is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise SettingsError.of_setting(item.name, f"must be a whole number, got {value!r}")
            elif kind is float and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise SettingsError.of_setting(item.name, f"must be a number, got {value!r}")
            elif (kind is str or get_origin(kind) is Literal) and not isinstance(value, str):
                raise SettingsError.of_setting(item.name, f"must be text, got {value!r}")

    def max_response_bytes(self) -> int:
        """The largest message the server sends: one any client can receive (gRPC's clients take
        4 MiB by default, the Python, Go and Node ones and grpcurl alike)."""
        return min(self.max_message_bytes, CLIENT_DEFAULT_RECEIVE_BYTES)

    def small_message_limit_warning(self, given_as: Mapping[str, str] | None = None) -> str | None:
        """What to say at start of a message limit below the chunks the videodag client sends by
        default: every upload of it is refused by gRPC itself, with no word of the setting.
        `given_as`: how each setting was given (`written_setting`)."""
        if self.max_message_bytes >= CLIENT_DEFAULT_CHUNK_MESSAGE_BYTES:
            return None
        limit = written_setting("max_message_bytes", self.max_message_bytes, given_as)
        return (f"{limit} is below the 256 KiB chunks the videodag client and CLI "
                "send by default: their uploads are refused (RESOURCE_EXHAUSTED, \"Received message larger than "
                "max\") unless given a smaller chunk size (chunk_size=, --chunk-size)")

    def unenforced_min_rate_warning(self, given_as: Mapping[str, str] | None = None) -> str | None:
        """What to say at start of a minimum upload rate that cannot act: its bytes buy waiting up
        to the idle limit, so with the idle limit off no upload is ever ended for its rate.
        `given_as`: how each setting was given (`written_setting`)."""
        if self.upload_idle_timeout_seconds > 0 or self.upload_min_bytes_per_second <= 0:
            return None
        idle_off = written_setting("upload_idle_timeout_seconds", 0, given_as)
        rate = written_setting("upload_min_bytes_per_second", self.upload_min_bytes_per_second, given_as)
        return (f"{idle_off} turns off {rate} too: an upload may send as slowly as it likes and hold its slot; "
                "set an idle limit to keep the minimum rate, or the rate to 0 to say it is off")

    def max_result_bytes(self) -> int:
        """The most a frame's result may take: a response, less room for the frame's index,
        timestamp and the message around them."""
        return self.max_response_bytes() - RESULT_ENVELOPE_BYTES

    def video_limits(self) -> VideoLimits:
        """The limits every video is checked against before any frame is decoded."""
        return VideoLimits(
            max_width=self.max_frame_width,
            max_height=self.max_frame_height,
            max_frames_total=self.max_video_frames,
            max_duration_seconds=self.max_video_seconds,
        )

    @property
    def requires_token(self) -> bool:
        return self.token_file is not None or bool(self.tokens)

    def _check_host(self) -> None:
        """One TCP address or host name, an IPv6 address with or without its brackets (`[::]`, as
        a URL writes it, is `::`). gRPC would take `unix:PATH` or a list, then fail to bind them
        with no reason given."""
        host = self.host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host.startswith("[") and "]:" in host:  # [::1]:50051
            raise SettingsError.of_setting(
                "host", f"takes no port: give the port with --port (VIDEODAG_PORT), got {self.host!r}")
        if not host or any(mark in host for mark in ",/[] ") or host.lower().startswith("unix:"):
            raise SettingsError.of_setting(
                "host", f"must be one IP address or host name of this machine (the server listens on TCP; 0.0.0.0 "
                        f"or :: listens on all its IPv4 and IPv6 addresses), got {self.host!r}")
        if host.count(":") == 1:  # 0.0.0.0:50051
            raise SettingsError.of_setting(
                "host", f"takes no port: give the port with --port (VIDEODAG_PORT), got {self.host!r}")
        object.__setattr__(self, "host", host)

    @property
    def address(self) -> str:
        return self.address_with_port(self.port)

    def address_with_port(self, port: int) -> str:
        """HOST:PORT as gRPC and clients take it: an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"


def _opencv_can_open_under(folder: Path) -> bool:
    """Whether a file in `folder` reaches OpenCV by its real path. OpenCV takes a path as UTF-8
    text: under a Latin-1 locale `tmp-ñ` is other bytes on disk (not found: "not a video"), and
    bytes that are not UTF-8 at all crash its decoder (SIGSEGV)."""
    text = str(folder)
    try:
        return text.encode("utf-8") == os.fsencode(text)
    except UnicodeEncodeError:  # a byte that is not UTF-8, kept by Python as a lone surrogate
        return False


class SettingsError(ValueError):
    """Raised when a setting has a value the server cannot start with.

    `setting` and `problem` say which one and what is wrong with it, so that `settings_from`
    can name it as the user gave it: the flag or the environment variable.
    """

    def __init__(self, message: str, *, setting: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.problem = problem

    @classmethod
    def of_setting(cls, name: str, problem: str) -> SettingsError:
        """Setting `name` has a bad value: `problem` says what is wrong with it."""
        return cls(f"{name} {problem}", setting=name, problem=problem)


def flag(name: str) -> str:
    """The command-line flag of setting `name`: --max-upload-bytes for max_upload_bytes."""
    return "--" + name.replace("_", "-")


def written_setting(name: str, value: object, given_as: Mapping[str, str] | None = None) -> str:
    """Setting `name` with `value`, written as the operator gave it: `VIDEODAG_PORT=8080` when
    `given_as` says its environment variable did, `--port 8080` otherwise. A server configured
    by variables (a container) is told of the variables it has, not of flags it never wrote."""
    source = (given_as or {}).get(name, flag(name))
    return f"{source} {value}" if source.startswith("--") else f"{source}={value}"


def environment_variable(name: str) -> str:
    """The environment variable of setting `name`: VIDEODAG_ and its name in capitals."""
    return ENV_PREFIX + name.upper()


@functools.cache
def _type_hints() -> dict[str, Any]:
    return get_type_hints(Settings)


def value_type(name: str) -> Any:
    """The type of setting `name`'s value, None aside: int, float, str, Path, or a Literal of
    the words it accepts."""
    hint = _type_hints()[name]
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = (arg for arg in get_args(hint) if arg is not type(None))
    return hint
