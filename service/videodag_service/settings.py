"""Server settings: one frozen dataclass, filled from flags, then environment, then defaults.

Each field declares its flag, its environment variable (VIDEODAG_<NAME>) and its help
text in one place, so `videodag-server --help` documents every setting and a bad value
stops the server at start with a message naming the setting.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

from videodag_service.disk_space import MIB
from videodag_service.plugins.models import DEFAULT_MODEL_DIR, FETCH_COMMAND, MODEL_DIR_ENV
from videodag_service.service_links import is_service_link, kubernetes_service_links
from videodag_service.video import Isolation, VideoLimits

ENV_PREFIX = "VIDEODAG_"


def _setting(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum})


_MAX_PORT = 65535
# gRPC keeps message sizes in a C int.
_MAX_INT32 = 2**31 - 1
# And its keepalive times, in milliseconds: at most 24 days.
_MAX_GRPC_SECONDS = _MAX_INT32 // 1000
# Settings that turn protection on. A flag given empty (`--token-file "$TOKEN_FILE"` with the
# variable unset) is an error, not "off": the server would fail open. An empty environment
# variable means unset, as for every setting (compose files write `${VIDEODAG_TOKENS:-}`),
# and the server warns when it then serves unprotected (`unprotected_by_empty_variables`).
_PROTECTING = ("token_file", "tokens", "tls_cert_file", "tls_key_file", "tls_client_ca_file")


# The longest time a setting gives (every float setting is seconds): about 31 years, within
# what a protobuf Timestamp holds from now and what a thread's wait accepts; a longer one,
# inf included ("never"), is taken as this.
MAX_SECONDS = 1e9

# Room a FrameResult message needs around its result (index, timestamp, the event around it).
RESULT_ENVELOPE_BYTES = 1024
# The largest message a gRPC client receives unless it is told otherwise.
CLIENT_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024

@dataclass(frozen=True)
class Settings:
    """Everything a server needs to start; see `videodag-server --help`."""

    host: str = _setting("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = _setting(50051, "TCP port to listen on (0 picks a free one)", minimum=0, maximum=_MAX_PORT)
    pipeline_dir: Path | None = _setting(None, "folder of pipeline files (default: the built-in pipelines)")
    temp_dir: Path = _setting(
        Path(tempfile.gettempdir()) / "videodag", "private folder for uploaded videos while they run"
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
        "and open another when they ask again; 0 turns it off", minimum=0,
    )
    max_job_uploads: int = _setting(
        16, "SubmitJob uploads arriving at once (each holds a server thread); the next gets RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_frame_width: int = _setting(7680, "widest frame accepted, in pixels", minimum=1)
    max_frame_height: int = _setting(4320, "tallest frame accepted, in pixels", minimum=1)
    max_video_frames: int = _setting(
        1_000_000, "most frames a video may have: refused before decoding when it declares more, and stopped "
        "when it decodes more", minimum=1
    )
    max_video_seconds: float = _setting(
        6 * 3600.0, "longest video accepted, in seconds: refused before decoding when it declares more, and "
        "stopped at a frame past it", minimum=0.001
    )
    node_timeout_seconds: float = _setting(
        60.0, "longest one pipeline node may take on one frame, or to open for a run; over it the run fails "
        "(INTERNAL); 0 turns it off; "
        "tools that promise a bounded time (stats.frame_stats) are not limited",
        minimum=0,
    )
    frame_workers: int = _setting(
        0, "frames a run's frame-independent nodes (a detector, not a tracker) work on at once, each with an "
        "instance of its own; 0: one per core the server may use (its CPU quota counts), at most 8", minimum=0,
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
        "trickling a byte at a time would otherwise hold its slot for good; 0 turns it off", minimum=0,
    )
    result_read_timeout_seconds: float = _setting(
        600.0, "longest gRPC may wait to hand a client one more result (UploadAndRun, WatchJob) before the call is "
        "cancelled and what it holds (a run slot, a decoder) is freed; 0 turns it off. A client that reads slowly "
        "frees gRPC's buffers in batches: keep this well above the time it takes to read what they hold",
        minimum=0,
    )
    keepalive_interval_seconds: float = _setting(
        60.0, "how often the server pings each connection: a load balancer keeps a quiet stream's connection, "
        "and a client that went away without a word is found by the answer it does not send",
        minimum=1, maximum=_MAX_GRPC_SECONDS,
    )
    keepalive_timeout_seconds: float = _setting(
        120.0, "longest the server waits for a ping's answer before it closes the connection, failing its calls "
        "(UNAVAILABLE): how long a client paused whole (a debugger, a frozen VM) or cut off without a word keeps "
        "what its calls hold. The answer queues behind what the client's link holds (seconds of data on a slow "
        "uplink with deep buffers): keep it well above that",
        minimum=1, maximum=_MAX_GRPC_SECONDS,
    )
    shutdown_grace_seconds: float = _setting(
        20.0, "on SIGTERM/SIGINT, how long the runs, job uploads and jobs in progress may finish before they "
        "are cancelled (jobs are queued again)", minimum=0
    )
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting("json", "json (one object per line, with the request id) or text")
    metrics_port: int = _setting(
        0, "port of the Prometheus /metrics endpoint on --host; 0 turns it off", minimum=0, maximum=_MAX_PORT
    )
    tracing: str = _setting("off", "off, or otel: an OpenTelemetry span per call, sent as the OTEL_* variables say "
                            "(needs the 'tracing' extra)")
    tls_cert_file: Path | None = _setting(None, "PEM certificate chain: serve TLS instead of plaintext")
    tls_key_file: Path | None = _setting(None, "PEM private key of --tls-cert-file")
    tls_client_ca_file: Path | None = _setting(
        None, "PEM CA bundle: require client certificates it signed (mutual TLS)"
    )
    token_file: Path | None = _setting(
        None, "file of accepted bearer tokens, one per line: calls without one get UNAUTHENTICATED"
    )
    tokens: str = _setting("", "accepted bearer tokens, comma-separated (prefer the environment to the flag)")
    job_backend: str = _setting(
        "embedded", "where jobs live: embedded (SQLite and worker threads in this server) or redis (Redis + RQ workers)"
    )
    data_dir: Path = _setting(
        Path(tempfile.gettempdir()) / "videodag-data",
        "jobs' database, uploads and results (embedded); with redis, the uploads, on a path every RQ worker sees",
    )
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "the Redis of the redis job backend")
    job_workers: int = _setting(2, "embedded job backend: jobs run at once", minimum=1)
    job_min_free_bytes: int = _setting(
        64 * MIB, "free space, in bytes, SubmitJob uploads must leave on the disk of --data-dir, for the jobs' "
        "results and records: an upload that would leave less is refused (RESOURCE_EXHAUSTED, reason DISK_FULL), "
        "counting its declared size and what the uploads in progress declared and have still to send; one without "
        "a declared size is checked again at every chunk as it arrives; 0 turns the check off", minimum=0,
    )
    job_retention_seconds: float = _setting(
        7 * 86400.0, "how long finished jobs, their results and files are kept", minimum=0
    )
    job_timeout_seconds: float = _setting(
        6 * 3600.0, "longest a job may run; then it FAILS with DEADLINE_EXCEEDED", minimum=1
    )
    job_lease_seconds: float = _setting(
        30.0, "redis job backend: a job whose worker is silent this long runs again on another", minimum=1
    )

    def __post_init__(self) -> None:
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise _invalid("log_level", f"must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        for item in fields(self):
            minimum = item.metadata.get("minimum")
            value = getattr(self, item.name)
            if "float" in str(item.type) and isinstance(value, int | float) and not isinstance(value, bool):
                if math.isnan(value):
                    raise _invalid(item.name, f"must be a number of seconds, got {value}")
                if value > MAX_SECONDS:
                    # No Timestamp holds an expiry past year 9999 (inf, or 1e12 s, as a retention), and
                    # 31 years still means "no limit" for a time limit.
                    object.__setattr__(self, item.name, MAX_SECONDS)
                    value = MAX_SECONDS
            if minimum is not None and value < minimum:
                raise _invalid(item.name, f"must be at least {minimum}, got {value}")
            maximum = item.metadata.get("maximum")
            if maximum is not None and value > maximum:
                raise _invalid(item.name, f"must be at most {maximum}, got {value}")
        if self.metrics_port and self.metrics_port == self.port:
            # Both listen on --host: the second to bind would fail as if another process held the port.
            raise _invalid("metrics_port", f"must differ from the gRPC port: both are {self.port}")
        if self.log_format not in {"json", "text"}:
            raise _invalid("log_format", f"must be json or text, got {self.log_format!r}")
        if self.tracing not in {"off", "otel"}:
            raise _invalid("tracing", f"must be off or otel, got {self.tracing!r}")
        if self.decode_isolation not in {"process", "thread"}:
            raise _invalid("decode_isolation", f"must be process or thread, got {self.decode_isolation!r}")
        if self.job_backend not in {"embedded", "redis"}:
            raise _invalid("job_backend", f"must be embedded or redis, got {self.job_backend!r}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError("--tls-cert-file and --tls-key-file (or their variables) go together: give both or "
                                "neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file (or their "
                                "variables)")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "token_file", "pipeline_dir"):
            path = getattr(self, name)
            if path is not None and not path.exists():
                raise _invalid(name, f"{str(path)!r} does not exist")

    def max_response_bytes(self) -> int:
        """The largest message the server sends: one any client can receive (gRPC's clients take
        4 MiB by default, the Python, Go and Node ones and grpcurl alike)."""
        return min(self.max_message_bytes, CLIENT_DEFAULT_RECEIVE_BYTES)

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

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class SettingsError(ValueError):
    """Raised when a setting has a value the server cannot start with.

    `setting` and `problem` say which one and what is wrong with it, so that `settings_from`
    can name it as the user gave it: the flag or the environment variable.
    """

    def __init__(self, message: str, *, setting: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.problem = problem


def _invalid(name: str, problem: str) -> SettingsError:
    return SettingsError(f"{name} {problem}", setting=name, problem=problem)


def _field_type(annotation: str) -> type:
    """The type a flag's text converts to, read from the field's annotation."""
    for name, kind in (("Path", Path), ("float", float), ("int", int)):
        if name in annotation:
            return kind
    return str


def _convert(name: str, raw: str) -> Any:
    kind = _field_type(next(str(f.type) for f in fields(Settings) if f.name == name))
    try:
        return kind(raw)
    except ValueError:
        raise _invalid(name, f"must be {kind.__name__}, got {raw!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The `videodag-server` argument parser; every setting has a flag and an environment variable."""
    parser = argparse.ArgumentParser(
        prog="videodag-server",
        description="Serve videodag: run named DAG pipelines of vision plugins over uploaded videos (gRPC).",
        epilog=(
            "Every flag can also be set by its environment variable; a flag wins over the environment. "
            f"The detectors' model files are read from ${MODEL_DIR_ENV} (default {DEFAULT_MODEL_DIR}), "
            f"where `{FETCH_COMMAND}` puts them."
        ),
    )
    for item in fields(Settings):
        env = ENV_PREFIX + item.name.upper()
        default = item.default if item.default is not MISSING else None
        parser.add_argument(
            "--" + item.name.replace("_", "-"),
            dest=item.name,
            default=None,
            metavar=item.name.upper(),
            help=f"{item.metadata['help']} [env {env}; default {default}]",
        )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('videodag')}")
    parser.add_argument(
        "--list-plugins",
        action="store_true",
        help="print every plugin tool a pipeline file can name (inputs, outputs, parameters) and exit",
    )
    return parser


