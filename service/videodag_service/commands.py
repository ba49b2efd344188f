"""The server's installed commands (`videodag-server`, `videodag-worker`): each checks that the
server's dependencies are installed before it imports the code that needs them.

`pip install videodag` installs the client library and the `videodag` CLI alone (gRPC and
protobuf), for the services that only call a server; the server needs `pip install
'videodag[server]'` (OpenCV, NumPy, ONNX Runtime, ...). Run from a client-only install, a
command would otherwise end in a traceback about `cv2`. The extra's requirements are read
from this package's own metadata, so the check follows `pyproject.toml`.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

DISTRIBUTION = "videodag"
SERVER_EXTRA = "server"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SERVER_EXTRA_MARKER = re.compile(rf"""extra\s*==\s*["']{SERVER_EXTRA}["']""")


def missing_server_distributions() -> list[str]:
    """The distributions the `server` extra requires that are not installed; none when videodag
    itself is not installed as a distribution (run from a source tree, whose user installs
    what they need)."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        match = _NAME.match(name.strip())
        if match is None or not _SERVER_EXTRA_MARKER.search(marker):
            continue
        try:
            metadata.distribution(match.group())
        except metadata.PackageNotFoundError:
            missing.append(match.group())
    return missing


def require_server_dependencies(command: str) -> None:
    """Exit 1 with what to install when the server's dependencies are missing."""
    missing = missing_server_distributions()
    if missing:
        print(f"{command}: the server's dependencies are not installed (missing: {', '.join(missing)}); "
              f"this is a client-only install. Install the server's extra: pip install '{DISTRIBUTION}[{SERVER_EXTRA}]' "
              f"(from a checkout: pip install '.[{SERVER_EXTRA}]')", file=sys.stderr)
        raise SystemExit(1)


def server() -> int:
    """`videodag-server`."""
    require_server_dependencies("videodag-server")
    from videodag_service.server import main

    return main()


def worker() -> int:
    """`videodag-worker`."""
    require_server_dependencies("videodag-worker")
    from videodag_service.jobs.worker_command import main

    return main()
