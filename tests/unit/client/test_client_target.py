"""`VideodagClient` refuses a target that cannot be meant at once, as a ValueError naming it,
where gRPC would dial port 443 in silence or fail the first call as UNAVAILABLE ("retry later")."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from videodag_client import AsyncVideodagClient, VideodagClient
from videodag_client._connection import leaves_a_draining_server
from videodag_client._target import stays_on_this_machine


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("localhost",
         "target: needs a port: HOST:PORT, such as localhost:50051 (gRPC would dial 443), got 'localhost'"),
        ("http://localhost:50051",
         "target: give HOST:PORT, not a http:// URL (gRPC is not HTTP): 'http://localhost:50051'"),
        ("localhost:50051/", "target: the port must be a number from 1 to 65535, got '50051/' in 'localhost:50051/'"),
        ("localhost:50051 ", "target: has spaces around it: 'localhost:50051 '"),
        ("", "target: must not be empty; give HOST:PORT, such as localhost:50051"),
        ("grpc://localhost:50051",
         "target: give HOST:PORT, not a grpc:// URL (gRPC is not HTTP): 'grpc://localhost:50051'"),
        ("ipv6:///[::1]", "target: needs a port: [ADDRESS]:PORT, got 'ipv6:///[::1]'"),
    ],
)
def test_a_target_that_cannot_be_meant_is_a_value_error_before_any_channel(target: str, says: str) -> None:
    threads = threading.active_count()
    with pytest.raises(ValueError) as refused:
        VideodagClient(target)
    assert str(refused.value) == says
    with pytest.raises(ValueError, match=r"^target: "):
        AsyncVideodagClient(target)
    assert threading.active_count() == threads


@pytest.mark.parametrize("target", ["localhost:50051", "[::1]:50051", "dns:///localhost:50051", "unix:/tmp/v.sock",
                                    "ipv4:127.0.0.1:50051", "ipv4:///127.0.0.1:50051", "ipv6:///[::1]:50051",
                                    "ipv6:%5B::1%5D:50051", "xds:///videodag", "HTTP-ish:50051"])
def test_targets_gRPC_takes_are_taken(target: str) -> None:
    VideodagClient(target).close()


@pytest.mark.parametrize("target", ["localhost:50051", "LocalHost.:50051", "cam.localhost:50051", "127.0.0.2:50051",
                                    "[::1]:50051", "[::ffff:127.0.0.1]:50051", "dns:///localhost:50051",
                                    "ipv4:127.0.0.1:50051,127.0.0.2:50052", "ipv6:%5B::1%5D:50051",
                                    "unix:/tmp/v.sock", "0.0.0.0:50051", "[::]:50051"])
def test_loopback_addresses_and_sockets_stay_on_this_machine(target: str) -> None:
    assert stays_on_this_machine(target)


@pytest.mark.parametrize("target", ["videodag:50051", "10.0.0.7:50051", "[fe80::1%eth0]:50051",
                                    "ipv4:127.0.0.1:50051,10.0.0.7:50051", "localhost.example.com:50051",
                                    "dns:///videodag.internal:50051", "xds:///videodag"])
def test_other_addresses_leave_it(target: str) -> None:
    assert not stays_on_this_machine(target)


def test_a_name_the_hosts_file_gives_loopback_addresses_stays_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Debian names the machine itself (127.0.1.1); a name with any other address leaves it.
    Read from the file, never looked up: a slow DNS held the command up, past its --timeout."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.1.1\tVM vm.example  # the machine\n::1 vm ip6-localhost\n"
                     "127.0.0.1 split\n10.0.0.7 split\n# 127.0.0.1 commented\n")
    real_open = open

    def opening(path: object, *arguments: object, **keywords: object) -> object:
        return real_open(hosts if path == "/etc/hosts" else path, *arguments, **keywords)  # type: ignore[call-overload]

    def no_lookups(*_: object, **__: object) -> object:
        raise AssertionError("looked up")

    monkeypatch.setattr("builtins.open", opening)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    assert stays_on_this_machine("vm:50051") and stays_on_this_machine("VM.example.:50051")
    assert stays_on_this_machine("ip6-localhost:50051")
    assert not stays_on_this_machine("split:50051")
    assert not stays_on_this_machine("commented:50051")
    assert not stays_on_this_machine("videodag:50051")


@pytest.mark.parametrize(
    ("target", "options", "leaves"),
    [
        ("videodag:50051", [], True),
        ("dns:///videodag.default.svc:50051", [("grpc.lb_policy_name", "pick_first")], True),
        ("ipv4:10.0.0.1:50051", [], True),
        # Calls spread already: a refused one retried goes to another replica, on the same channel.
        ("dns:///videodag-headless:50051", [("grpc.lb_policy_name", "round_robin")], False),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", [("grpc.lb_policy_name", "round_robin")], False),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", [], False),  # a new channel would take the first again
        # Round robin as gRPC's documentation chooses it, in a service config.
        ("dns:///videodag-headless:50051", [("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}')],
         False),
        ("dns:///videodag-headless:50051", [("grpc.service_config", '{"loadBalancingPolicy": "ROUND_ROBIN"}')], False),
        ("videodag:50051", [("grpc.service_config", '{"loadBalancingConfig": [{"pick_first": {}}]}')], True),
        ("videodag:50051", [("grpc.service_config", '{"methodConfig": []}')], True),
    ],
)
def test_a_client_leaves_a_draining_server_only_where_all_its_calls_go_down_one_connection(
    target: str, options: list[tuple[str, str]], leaves: bool
) -> None:
    assert leaves_a_draining_server(target, options) is leaves
