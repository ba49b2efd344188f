"""The server's folders must be the server's: ones another local user controls are refused at start.

The upload folder (`--temp-dir`, /tmp/videodag by default) and the job data folder
(`--data-dir`) hold every caller's videos and results, and the decoder opens each upload again
by its path. A folder another user made first (in /tmp anyone can), or one anyone may write
to, lets that user read the job store, forge results, or swap an upload for a symlink to a
file only the server may read, whose frames then go back to the caller. The server used to
take such a folder as it found it; it now refuses to start on one, saying why.

Root's folders are trusted (root can do anything anyway): a volume mounted for a container is
often root's, shared with the server's group. A folder others may only read is served from
with a warning (`temp_dir_open_to_others`, `data_dir_open_to_others`), since every file in it
is 0600.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


class FolderNotPrivate(ValueError):
    """An upload or data folder another user controls; the server does not start on it."""


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def refuse_unless_controlled_by_us(path: Path, what: str) -> None:
    """Raise FolderNotPrivate when `path` (an existing folder) could be changed by another user:
    it, or the symbolic link it is, belongs to someone other than this process's user or root,
    or anyone may add and rename files in it (writable by others and not sticky)."""
    trusted = {os.geteuid(), 0}
    remedy = "remove it, or give the server a folder its user owns"
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in trusted:
        raise FolderNotPrivate(
            f"{what} {os.fspath(path)} is a symbolic link owned by {_owner_name(link.st_uid)}, who can point it "
            f"elsewhere at any time; {remedy}"
        )
    folder = os.stat(path)
    if folder.st_uid not in trusted:
        raise FolderNotPrivate(
            f"{what} {os.fspath(path)} is owned by {_owner_name(folder.st_uid)}, not by the server's user "
            f"({_owner_name(os.geteuid())}): its owner could read and replace what the server keeps there; {remedy}"
        )
    if folder.st_mode & stat.S_IWOTH and not folder.st_mode & stat.S_ISVTX:
        raise FolderNotPrivate(
            f"{what} {os.fspath(path)} lets every user add, rename and remove files in it (mode "
            f"{stat.S_IMODE(folder.st_mode):04o}); {remedy} (chmod 700)"
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
