"""The client's connection to its server, made again when the server says it is draining.

A server told to stop (SIGTERM) drains: it refuses new runs and jobs with UNAVAILABLE
`SERVER_DRAINING` and goes on serving what is in progress. A client keeps its connection, so
behind one address (a Kubernetes Service, an L4 load balancer: they choose a replica per
connection) each run it started went to the draining replica, refused, until that replica
exited. Told so once, a client that made its own channel makes a new one: the calls after it
go down a new connection, which the balancer gives to a replica that is not stopping, while
the calls in progress on the old one finish there. The old channel is closed once nothing
runs on it. A channel the caller made stays the caller's to manage, and a channel that
spreads its calls already (round robin) is kept (`leaves_a_draining_server`).

The price, with the embedded job backend: a job is its replica's own, so once connected
elsewhere, a lookup of a job on the draining replica answers NOT_FOUND, where the old
connection would have reached it until that replica exited. Replicas behind one address
share a Redis job backend.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from videodag.v1 import video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client._errors import from_grpc_error
from videodag_client._wire import method_path

DRAINING = "SERVER_DRAINING"


class Connection:
    """One channel, the callables made on it, and the calls under way on it.

    The uploading calls (UploadAndRun, SubmitJob) take their requests as wire bytes (`_wire`).
    A call is counted from before it starts: `enter` and `leave` around it, `track` for a
    stream or future that goes on after it started; all of them, and `idle`, under the client's lock."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        service = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"]
        self.upload_and_run = channel.stream_stream(
            method_path(service, "UploadAndRun"),
            request_serializer=None,
            response_deserializer=video_pipeline_service_pb2.UploadAndRunResponse.FromString,
        )
        self.submit_job = channel.stream_unary(
            method_path(service, "SubmitJob"),
            request_serializer=None,
            response_deserializer=video_pipeline_service_pb2.SubmitJobResponse.FromString,
        )
        self._starting = 0
        self._ongoing: weakref.WeakSet[grpc.Future] = weakref.WeakSet()

    def enter(self) -> None:
        self._starting += 1

    def leave(self) -> None:
        self._starting -= 1

    def track(self, call: grpc.Future) -> None:
        self._ongoing.add(call)

    def idle(self) -> bool:
        """Nothing starting or under way on it: closing it cuts no call short."""
        return self._starting == 0 and all(call.done() for call in list(self._ongoing))


def says_draining(error: grpc.RpcError) -> bool:
    """Whether a failed call is the server's UNAVAILABLE `SERVER_DRAINING`: its refusal of a
    new run or job, or its end of one it could not finish in its grace."""
    code = getattr(error, "code", None)
    if not callable(code) or code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    return from_grpc_error(error).reason == DRAINING


def leaves_a_draining_server(target: str, options: Sequence[tuple[str, Any]]) -> bool:
    """Whether a client of `target` with these channel options connects again when told its
    server drains: when all its calls go down one connection (gRPC's default, pick_first, to
    one address or one name). A round-robin channel spreads them already, and a refused call
    retried goes to another replica: a new channel would connect to every replica again and
    send the retry to whichever answers first, the draining one as likely as not. A list of
    addresses (`ipv4:A,B`) would connect to its first again."""
    chosen = dict(options)
    policies = {chosen.get("grpc.lb_policy_name", "pick_first"), *_service_config_policies(chosen)}
    addresses = target.partition(":")[2] if target.startswith(("ipv4:", "ipv6:")) else ""
    return policies == {"pick_first"} and "," not in addresses


def _service_config_policies(options: dict[str, Any]) -> list[str]:
    """The load-balancing policies a `grpc.service_config` option names (`round_robin`), as
    gRPC's documentation shows choosing one; one that does not parse names none here."""
    try:
        config = json.loads(options.get("grpc.service_config") or "{}")
        named = [config.get("loadBalancingPolicy")] + [next(iter(entry), None)
                                                       for entry in config.get("loadBalancingConfig") or []]
    except (ValueError, TypeError, AttributeError):
        return []
    return [str(policy).lower() for policy in named if policy]


def retire(connections: list[Connection]) -> tuple[list[Connection], list[Connection]]:
    """`connections` split into those still in use and those idle, to close."""
    idle = [connection for connection in connections if connection.idle()]
    return [connection for connection in connections if connection not in idle], idle


ChannelMaker = Callable[[], grpc.Channel]
