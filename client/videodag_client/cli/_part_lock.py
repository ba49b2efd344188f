"""One command at a time writes a results file: its `FILE.part` is locked while it is written.

Two commands given the same `-o FILE` (an `xargs -P` over videos of one name in two folders, a
batch started again while the first still runs) would otherwise both write `FILE.part`: each
truncates it, the first to finish renames it over FILE, and FILE held the other video's
results while its command said it succeeded. The lock is `flock`'s, which ends with the
process: a command killed leaves no stale lock behind. Where the file system has no such locks,
the file is written unlocked, as before. On a system without `fcntl` (Windows) no descriptor is
held either: Windows renames and removes no file that is open.
"""

from __future__ import annotations

import os

from videodag_client.cli._arguments import UsageError

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

# Files of the command's own naming are opened never through a link planted there, where the
# system can say so (Windows cannot, and has no such links for others to plant).
NO_FOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


def _lock(descriptor: int, part: str, output: str) -> None:
    """Locks the open `part` for this process alone, or refuses the command (nothing sent yet)."""
    assert fcntl is not None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(
            f"cannot write results to {output}: another videodag command is writing them ({part} is locked): "
            "wait for it to end, or give this one another -o"
        ) from None
    except OSError:  # a file system without flock: written unlocked
        return


_ATTEMPTS = 20


def open_locked(part: str, output: str) -> int | None:
    """`part` opened for writing (created if missing, never through a link planted there) and
    locked, before anything in it is touched: emptying it first would empty another's. None,
    and nothing opened, on a system without `fcntl`.

    The lock is taken on the file the name led to when it was opened. The command that held
    the lock may have renamed that file to its results file (or removed it) meanwhile: locked
    then, it would be a lock on nothing of ours, and the next command would take the new
    `part` for its own. So the name is opened again until the file locked is the one it names.
    """
    if fcntl is None:
        return None
    for _ in range(_ATTEMPTS):
        descriptor = os.open(part, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o666)
        try:
            _lock(descriptor, part, output)
            if _names(part, descriptor):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
    raise UsageError(f"cannot write results to {output}: {part} keeps being replaced by another command")


def _names(path: str, descriptor: int) -> bool:
    """Whether `path` still names the file open as `descriptor`."""
    try:
        return os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(descriptor))
    except FileNotFoundError:
        return False
