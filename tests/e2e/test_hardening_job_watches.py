"""Job watches have a cap of their own: each WatchJob stream holds a server thread while its job
runs, and without the cap enough watchers took every thread, so that runs, listings and even
job lookups got gRPC's bare "Concurrent RPC limit exceeded"."""

from __future__ import annotations

from contextlib import ExitStack, closing
from pathlib import Path

import pytest
from hardening_support import wait_until
from harness import ServerFactory

from videodag_client import JobState, ResourceExhausted, RunOptions, RunSummary

WATCHES = 2


def test_a_watch_over_the_cap_is_refused_typed_while_other_calls_are_served(
    make_server: ServerFactory, thousand_frame_video: Path, make_video
) -> None:
    server = make_server(max_job_watches=WATCHES)
    client = server.client
    job = client.submit_job(thousand_frame_video, "slow")  # 0.05 s a frame: it runs for the whole test
    with ExitStack() as open_watches:
        for _ in range(WATCHES):
            watch = open_watches.enter_context(closing(client.watch_job(job.id, reconnect_window=0)))
            next(iter(watch))  # the stream is open and has answered

        with pytest.raises(ResourceExhausted) as refused:
            next(iter(client.watch_job(job.id, reconnect_window=0)))
        assert refused.value.reason == "TOO_MANY_WATCHES"
        assert refused.value.metadata["max_job_watches"] == str(WATCHES)
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert f"maximum of {WATCHES} job watches" in refused.value.message

        # Everything else still has a thread: lookups, listings, a whole run.
        assert client.get_job(job.id).state in {JobState.QUEUED, JobState.RUNNING}
        assert "frame_stats_v1" in {pipeline.id for pipeline in client.list_pipelines()}
        events = list(client.upload_and_run(make_video(3), "frame_stats_v1", RunOptions(), timeout=30))
        assert isinstance(events[-1], RunSummary) and events[-1].frames_processed == 3

    # The closed watches give their slots back once the server has seen them go (a moment).
    def watch_accepted() -> bool:
        try:
            with closing(client.watch_job(job.id, reconnect_window=0)) as watch:
                return getattr(next(iter(watch)), "id", None) == job.id
        except ResourceExhausted:
            return False

    assert wait_until(watch_accepted, timeout=10, interval=0.1)
    assert client.cancel_job(job.id).state is JobState.CANCELLED
