"""Build and run the gRPC server: options, health, reflection and graceful shutdown.

`RunningServer` owns a started server; `stop()` drains it: the health service reports
NOT_SERVING, new runs are refused with UNAVAILABLE, in-flight runs get the grace
period to finish and are then cancelled (their temp files removed by their own cleanup).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import grpc
from grpc import _server as grpc_server_module
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from videodag_service.auth import BearerTokenInterceptor, read_tokens, server_credentials
from videodag_service.bind_failures import bind_failure_reason, bind_refusal
from videodag_service.call_slots import RunSlots
from videodag_service.chunk_views import ChunkViewInterceptor
from videodag_service.core_dumps import turn_off_core_dumps
from videodag_service.dag import (
    BUILTIN_PIPELINE_DIR,
    DagPipelineService,
    PipelineFileError,
    PluginRegistryError,
    default_registry,
)
from videodag_service.dag.time_limit import abandoned_thread_count
from videodag_service.environment_warnings import unknown_variables, unprotected_by_empty_variables
from videodag_service.errors import DecoderDidNotStart
from videodag_service.exposure_warnings import exposure_warnings
from videodag_service.health_watches import CappedHealthServicer
from videodag_service.jobs import (
    DataDirectoryFull,
    DataDirectoryInUse,
    JobBackend,
    JobConfig,
    JobService,
    open_job_service,
)
from videodag_service.jobs.backends import JobStoreUnusable
from videodag_service.jobs.sqlite_store import JobStoreFromLaterRelease
from videodag_service.observability import MetricsExporter, ServerMetrics, configure_logging, start_metrics_exporter
from videodag_service.observability.interceptors import server_interceptors
from videodag_service.observability.logging import log_stray_output, say_why_it_ends
from videodag_service.observability.tracing import TracingUnavailable, end_tracing
from videodag_service.plugin_reference import plugin_reference
from videodag_service.private_folders import (
    FolderNotPrivate,
    missing_folders,
    private_directory,
    refuse_unless_writable,
)
from videodag_service.reflection import enable_reflection
from videodag_service.resource_errors import out_of_resources
from videodag_service.rpc_threads import RpcThreadPool
from videodag_service.server_arguments import settings_and_sources, wants_plugin_list
from videodag_service.service_links import kubernetes_service_links, service_link_warning
from videodag_service.servicer import SERVICE_NAME, PipelinesTooLarge, VideoPipelineServicer
from videodag_service.settings import Settings, SettingsError
from videodag_service.stop_signals import Hurry, StartGivenUp, StopSignals
from videodag_service.unparsed_requests import UnparsedRequestInterceptor
from videodag_service.video import DecodersCannotStart
from videodag_service.video.file_pipeline import DEFAULT_DECODE_AHEAD_BYTES
from videodag_service.video.frame_ring import shared_memory_shortfall
from videodag_service.video.orphan_sweeper import OrphanSweeper
from videodag_service.video.upload import temp_dir_open_to_others

logger = logging.getLogger(__name__)
# The logger of the line saying why the server cannot start: its module's name, run as `python -m` too.
_ENDING_LOGGER = "videodag_service.server"

# gRPC's synchronous server gives each call a thread for its whole life (a job watcher for
# hours), and refuses calls beyond its threads with a bare "Concurrent RPC limit exceeded".
# Runs, job watches, job uploads and health watches have caps of their own, refused with typed errors; these
# threads beyond them all serve health checks, lookups, listings and refusals when all are full.
_SPARE_THREADS = 32
# Calls a burst may have waiting for a thread, per thread, before gRPC refuses the next one with
# its bare RESOURCE_EXHAUSTED: no long call waits among them (each kind is capped within the
# threads), so they wait for short ones only, and a health check in a burst is answered late
# rather than refused.
_WAITING_CALLS_PER_THREAD = 4
# How long stop() waits for cancelled runs to clean up: one frame of a slow plugin, with margin.
_CANCELLED_RUN_CLEANUP_SECONDS = 10.0
# How often the drain looks whether a second signal asked it to end now.
_DRAIN_POLL_SECONDS = 0.1
# The shortest drain (or the grace, if shorter): calls sent just after the signal, before the
# client or its balancer knew (a Kubernetes endpoint is removed as the pod is told to stop), are
# refused as SERVER_DRAINING, which says to go elsewhere, rather than cut by gRPC's stop as a
# bare CANCELLED, which reads as the caller's own cancel; and a health poll can see NOT_SERVING.
_MIN_DRAIN_SECONDS = 1.0
# After the grace, how long calls get to end themselves before gRPC cancels them: a run
# notices at its next frame, a watch at its next poll (`watch_job`'s 0.5 s).
_CALLS_END_SECONDS = 1.0
# What stops a start for its configuration or its machine, said in one line by `main`: a port
# in use, a folder or file that cannot be used, a bad pipeline or plugin, a job store that
# cannot be opened, decoders or tracing that cannot start. Anything else is a bug, and keeps
# its traceback.
_START_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SettingsError,  # tokens or TLS files the server cannot use
    FolderNotPrivate,
    PipelineFileError,
    PluginRegistryError,
    PipelinesTooLarge,
    DataDirectoryFull,
    DataDirectoryInUse,
    JobStoreFromLaterRelease,
    JobStoreUnusable,
    DecodersCannotStart,
    DecoderDidNotStart,
    TracingUnavailable,
)


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options for long streams behind load balancers."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Ping connections so a load balancer does not drop a long-running stream, and a client
        # gone without a word is found. gRPC also gives the sockets this timeout as their
        # TCP_USER_TIMEOUT: it must outlast what a slow uplink's queued bytes delay the answer by,
        # and a client paused a while in a debugger, or healthy clients lose their calls.
        ("grpc.keepalive_time_ms", round(settings.keepalive_interval_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.keepalive_timeout_seconds * 1000)),
        # gRPC stops pinging a connection after 2 pings without data otherwise: a quiet stream's
        # connection (a WatchJob of a queued job) goes unpinged, for the load balancer to drop.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_time_between_pings_ms", round(settings.keepalive_interval_seconds * 1000)),
        # And a ping answered later than this (1 min by default) closes the connection: an
        # upload through deep buffers at 50 KB/s queues the answer 85 s behind its bytes.
        ("grpc.http2.ping_timeout_ms", round(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC sets SO_REUSEPORT by default on Linux: a second server on a port in use would
        # start and share its connections (and, with its own data directory, its jobs) with
        # the first. The port must be this server's alone, or it does not start.
        ("grpc.so_reuseport", 0),
        *_connection_age(settings.max_connection_age_seconds),
    ]


_NO_GRACE_LIMIT_MS = 2**31 - 1  # gRPC's own "infinite" for a time in milliseconds


def _connection_age(seconds: float) -> list[tuple[str, int]]:
    """GOAWAY after `seconds` (gRPC adds up to 10% either way, so clients do not all reconnect at
    once), 0 for never; the calls under way are given all the time they take (no grace limit):
    a run or a watch is never cut for the connection's age."""
    if seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", max(1, round(seconds * 1000))),
            ("grpc.max_connection_age_grace_ms", _NO_GRACE_LIMIT_MS)]


