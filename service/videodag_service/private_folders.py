"""The server's folders must be the server's: ones any local user could have planted are refused.

The upload folder (`--temp-dir`, /tmp/videodag by default) and the job data folder
(`--data-dir`) hold every caller's videos and results, and the decoder opens each upload again
by its path. In /tmp anyone can make such a folder before the server does, and a folder
anyone may write to lets anyone rename what is in it: either way another local user could
read the job store, forge results, or swap an upload for a symbolic link to a file only the
server may read, whose frames then go back to the caller. The server used to take such a
folder as it found it; it now refuses to start on one, saying why.

A folder another user owns outside such a shared place (a bind mount an administrator
prepared, a group-shared volume) was put there by someone trusted with the machine: it is
served from, with a warning naming its owner. Root's folders are trusted (root can do anything
anyway): a volume mounted for a container is often root's, shared with the server's group. A
folder others may only read is served from with a warning too (`temp_dir_open_to_others`,
`data_dir_open_to_others`), since every file in it is 0600.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

logger = logging.getLogger(__name__)


class FolderNotPrivate(ValueError):
    """An upload or data folder another local user could control; the server does not start on it."""


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


def refuse_unless_controlled_by_us(path: Path, what: str) -> None:
    """Raise FolderNotPrivate when another local user could control `path` (an existing folder):
    it, or the symbolic link it is, belongs to someone other than this process's user or root and
    sits where anyone may create entries, or anyone may add and rename files in it (writable by
    others and not sticky). Another user's folder elsewhere is logged as a warning."""
    trusted = {os.geteuid(), 0}
    remedy = "remove it, or give the server a folder its user owns"
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in trusted:
        if _anyone_may_add_to(path.absolute().parent):
            raise FolderNotPrivate(
                f"{what} {os.fspath(path)} is a symbolic link owned by {_owner_name(link.st_uid)}, made where any user "
                f"may make one, who can point it elsewhere at any time; {remedy}"
            )
        logger.warning("%s %s is a symbolic link owned by %s, who can point it elsewhere at any time",
                       what, os.fspath(path), _owner_name(link.st_uid))
    folder = os.stat(path)
    if folder.st_uid not in trusted:
        if _anyone_may_add_to(Path(os.path.realpath(path)).parent):
            raise FolderNotPrivate(
                f"{what} {os.fspath(path)} is owned by {_owner_name(folder.st_uid)}, not by the server's user "
                f"({_owner_name(os.geteuid())}), in a folder where any user may make it: its owner could read "
                f"and replace what the server keeps there; {remedy}"
            )
        logger.warning("%s %s is owned by %s, not by the server's user (%s): its owner can read and replace what "
                       "the server keeps there", what, os.fspath(path), _owner_name(folder.st_uid),
                       _owner_name(os.geteuid()))
    if folder.st_mode & stat.S_IWOTH and not folder.st_mode & stat.S_ISVTX:
        raise FolderNotPrivate(
            f"{what} {os.fspath(path)} lets every user add, rename and remove files in it (mode "
            f"{stat.S_IMODE(folder.st_mode):04o}); {remedy} (chmod 700, or 1777 as /tmp is)"
        )


def private_directory(path: Path, what: str = "the server's folder") -> Path:
    """`path`, created 0700 (its missing parents too) unless it exists; an existing one keeps its mode.

    The server's own folders hold other people's videos and results, so one it creates is
    private; mkdir's mode is filtered by the umask, hence the chmod. A folder the operator
    made is theirs: it is not tightened under them (the server warns instead). One another
    user controls, made first or open to anyone's writes, is refused (FolderNotPrivate).
    """
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            path.chmod(0o700)
        except FileExistsError:
            pass  # made meanwhile by another process, with a mode and an owner of its choosing
    refuse_unless_controlled_by_us(path, what)
    return path
