"""The server's installed commands (`videodag-server`, `videodag-worker`): each says what to
install, instead of ending in a traceback, when the server's dependencies are missing.

`pip install videodag` installs the client library and the `videodag` CLI alone (gRPC and
protobuf), for the services that only call a server; the server needs `pip install
'videodag[server]'` (OpenCV, NumPy, ONNX Runtime, ...). What decides is the import itself,
not the list of installed distributions: a cv2 from another build of OpenCV
(opencv-contrib-python-headless, a distribution's package) serves as well, and requirements
meant for other platforms are not asked for. The `server` extra's distributions missing, read
from this package's own metadata, are named only to say what to install.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from typing import NoReturn

DISTRIBUTION = "videodag"
SERVER_EXTRA = "server"
OWN_PACKAGES = ("videodag", "videodag_service", "videodag_client")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SERVER_EXTRA_MARKER = re.compile(rf"""extra\s*==\s*["']{SERVER_EXTRA}["']""")


def missing_server_distributions() -> list[str]:
    """The distributions the `server` extra requires that are not installed (other markers
    than the extra's are not weighed: a hint, not a verdict); none when videodag itself is not
    installed as a distribution (run from a source tree)."""
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


def refuse_without_server_dependency(command: str, error: ModuleNotFoundError) -> NoReturn:
    """Exit 1 saying what to install when `error` is a third-party module the server cannot
    import; a module of this project's own missing is a broken install or a bug, raised as is."""
    if not error.name or error.name.partition(".")[0] in OWN_PACKAGES:
        raise error
    missing = missing_server_distributions()
    print(f"{command}: the server cannot import {error.name}, one of its dependencies"
          + (f" (missing: {', '.join(missing)})" if missing else "")
          + f". Install the server's extra: pip install '{DISTRIBUTION}[{SERVER_EXTRA}]' "
          f"(from a checkout: pip install '.[{SERVER_EXTRA}]'); `pip install {DISTRIBUTION}` installs the client alone",
          file=sys.stderr)
    raise SystemExit(1)


def server() -> int:
    """`videodag-server`."""
    try:
        from videodag_service.server import run_as_process
    except ModuleNotFoundError as error:
        refuse_without_server_dependency("videodag-server", error)
    return run_as_process()


def worker() -> int:
    """`videodag-worker`."""
    try:
        from videodag_service.jobs.worker_command import main
    except ModuleNotFoundError as error:
        refuse_without_server_dependency("videodag-worker", error)
    return main()
