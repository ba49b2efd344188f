"""The server's folders must be the server's: ones any local user could have planted are refused.

The upload folder (`--temp-dir`, /tmp/videodag by default) and the job data folder
(`--data-dir`) hold every caller's videos and results, and the decoder opens each upload again
by its path. In /tmp anyone can make such a folder, or a folder above it, before the server
does; its owner could then read the job store, forge results, or swap an upload for a
symbolic link to a file only the server may read, whose frames then go back to the caller.
So the server refuses to start on such a path, saying why. Every folder and link on the way
is looked at, as OpenSSH's StrictModes does: whoever controls any of them controls what lies
below.

What only someone trusted with the machine could have set up is served from, with a warning:
another user's folder outside a place anyone may write to (a bind mount, a group-shared
volume), and a folder anyone may write to without the sticky bit (a Kubernetes emptyDir
volume is root's, mode 0777, in a pod with no other user). Root's folders are trusted (root
can do anything anyway). A folder others may only read gets a warning too
(`temp_dir_open_to_others`, `data_dir_open_to_others`), since every file in it is 0600.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_warned: set[str] = set()
_warned_lock = threading.Lock()


class FolderNotPrivate(ValueError):
    """An upload or data folder any local user could have planted; the server does not start on it."""


class FolderNotWritable(OSError):
    """An upload or data folder the server cannot make, or cannot write in: every upload would
    fail, so the server does not start, naming the folder and its setting. Its `errno` and
    `strerror` are the system's (EROFS, EACCES), for what callers are told at run time."""

    def __init__(self, message: str, error_number: int) -> None:
        super().__init__(error_number, os.strerror(error_number))
        self.message = message

    def __str__(self) -> str:
        return self.message


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _anyone_may_add_to(folder: Path) -> bool:
    """Whether every user may create entries in `folder` (/tmp, /dev/shm, a chmod 777 folder)."""
    try:
        return bool(os.stat(folder).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def _on_the_way(path: Path) -> list[Path]:
    """Every entry from the root down to `path`, as written and as its links resolve."""
    entries: list[Path] = []
    for full in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for entry in (*reversed(full.parents[:-1]), full):  # without "/" itself
            if entry not in entries:
                entries.append(entry)
    return entries


def refuse_unless_controlled_by_us(path: Path, what: str, named: Path | None = None) -> None:
    """Raise FolderNotPrivate when any folder or link on the way to `path` belongs to someone
    other than this process's user or root and sits where anyone may create entries. Log a
    warning (once a process) for another user's entry elsewhere, and for a folder anyone may
    write to without the sticky bit. `named`, when given, is the folder the messages name (one
    below `path`, not made yet)."""
    trusted = {os.geteuid(), 0}
    path_named = named if named is not None else path
    for entry in _on_the_way(path):
        status = os.lstat(entry)
        kind = "a symbolic link" if stat.S_ISLNK(status.st_mode) else "a folder"
        if status.st_uid not in trusted:
            owner = _owner_name(status.st_uid)
            if _anyone_may_add_to(entry.parent):
                raise FolderNotPrivate(
                    f"{what} {os.fspath(path_named)}: {entry} is {kind} owned by {owner}, made where any user may make "
                    f"one: its owner could read and replace what the server keeps there; give the server a folder "
                    f"its own user (or root) made, such as one it creates itself"
                )
            _warn_once(f"{entry}: owned by {owner}",
                       f"{what} {os.fspath(path_named)}: {entry} is {kind} owned by {owner}, not by the server's user "
                       f"({_owner_name(os.geteuid())}): its owner can read and replace what the server keeps there")
        if stat.S_ISDIR(status.st_mode) and status.st_mode & stat.S_IWOTH and not status.st_mode & stat.S_ISVTX:
            _warn_once(f"{entry}: open",
                       f"{what} {os.fspath(path_named)}: every user may add, rename and remove entries in {entry} "
                       f"(mode {stat.S_IMODE(status.st_mode):04o}), and so replace what the server keeps below it; "
                       "fine where the server's user is the only one (a container), otherwise chmod 1777 or 700")


def _warn_once(key: str, message: str) -> None:
    """A folder checked again (the data folder, then the store and the uploads in it) warns once."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)


def missing_folders(path: Path) -> list[Path]:
    """The folders `private_directory(path)` would make, deepest first: what a failed start removes."""
    missing: list[Path] = []
    for entry in (Path(os.path.abspath(path)), *Path(os.path.abspath(path)).parents):
        if os.path.lexists(entry):
            break
        missing.append(entry)
    return missing


def private_directory(path: Path, what: str = "the server's folder") -> Path:
    """`path`, created 0700 (its missing parents too) unless it exists; an existing one keeps its mode.

    The server's own folders hold other people's videos and results, so one it creates is
    private; mkdir's mode is filtered by the umask, hence the chmod. A folder the operator
    made is theirs: it is not tightened under them (the server warns instead). A path any
    local user could have planted is refused (FolderNotPrivate, see the module), before
    anything is made in it.
    """
    if ".." in path.parts:  # the walk reads paths as written; `..` after a link would mislead it
        raise FolderNotPrivate(f"{what} {os.fspath(path)}: give it without '..'")
    existing = next(entry for entry in (path, *path.parents) if os.path.lexists(entry))
    if not existing.is_dir():
        raise FolderNotPrivate(f"{what} {os.fspath(path)}: {existing} is not a folder (a file, or a link to nothing)")
    refuse_unless_controlled_by_us(existing, what, named=path)
    for missing in reversed(missing_folders(path)):
        try:
            missing.mkdir(mode=0o700)
            missing.chmod(0o700)
        except FileExistsError:
            pass  # made meanwhile by another process, with a mode and an owner of its choosing
        except OSError as error:
            raise FolderNotWritable(f"{what} {os.fspath(path)}: {missing} cannot be made: {_why_unwritable(error)}",
                                    error.errno or errno.EACCES) from error
    if not path.is_dir():
        raise FolderNotPrivate(f"{what} {os.fspath(path)} is not a folder (a file, or a link to nothing)")
    refuse_unless_controlled_by_us(path, what)
    return path


def refuse_unless_writable(path: Path, what: str) -> None:
    """Raise FolderNotWritable unless a file can be made in `path`: at start, so that a folder on a
    read-only file system (a container's readOnlyRootFilesystem) stops the server, rather than
    every upload failing. Tried, not asked (`os.access` knows no capabilities, ACLs or mounts):
    an unnamed file (O_TMPFILE where the system has it) that nothing can leave behind."""
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise FolderNotWritable(f"{what} {os.fspath(path)} cannot be written in: {_why_unwritable(error)}",
                                error.errno or errno.EACCES) from error


def _why_unwritable(error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "it is on a read-only file system (mount a writable volume there, or choose another folder)"
    if isinstance(error, PermissionError):
        return f"the server's user, {_owner_name(os.geteuid())}, may not write there"
    return error.strerror or str(error)


def mode_open_to_others(folder: str | os.PathLike[str]) -> int | None:
    """The permission bits of an existing folder that others may read, write or enter, or None
    when it gives them nothing (or does not exist yet): a folder an operator made keeps its
    mode, since the server must not tighten one others may rely on, so it only warns."""
    try:
        mode = os.stat(folder).st_mode & 0o777
    except FileNotFoundError:
        return None
    return mode if mode & 0o077 else None
