"""Runs the `videodag` CLI as it would run on Windows, as far as Linux can show it.

    python windows_like.py [CLI arguments...]

Windows lacks what the CLI may use on POSIX systems: the `fcntl` module, `signal.SIGHUP`,
`os.O_NOFOLLOW`. Here they are taken away before the CLI is imported. Windows also renames and
removes no file some process holds open (CPython opens files without FILE_SHARE_DELETE): here
`os.replace`, `os.rename`, `os.remove` and `os.unlink` refuse a file this process holds open,
with the words of Windows' error 32. `\\` separates folders as `/` does, files opened as text
end their lines with `\r\n` unless told otherwise, and Ctrl-Break's SIGBREAK is SIGUSR1 here.

WINDOWS_LIKE_HELD_OPEN names files (`os.pathsep`-separated) held open throughout, as another
program (a spreadsheet showing the results) would hold them.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_IN_USE = "The process cannot access the file because it is being used by another process"


def _held_open_here(path: Any) -> bool:
    try:
        wanted = os.stat(path, follow_symlinks=False)
    except (OSError, TypeError, ValueError):
        return False
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            if os.path.samestat(wanted, os.fstat(int(descriptor))):
                return True
        except OSError:
            continue
    return False


def _refusing_open_files(operation: Callable[..., Any], path_arguments: int) -> Callable[..., Any]:
    def refusing(*arguments: Any, **keywords: Any) -> Any:
        for path in arguments[:path_arguments]:
            if _held_open_here(path):
                raise PermissionError(errno.EACCES, _IN_USE, os.fspath(path))
        return operation(*arguments, **keywords)

    return refusing


def _crlf_text(opener: Callable[..., Any], mode_position: int) -> Callable[..., Any]:
    """`opener` (open, os.fdopen) writing `\r\n` for each `\n` of a text file, as on Windows."""
    def opening(*arguments: Any, **keywords: Any) -> Any:
        mode = keywords.get("mode", arguments[mode_position] if len(arguments) > mode_position else "r")
        if "b" not in mode and set(mode) & set("wax+") and keywords.get("newline") is None:  # reads take both
            keywords["newline"] = "\r\n"
        return opener(*arguments, **keywords)

    return opening


def act_like_windows() -> None:
    sys.modules["fcntl"] = None  # type: ignore[assignment]  # `import fcntl` raises ImportError
    del signal.SIGHUP
    del os.O_NOFOLLOW
    signal.SIGBREAK = signal.SIGUSR1  # type: ignore[attr-defined]
    os.altsep = "\\"
    builtins.open = _crlf_text(builtins.open, 1)
    os.fdopen = _crlf_text(os.fdopen, 1)
    for name, path_arguments in (("replace", 2), ("rename", 2), ("remove", 1), ("unlink", 1)):
        setattr(os, name, _refusing_open_files(getattr(os, name), path_arguments))


if __name__ == "__main__":
    act_like_windows()
    from videodag_client.cli import main

    with contextlib.ExitStack() as held:
        for path in filter(None, os.environ.get("WINDOWS_LIKE_HELD_OPEN", "").split(os.pathsep)):
            held.enter_context(open(path, "ab"))
        exit_code = main(sys.argv[1:])
    sys.exit(exit_code)
