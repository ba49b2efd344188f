"""Python processes that meet a machine's trouble a test cannot make for real without root's
mount namespaces (no writable temporary folder, no shared memory), made where Python meets it."""

from __future__ import annotations

import os
from pathlib import Path


def environment_running(folder: Path, code: str) -> dict[str, str]:
    """This environment, with `code` run first by every Python process started in it (a
    `sitecustomize` module written in `folder`/site)."""
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(code)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


NO_TEMPORARY_FOLDER = "import tempfile\ntempfile._candidate_tempdir_list = lambda: ['/nonexistent/videodag-test']\n"
"""Python finds no usable temporary folder (a read-only root filesystem, TMPDIR unset)."""

READ_ONLY_SHARED_MEMORY = """\
import errno, _posixshmem
def refused(*arguments, **keywords):
    raise OSError(errno.EROFS, "Read-only file system")
_posixshmem.shm_open = refused
"""
"""No shared-memory segment can be made (a read-only /dev/shm)."""

NO_THREAD_FOR_GRPCS_SERVING = """\
import threading
_start = threading.Thread.start
def refuse(thread):
    if getattr(getattr(thread, "_target", None), "__name__", "") == "_serve":
        raise RuntimeError("can't start new thread")
    _start(thread)
threading.Thread.start = refuse
"""
"""gRPC's server cannot start the thread that serves its calls (a pids limit met as it starts),
after it has bound its port."""
