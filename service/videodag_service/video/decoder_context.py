"""Where decoder processes come from: multiprocessing's forkserver, preloaded once.

The forkserver is a clean single-threaded process started once, with OpenCV and the decoder
module preloaded, that forks one decoder per run in milliseconds; a plain fork of the
multi-threaded server is never used. Objects shared with a decoder process when it starts
(the ring's name travels by message, but an upload's abandon event is inherited) must be
created from this same context.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import sys
import tempfile
import threading
from types import ModuleType
from typing import Any

_START_LOCK = threading.Lock()
_preload_set = False


def start_decoder_server() -> None:
    """Start the forkserver now (once per process, a few tenths of a second with its imports),
    so that the first run does not pay for it; later calls return at once."""
    context = decoder_context()
    if context.get_start_method() == "forkserver":
        try:
            multiprocessing.forkserver.ensure_running()
        except FileNotFoundError as error:
            if "No usable temporary directory" not in str(error):
                raise
            # A read-only root filesystem (a container's) with TMPDIR unset: Python's own words
            # list the folders it tried, not what to do.
            raise OSError(
                f"decoder processes cannot start: their forkserver's socket goes in a temporary folder, and none "
                f"is writable ({error.strerror}); set TMPDIR to a writable folder (on the volume of --temp-dir, "
                "say)"
            ) from error
        except OSError as error:
            # The forkserver listens on a Unix socket in a folder under TMPDIR, and such a path
            # holds about 107 bytes: a long TMPDIR would otherwise only say "AF_UNIX path too long".
            if "AF_UNIX path too long" not in str(error):
                raise
            raise OSError(
                f"decoder processes cannot start: their forkserver's socket goes in a folder under "
                f"{tempfile.gettempdir()} (TMPDIR), too long a path for a Unix socket; set TMPDIR to a "
                "folder with a shorter path"
            ) from error


def decoder_context() -> Any:
    """multiprocessing's forkserver, preloaded with OpenCV and the decoder (spawn where it is missing).

    The preload only takes effect before the forkserver's first start.
    """
    global _preload_set
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    with _START_LOCK:
        if not _preload_set:
            context.set_forkserver_preload(_preload_modules())
            _preload_set = True
    return context


def _preload_modules() -> list[str]:
    """The decoder, plus what the parent's main module imports.

    multiprocessing runs the parent's main module again in every child, so that what it
    defines can be unpickled there; the forkserver does not preload it (Python 3.11 never
    hands it the main path), so each decoder would import the server's whole stack again:
    0.4 s a run under the `videodag-server` script. With those imports preloaded, running
    the main module again costs a few milliseconds. The main module itself is left out:
    under `python -m videodag_service.server` each child runs it again by that name, and
    runpy warns (a RuntimeWarning in every decoder's stderr) when the name is imported already.
    """
    modules = ["__main__", "videodag_service.video.decoder_process"]
    main = sys.modules.get("__main__")
    if main is None:
        return modules
    names = {value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
             for value in vars(main).values()}
    names.discard(getattr(getattr(main, "__spec__", None), "name", None))
    # A package's __main__ runs its program when imported: never preload one.
    modules += sorted(
        name for name in names
        if isinstance(name, str) and name not in {"__main__", "__mp_main__", "builtins"}
        and not name.endswith(".__main__")
    )
    return modules


