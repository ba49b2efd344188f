"""The installed release's version, as `--version` and the server's start line give it.

Replicas, RQ workers and clients of two releases may share a job store during an upgrade;
the version is how an operator tells which process runs which release. It is read from the
installed distribution's metadata, so it is the version pip installed, not one kept by hand.
"""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "videodag"


def installed_version() -> str:
    """The installed distribution's version; code run from a source tree pip never installed has none."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"
