"""A client behind one address (a Kubernetes Service, an L4 load balancer) during a replica's
drain: the client kept its connection to the draining replica, so every run it started there
was refused until the replica exited, while the balancer had other replicas for it."""

from __future__ import annotations

import threading
import time

import pytest
from harness import ServerFactory

from fakes.one_address_balancer import OneAddressBalancer
from fakes.waiting import wait_until
from videodag_client import FrameResult, RunSummary, Unavailable, VideodagClient


def test_a_client_told_a_replica_drains_reaches_another_with_its_next_call(
    make_server: ServerFactory, make_video
) -> None:
    draining, other = make_server(shutdown_grace_seconds=30), make_server()
    with OneAddressBalancer(draining.running.port) as balancer, VideodagClient(f"127.0.0.1:{balancer.port}") as client:
        assert client.list_pipelines()  # connected, to the first replica
        in_progress = client.upload_and_run(make_video(60), "slow", timeout=60)  # 60 frames x 50 ms
        assert isinstance(next(event for event in in_progress if isinstance(event, FrameResult)), FrameResult)
        stopping = threading.Thread(target=draining.running.stop)
        stopping.start()
        assert wait_until(lambda: draining.running.run_slots.draining, timeout=10)
        balancer.route_to(other.running.port)  # the terminating replica leaves the Service's endpoints

        with pytest.raises(Unavailable) as refused:
            list(client.upload_and_run(make_video(3), "frame_stats_v1", timeout=30))
        assert refused.value.reason == "SERVER_DRAINING"
        elsewhere = list(client.upload_and_run(make_video(3), "frame_stats_v1", timeout=30))
        assert isinstance(elsewhere[-1], RunSummary) and elsewhere[-1].frames_processed == 3

        # The run in progress went on where it was, to its end.
        rest = list(in_progress)
        assert isinstance(rest[-1], RunSummary) and rest[-1].frames_processed == 60
        stopping.join(timeout=30)
        assert not stopping.is_alive()
        assert balancer.connections_by_backend == {draining.running.port: 1, other.running.port: 1}
        assert client.list_pipelines()
        assert client._retired == [], "the old channel is closed once nothing runs on it"


def test_a_connection_past_its_age_leaves_its_calls_running_and_the_next_call_reaches_a_new_replica(
    make_server: ServerFactory, make_video
) -> None:
    """Behind one address, a long-lived client kept its first replica for good: one started
    later (a scale-up, a replica back from a restart) got none of its calls."""
    first, started_since = make_server(max_connection_age_seconds=1), make_server()
    with OneAddressBalancer(first.running.port) as balancer, VideodagClient(f"127.0.0.1:{balancer.port}") as client:
        assert client.list_pipelines()
        in_progress = client.upload_and_run(make_video(60), "slow", timeout=60)  # 3 s, past the age
        assert isinstance(next(event for event in in_progress if isinstance(event, FrameResult)), FrameResult)
        balancer.route_to(started_since.running.port)

        assert wait_until(lambda: bool(client.list_pipelines()) and started_since.running.port
                          in balancer.connections_by_backend, timeout=15)
        rest = list(in_progress)  # never cut for the connection's age
        assert isinstance(rest[-1], RunSummary) and rest[-1].frames_processed == 60


def test_a_balancer_still_sending_to_the_draining_replica_gets_few_new_connections(
    make_server: ServerFactory, make_video
) -> None:
    """Until its endpoint is removed, each new connection may reach the draining replica again:
    a client refused in a loop made one a refusal (238 in 15 s from 4 threads)."""
    draining = make_server(shutdown_grace_seconds=30)
    with OneAddressBalancer(draining.running.port) as balancer, VideodagClient(f"127.0.0.1:{balancer.port}") as client:
        assert client.list_pipelines()
        in_progress = client.upload_and_run(make_video(60), "slow", timeout=60)
        next(event for event in in_progress if isinstance(event, FrameResult))
        stopping = threading.Thread(target=draining.running.stop)
        stopping.start()
        assert wait_until(lambda: draining.running.run_slots.draining, timeout=10)
        refusals, video = 0, make_video(2)
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            with pytest.raises(Unavailable, match="shutting down"):
                client.submit_job(video, "frame_stats_v1", timeout=30)
            refusals += 1
        # Spaced 0.05 s, 0.1 s, 0.2 s, ... apart: about six in 1.5 s, whatever the refusals.
        assert refusals > 20 and 3 <= balancer.connections_by_backend[draining.running.port] <= 10
        in_progress.close()
        stopping.join(timeout=30)


def test_calls_sent_just_after_the_signal_to_an_idle_server_are_told_it_drains(
    make_server: ServerFactory, make_video
) -> None:
    """With nothing in progress the drain lasted 0.1 s: a run sent a few milliseconds after the
    signal (before the balancer knew) was cut by gRPC's stop as a bare CANCELLED, which reads as
    the caller's own cancel, not as a server to leave."""
    server = make_server(shutdown_grace_seconds=5)
    video = make_video(2)
    with VideodagClient(server.target) as client:
        assert client.list_pipelines()
        stopping = threading.Thread(target=server.running.stop)
        stopping.start()
        assert wait_until(lambda: server.running.run_slots.draining, timeout=10)
        for _ in range(5):  # about half a second of calls
            with pytest.raises(Unavailable) as refused:
                list(client.upload_and_run(video, "frame_stats_v1", timeout=10))
            assert refused.value.reason == "SERVER_DRAINING"
            time.sleep(0.1)
        stopping.join(timeout=30)
        assert not stopping.is_alive()
