"""The server address a client is given, checked before gRPC takes it.

gRPC takes any text as a target and fails only once a call connects, with UNAVAILABLE, which
reads as "retry later": a URL (`http://host:50051`: gRPC is not HTTP), a slash or a space
left over from a copy, a port in other digits than ASCII's. Or it dials what was not meant in
silence: `localhost` alone dials port 443, never a videodag server's. These are mistakes, said
at once as a ValueError naming the text.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse

_PATH_SCHEMES = ("unix:", "unix-abstract:", "vsock:")
_ADDRESS_LIST_SCHEMES = ("ipv4:", "ipv6:")
_DNS_PREFIX = re.compile(r"^dns:(//[^/]*/)?")
_AUTHORITY = re.compile(r"^//[^/]*/")
# Schemes people type for a web or gRPC server, which gRPC does not resolve; other schemes (xds:,
# a resolver of the caller's own) are gRPC's to resolve and are passed on unchecked.
_URL_SCHEME = re.compile(r"^(https?|grpcs?|h2c?|wss?|tcp)://", re.IGNORECASE)
_OTHER_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def checked_target(text: str) -> str:
    """`text` if it is HOST:PORT (a port in 1..65535, an IPv6 host in brackets) or a gRPC target
    URI: `dns:` and `ipv4:`/`ipv6:` ones are checked the same way, `unix:PATH` and its kin need
    something after the scheme, other schemes (`xds:///service`) are gRPC's to resolve.
    Otherwise a ValueError that says why."""
    if not text.strip():
        raise ValueError("must not be empty; give HOST:PORT, such as localhost:50051")
    if text != text.strip():
        raise ValueError(f"has spaces around it: {text!r}")
    if text.startswith(_PATH_SCHEMES):
        if not text.partition(":")[2]:
            raise ValueError(f"names no socket after the scheme: {text!r}")
        return text
    if text.startswith(_ADDRESS_LIST_SCHEMES):
        # `ipv6:[::1]:50051`, `ipv6:///[::1]:50051` or percent-encoded `ipv6:%5B::1%5D:50051`.
        addresses = urllib.parse.unquote(_AUTHORITY.sub("", text.partition(":")[2], count=1))
        for address in addresses.split(","):
            _check_host_port(address, text)
        return text
    address = _DNS_PREFIX.sub("", text, count=1)
    if scheme := _URL_SCHEME.match(address):
        raise ValueError(f"give HOST:PORT, not a {scheme.group(1)}:// URL (gRPC is not HTTP): {text!r}")
    if address == text and _OTHER_SCHEME.match(text):
        return text
    _check_host_port(address, text)
    return text


def _check_host_port(address: str, original: str) -> None:
    host, port = _split_host_port(address, original)
    if not host:
        raise ValueError(f"no host before the port: {original!r}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"the port must be a number from 1 to 65535, got {port!r} in {original!r}")


def _split_host_port(address: str, original: str) -> tuple[str, str]:
    if address.startswith("["):  # [IPv6]:PORT
        host, _, rest = address[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(f"needs a port: [ADDRESS]:PORT, got {original!r}")
        return host, rest[1:]
    if address.count(":") > 1:
        raise ValueError(f"put an IPv6 address in brackets, as [::1]:50051, got {original!r}")
    host, colon, port = address.rpartition(":")
    if not colon:
        raise ValueError(f"needs a port: HOST:PORT, such as {address or 'localhost'}:50051 (gRPC would dial 443), "
                         f"got {original!r}")
    return host, port


def stays_on_this_machine(target: str) -> bool:
    """Whether every address `target` (as `checked_target` takes it) names is this machine's: a
    socket path, `localhost` (and `*.localhost`), a loopback address. What else it names, a clear
    text connection carries over a network, bearer token and all. Other schemes (`xds:`) are
    resolved by gRPC and count as leaving the machine."""
    if target.startswith(_PATH_SCHEMES):
        return True
    if target.startswith(_ADDRESS_LIST_SCHEMES):
        addresses = urllib.parse.unquote(_AUTHORITY.sub("", target.partition(":")[2], count=1)).split(",")
    elif (address := _DNS_PREFIX.sub("", target, count=1)) == target and _OTHER_SCHEME.match(target):
        return False
    else:
        addresses = [address]
    return all(_is_loopback(_split_host_port(address, target)[0]) for address in addresses)


def _is_loopback(host: str) -> bool:
    """A loopback or unspecified address (0.0.0.0 reaches this machine), `localhost`, or a name
    the hosts file gives loopback addresses alone: the machine's own name on Debian,
    `localhost.localdomain`, `ip6-localhost`. The file only: a DNS lookup could hold the
    command up (for a warning) longer than its own call, and ignore its deadline."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always the loopback
        return True
    try:
        return _is_loopback_address(name.partition("%")[0])  # `%`: an IPv6 zone index
    except ValueError:
        pass
    addresses = _hosts_file_addresses(name)
    try:
        return bool(addresses) and all(_is_loopback_address(address.partition("%")[0]) for address in addresses)
    except ValueError:
        return False


def _hosts_file_addresses(name: str) -> list[str]:
    """The addresses the hosts file lists for `name` (lowercase)."""
    path = (os.path.join(os.environ.get("SYSTEMROOT", r"C:\Windows"), "System32", "drivers", "etc", "hosts")
            if os.name == "nt" else "/etc/hosts")
    try:
        with open(path, encoding="utf-8", errors="replace") as hosts:
            lines = hosts.read(1 << 20).splitlines()
    except OSError:
        return []
    return [words[0] for words in (line.partition("#")[0].split() for line in lines)
            if len(words) > 1 and name in (word.lower() for word in words[1:])]


def _is_loopback_address(text: str) -> bool:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1
    return address.is_loopback or address.is_unspecified