def wants_plugin_list(argv: Sequence[str] | None = None) -> bool:
    """Whether the command line asks for the plugin reference instead of a server."""
    return bool(build_parser().parse_args(argv).list_plugins)


# The videodag CLI's variables: a shell that runs both has them, and the server reads neither.
_CLI_SERVER_VARIABLE, _CLI_TOKEN_VARIABLE = ENV_PREFIX + "SERVER", ENV_PREFIX + "TOKEN"


def unknown_variables(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What to say of each VIDEODAG_ variable the server does not read: a misspelt or renamed
    setting is otherwise ignored without a word, and the CLI's VIDEODAG_TOKEN in the server's
    environment left it answering every call with no token."""
    environ = os.environ if environ is None else environ
    read = {ENV_PREFIX + item.name.upper() for item in fields(Settings)} | {MODEL_DIR_ENV, _CLI_SERVER_VARIABLE}
    said = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in read or is_service_link(variable, environ[variable]):
            continue
        if variable == _CLI_TOKEN_VARIABLE:
            if not settings.requires_token:
                said.append(f"{variable} is the videodag CLI's token to send, not read by the server: it requires no "
                            f"token; give it {ENV_PREFIX}TOKENS or {ENV_PREFIX}TOKEN_FILE")
            continue
        names = sorted(name.removeprefix(ENV_PREFIX) for name in read - {_CLI_SERVER_VARIABLE})
        close = " or ".join(ENV_PREFIX + name for name in _resembling(variable.removeprefix(ENV_PREFIX), names))
        said.append(f"{variable} is not a setting of the server: ignored" + (f" (did you mean {close}?)"
                                                                            if close else ""))
    return said


def _resembling(name: str, names: list[str]) -> list[str]:
    """The settings holding every word of `name` (plurals as singulars: MAX_UPLOADS, TLS_CA_FILE),
    else the one spelt most alike (a typo)."""
    def words(text: str) -> set[str]:
        return {word.removesuffix("S") for word in text.split("_") if word}

    wanted = words(name)
    holding = [candidate for candidate in names if wanted <= words(candidate)]
    return holding[:3] if holding else difflib.get_close_matches(name, names, n=1)


def unprotected_by_empty_variables(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The protecting variables set empty while the server serves without what they turn on."""
    environ = os.environ if environ is None else environ
    unprotected = {"token_file": not settings.requires_token, "tokens": not settings.requires_token,
                   "tls_cert_file": settings.tls_cert_file is None, "tls_key_file": settings.tls_cert_file is None,
                   "tls_client_ca_file": settings.tls_client_ca_file is None}
    return [ENV_PREFIX + name.upper() for name in _PROTECTING
            if environ.get(ENV_PREFIX + name.upper()) == "" and unprotected[name]]


def settings_from(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment variables, then defaults; raises SettingsError."""
    environ = os.environ if environ is None else environ
    parsed = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    """How each value was given, the name a bad one is reported by: a server configured by a
    dozen variables is told which variable, not a name it never wrote."""
    try:
        for item in fields(Settings):
            flag, variable = "--" + item.name.replace("_", "-"), ENV_PREFIX + item.name.upper()
            raw, source = parsed.get(item.name), flag
            if raw is None and variable not in kubernetes_service_links(environ):
                raw, source = environ.get(variable), variable
            if raw == "" and item.name in _PROTECTING and parsed.get(item.name) is not None:
                raise SettingsError(f"{item.name} was given empty ({flag} \"\"): give a value, or leave the flag "
                                    "out to turn it off")
            if raw is not None and raw != "":
                given_as[item.name] = source
                values[item.name] = _convert(item.name, raw)
        return Settings(**values)
    except SettingsError as error:
        if error.setting is not None and error.problem is not None and error.setting in given_as:
            raise SettingsError(f"{given_as[error.setting]} {error.problem}") from None
        raise