@dataclass
class RunningServer:
    """A started server and the pieces its shutdown needs."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    run_slots: RunSlots
    settings: Settings
    metrics: ServerMetrics
    metrics_exporter: MetricsExporter | None
    """The /metrics endpoint; None without --metrics-port."""
    jobs: JobService
    servicer: VideoPipelineServicer
    orphan_sweeper: OrphanSweeper
    rpc_threads: RpcThreadPool

    def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None, cause: str = "") -> None:
        """Drain and stop; returns when every call has ended. Setting `hurry` (a second signal)
        ends the grace at once: what is still in progress is cancelled, jobs queued again. `cause`
        (the signal's name) goes into the log line."""
        hurry = hurry if hurry is not None else threading.Event()
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self.run_slots.start_draining()
        self.health.enter_graceful_shutdown()
        self.jobs.stop_taking_jobs()
        logger.info("%sdraining: health NOT_SERVING, new runs and jobs refused, %.1f s grace for the runs, "
                    "job uploads and jobs in progress", f"received {cause}: " if cause else "", grace)
        # gRPC's own stop refuses every new call at once, health checks and job lookups included;
        # keep serving while the work in progress finishes, so a load balancer sees NOT_SERVING
        # rather than a closed port, and job clients can still follow their jobs.
        started = time.monotonic()
        self._wait_for_work_in_progress(started + grace, hurry)
        hurry.wait(started + min(grace, _MIN_DRAIN_SECONDS) - time.monotonic())
        # Calls still going end themselves at their next step, with UNAVAILABLE SERVER_DRAINING
        # their clients can act on; gRPC's own cancel, a bare UNAVAILABLE, is for the rest.
        self.run_slots.end_calls()
        self._stop_grpc()
        self.rpc_threads.shutdown(wait=False)  # gRPC leaves the pool it was given running
        # Cancelled runs notice at their next frame, then remove their temp files.
        if not self.run_slots.wait_until_idle(_CANCELLED_RUN_CLEANUP_SECONDS):
            logger.warning("runs still cleaning up %.0f s after they were cancelled", _CANCELLED_RUN_CLEANUP_SECONDS)
        # The exporter first: a scrape reads the queue depth from the job store, closed next.
        if self.metrics_exporter is not None:
            self.metrics_exporter.stop()
        self.jobs.close()
        self.servicer.close()
        self.orphan_sweeper.stop()
        end_tracing()
        logger.info("server stopped")

    def _stop_grpc(self) -> None:
        """gRPC's stop, whose calls get `_CALLS_END_SECONDS` to end themselves first. gRPC starts a
        thread to time that, which a pids limit can refuse: its stop then fails with "can't start
        new thread" and would skip the rest of the shutdown, so the time is kept here instead."""
        try:
            self.server.stop(_CALLS_END_SECONDS).wait()
        except RuntimeError as error:  # refusing new calls has begun; the calls' end is this thread's
            logger.warning("stopping gRPC with this thread (%s): its calls end in %.0f s", error, _CALLS_END_SECONDS)
            time.sleep(_CALLS_END_SECONDS)
            self.server.stop(None).wait()

    def _wait_for_work_in_progress(self, deadline: float, hurry: Hurry) -> None:
        """Runs, SubmitJob uploads (each becomes a queued job) and jobs running here, until `deadline`
        or `hurry`. A job still running then is interrupted by `jobs.close` and queued again."""
        while not hurry.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._work_in_progress_ends_within(min(left, _DRAIN_POLL_SECONDS)):
                return
        logger.info("a second signal: ending the drain now, cancelling the runs, uploads and jobs still in progress")

    def _work_in_progress_ends_within(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        return (
            self.run_slots.wait_until_idle(seconds)
            and self.servicer.wait_for_job_uploads(end - time.monotonic())
            and self.jobs.wait_for_running_jobs(end - time.monotonic())
        )


def job_config(settings: Settings) -> JobConfig:
    """The job backend's configuration from the server's settings."""
    return JobConfig(
        data_dir=settings.data_dir,
        max_upload_bytes=settings.max_upload_bytes,
        backend=JobBackend(settings.job_backend),
        redis_url=settings.redis_url,
        workers=settings.job_workers,
        retention_seconds=settings.job_retention_seconds,
        job_timeout_seconds=settings.job_timeout_seconds,
        lease_seconds=settings.job_lease_seconds,
        video_limits=settings.video_limits(),
        decode_isolation=settings.decode_isolation,
        decode_frame_timeout_seconds=settings.decode_frame_timeout_seconds or None,
        decode_run_timeout_seconds=settings.decode_run_timeout_seconds or None,
        node_timeout_seconds=settings.node_timeout_seconds or None,
        frame_workers=settings.frame_workers or None,
        max_result_bytes=settings.max_result_bytes(),
        pipeline_dir=settings.pipeline_dir,
        min_free_bytes=settings.job_min_free_bytes,
        max_queued_jobs=settings.max_queued_jobs,
    )


def start_server(settings: Settings, dag: DagPipelineService | None = None) -> RunningServer:
    """Load the pipelines (refusing to start on an invalid one), bind and start serving."""
    if dag is None:
        dag = DagPipelineService.from_folder(settings.pipeline_dir or BUILTIN_PIPELINE_DIR)
    dag.node_timeout_seconds = settings.node_timeout_seconds or None
    dag.max_result_bytes = settings.max_result_bytes()
    if settings.frame_workers:
        dag.frame_workers = settings.frame_workers
    # Made (or checked) before anything is served: a folder another user controls stops the start.
    made = missing_folders(settings.temp_dir)
    made_for_jobs = missing_folders(settings.data_dir)
    try:
        private_directory(settings.temp_dir, "upload folder (--temp-dir)")
        refuse_unless_writable(settings.temp_dir, "upload folder (--temp-dir)")
        jobs = open_job_service(job_config(settings), dag)
        try:
            return _start(settings, dag, jobs)
        except BaseException:
            # Releases the data directory's lock; a data folder missing before this start holds
            # only what opening the jobs made there, removed while the lock keeps others out.
            jobs.close(discard_if_unused=bool(made_for_jobs) and settings.job_backend == JobBackend.EMBEDDED.value)
            raise
    except BaseException:
        # A failed start leaves no folder it made behind, if empty: another server starting at
        # the same time may have made the same one, and keeps it (the data folder's first: they
        # may share parents).
        for folder in (*made_for_jobs, *made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _start(settings: Settings, dag: DagPipelineService, jobs: JobService) -> RunningServer:
    run_slots = RunSlots(settings.max_concurrent_runs, max_waiting=settings.max_waiting_runs,
                         wait_seconds=settings.run_wait_seconds)
    metrics = ServerMetrics()
    metrics.watch_queue_depth("jobs", _queue_depth(jobs))
    metrics.watch_queue_depth("runs", lambda: run_slots.waiting)
    dag.node_observer = metrics.record_node_call
    jobs.observe(metrics)  # embedded jobs' runs and frames, and SubmitJob's uploads
    # Request ids and metrics outermost, so refused calls are logged and counted too.
    interceptors = server_interceptors(metrics, tracing=settings.tracing == "otel")
    if settings.requires_token:
        interceptors.append(BearerTokenInterceptor(read_tokens(settings.token_file, settings.tokens)))
    interceptors.append(ChunkViewInterceptor())  # it changes how requests are read, not who may call
    interceptors.append(UnparsedRequestInterceptor())  # innermost: under the chunk views, which parse the rest with it
    threads = (settings.max_concurrent_runs + settings.max_waiting_runs + settings.max_job_watches
               + settings.max_job_uploads
               + settings.max_health_watches + settings.max_reflection_streams + _SPARE_THREADS)
    rpc_threads = RpcThreadPool(max_workers=threads, thread_name_prefix="videodag-rpc")
    server = grpc.server(
        rpc_threads,
        interceptors=interceptors,
        options=grpc_options(settings),
        maximum_concurrent_rpcs=threads * (1 + _WAITING_CALLS_PER_THREAD),
    )
    servicer = VideoPipelineServicer(dag, settings, run_slots, jobs, metrics)
    exporter = None
    sweeper = OrphanSweeper(settings.temp_dir)
    try:
        servicer.add_to_server(server)
        health_servicer = CappedHealthServicer(settings.max_health_watches)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server, settings.max_reflection_streams,
                          settings.reflection_idle_timeout_seconds)
        # Before gRPC binds its port: a port gRPC has bound stays open, started or not.
        exporter = _metrics_exporter(metrics, settings)
        sweeper.start()
        port = _listen(server, settings)
        server.start()
    except BaseException:
        _stop_unserved(server)
        servicer.close()  # its spare decoder process
        sweeper.stop()
        if exporter is not None:
            exporter.stop()
        raise
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("serving %s on %s with pipelines %s (videodag %s)", SERVICE_NAME, settings.address_with_port(port),
                ", ".join(dag.pipeline_ids()), version("videodag"))
    for spec in dag.pipelines():
        if unread := spec.unread_nodes():
            logger.warning("pipeline %r (%s): no node or output reads node(s) %s, which run on every frame all the "
                           "same", spec.id, spec.source_path, ", ".join(map(repr, unread)))
    if (warning := temp_dir_open_to_others(settings.temp_dir)) is not None:
        logger.warning(warning)
    if (warning := _shared_memory_shortfall(settings)) is not None:
        logger.warning(warning)
    return RunningServer(server, port, health_servicer, run_slots, settings, metrics, exporter, jobs, servicer,
                         sweeper, rpc_threads)


def _shared_memory_shortfall(settings: Settings) -> str | None:
    """Whether the runs this server takes at once (calls, and embedded jobs) fit in /dev/shm;
    decoding in threads needs none of it."""
    if settings.decode_isolation != "process":
        return None
    runs = settings.max_concurrent_runs + (settings.job_workers if settings.job_backend == "embedded" else 0)
    return shared_memory_shortfall(runs, DEFAULT_DECODE_AHEAD_BYTES)


def _stop_unserved(server: grpc.Server) -> None:
    """Stop a server whose start failed. One that failed half way (its serving thread could not
    start, at a pids limit) is started without a thread to finish its shutdown: gRPC's stop
    waited for that thread forever, and so did the process's exit, its port open. That thread's
    loop is run here instead (gRPC's own, from its module: grpcio is pinned below 2)."""
    state = getattr(server, "_state", None)
    if state is None or state.stage is not grpc_server_module._ServerStage.STARTED:
        return  # never started: nothing serves, and the port goes with the server
    grpc_server_module._begin_shutdown_once(state)
    state.server.cancel_all_calls()
    grpc_server_module._serve(state)


def _queue_depth(jobs: JobService) -> Callable[[], int]:
    """The jobs waiting for a worker, for the metrics: an outage of the job store raises
    JobStoreUnavailable, which they expect; any other error is raised as it is."""

    def depth() -> int:
        try:
            return jobs.queue_depth()
        except Exception as error:
            if (unavailable := jobs.as_domain_error(error)) is error:
                raise
            raise unavailable from error

    return depth


def _metrics_exporter(metrics: ServerMetrics, settings: Settings) -> MetricsExporter | None:
    """The /metrics endpoint, if asked for; a port that cannot be bound is named as the metrics port."""
    if not settings.metrics_port:
        return None
    try:
        return start_metrics_exporter(metrics, settings.metrics_port, settings.host)
    except OSError as error:
        raise OSError(f"could not listen on {settings.host}:{settings.metrics_port} for the metrics "
                      f"(--metrics-port): {error.strerror or error}") from None


def _listen(server: grpc.Server, settings: Settings) -> int:
    """Bind the server's port; a failure says why in words, not in gRPC's."""
    if (refusal := bind_refusal(settings.host, settings.port, sure_only=True)) is not None:
        raise OSError(f"could not listen on {settings.address}: {refusal}")
    try:
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
            port = server.add_secure_port(settings.address, credentials)
        else:
            port = server.add_insecure_port(settings.address)
    except RuntimeError:  # gRPC's "Failed to bind to address ...; set GRPC_VERBOSITY=debug"
        port = 0
    if port == 0:
        raise OSError(f"could not listen on {settings.address}: {bind_failure_reason(settings.host, settings.port)}")
    return int(port)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP, then drain; a second signal ends the drain at once."""
    signals = StopSignals()
    signals.install()
    try:
        running = start_server(settings)
        signals.started()
    except StartGivenUp:
        logger.info("received %s again while starting: giving the start up", signals.received[-1])
        raise
    try:
        print(f"videodag-server listening on {settings.address_with_port(running.port)}", flush=True)
    except OSError:  # stdout closed (`| true`): a line for people and scripts, not worth the server
        logger.info("could not print the listening address: standard output is closed")
    cause = signals.wait_for_first()
    running.stop(hurry=signals.second(), cause=cause)


def _open_files_up_to_the_hard_limit() -> None:
    """Raise the soft limit on open files to the hard one (as Go and nginx do at start). Every
    connection, upload, decoder pipe and database takes descriptors; a shell's or a container's
    soft limit (often 1024, or lower) refuses calls with EMFILE and leaves new connections
    hanging, where the hard limit the operator set allows far more."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:
        logger.warning("could not raise the open-files limit to its hard limit: %s", error)


def main(argv: Sequence[str] | None = None) -> int:
    if wants_plugin_list(argv):
        try:
            print(plugin_reference(default_registry()), end="")
        except PluginRegistryError as error:  # an installed plugin that cannot load, as at start
            print(f"videodag-server: cannot list the plugins: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        settings, given_as = settings_and_sources(argv)
    except SettingsError as error:
        print(f"videodag-server: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    _open_files_up_to_the_hard_limit()
    turn_off_core_dumps()
    for problem in unknown_variables(settings):
        logger.warning("%s", problem)
    for variable in unprotected_by_empty_variables(settings):
        logger.warning("%s is set but empty, which means unset: serving without what it would turn on", variable)
    for exposure in exposure_warnings(settings):
        logger.warning("%s", exposure)
    for warning in (settings.small_message_limit_warning(given_as), settings.unenforced_min_rate_warning(given_as)):
        if warning is not None:
            logger.warning("%s", warning)
    for variable, value in kubernetes_service_links(os.environ).items():
        port_used = settings.metrics_port if variable == "VIDEODAG_METRICS_PORT" else settings.port
        logger.warning("%s", service_link_warning(variable, value, port_used))
    try:
        serve(settings)
    except Exception as error:
        if not (isinstance(error, _START_ERRORS) or out_of_resources(error) is not None):
            raise
        # MemoryError() says nothing of itself: its name does.
        say_why_it_ends("videodag-server", f"cannot start: {str(error) or type(error).__name__}", _ENDING_LOGGER)
        return 1
    return 0


def exit_past_stuck_node_threads(status: int) -> int:
    """`status`, for the process to exit with as usual; unless node threads given up on at their
    time limit are still stuck in a call, when the process ends here, with `status`.

    Such a call may be in a C++ library: ONNX Runtime's threads, torn down by the C++ runtime's
    own exit work under a call still using them, aborted the process (SIGABRT, status 134,
    "terminate called without an active exception") after a clean drain, and its supervisor
    saw a crash. Python's exit work is done first (multiprocessing's: the decoders' forkserver
    is stopped and its folder removed), then the C++ one is skipped: nothing is left to save.
    """
    stuck = abandoned_thread_count()
    if stuck == 0:
        return status
    logger.warning("%d node call(s) given up on at the node time limit are still running: ending the process "
                   "without the libraries' exit work, which could abort under them", stuck)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a pipe no one reads
            stream.flush()
    os._exit(status)


def run_as_process(argv: Sequence[str] | None = None) -> int:
    """`main`, as the process's own entry point (`videodag-server`, `python -m`): what Python
    writes past the log goes through it, and a stop past a stuck node call does not abort."""
    log_stray_output()
    return exit_past_stuck_node_threads(main(argv))


if __name__ == "__main__":
    raise SystemExit(run_as_process())
