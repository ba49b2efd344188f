"""What the server says at start about who can reach it: plaintext on an interface other
hosts reach (anyone there may call it, or read the tokens in transit), and secrets (the TLS
key, the token file) that other users of the machine can read.

Apart from the settings, which allow all of it: a private network, or a proxy in front that
ends TLS and checks callers, can make each safe. So each is a warning, never a refusal.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path

from videodag_service.settings import Settings


def exposure_warnings(settings: Settings) -> list[str]:
    """One line for each way the server's settings expose it."""
    said = []
    if not _is_loopback(settings.host):
        where = settings.host + (f" port {settings.port}" if settings.port else "")
        plaintext = settings.tls_cert_file is None
        callers_checked = settings.requires_token or settings.tls_client_ca_file is not None
        if not callers_checked:
            # TLS alone proves the server to its callers, not the callers to the server.
            said.append(f"serving {'plaintext ' if plaintext else ''}without tokens or client certificates on "
                        f"{where}: whoever reaches the port can run pipelines and read, cancel and delete every "
                        "job; give it tokens (--token-file)" + (" and TLS (--tls-cert-file, --tls-key-file)"
                                                                if plaintext else "")
                        + ", or listen on 127.0.0.1 behind a proxy that checks callers")
        elif plaintext:
            said.append(f"serving plaintext on {where}: the bearer tokens, the videos and the results cross the "
                        "network in clear text; give it TLS (--tls-cert-file, --tls-key-file), or a proxy that "
                        "ends TLS in front of it")
    for what, path in (("TLS key", settings.tls_key_file), ("token file", settings.token_file)):
        if path is not None and (mode := _mode_others_can_read(path)) is not None:
            said.append(f"the {what} {path} can be read by other users of this machine (mode {mode:o}): "
                        f"chmod 600 it")
    return said


def _is_loopback(host: str) -> bool:
    """The names and numbers of this machine's loopback: `localhost` (any case, a trailing dot),
    `ip6-localhost`, 127/8 in any form `inet_aton` reads (`127.1`), ::1 and ::ffff:127.x."""
    name = host.strip("[]").rstrip(".").lower()
    if name in ("localhost", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))  # 127.1, 0x7f.1
        except OSError:  # a host name, or "" (every interface)
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _mode_others_can_read(path: Path) -> int | None:
    """The file's permission bits when its group or others may read it; None otherwise, or when
    it cannot be looked at (its own read says why, as the server starts)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & (stat.S_IRGRP | stat.S_IROTH) else None
