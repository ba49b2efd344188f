"""Names of the files written beside an output while it is made, that the file system takes."""

from __future__ import annotations

import hashlib
import os

# Most file systems take names of up to 255 bytes (NAME_MAX), whatever the path's length.
_NAME_MAX = 255
_HASH_CHARS = 8


def beside(path: str, prefix: str, suffix: str) -> str:
    """`prefix + stem + suffix` in `path`'s folder, where `stem` is `path`'s name; when that is too
    long a name, the stem is cut and ends in `~` and a hash of the whole name instead, so that
    two long names sharing a start still get names of their own (and the same name each time:
    an interrupted run's file is found again)."""
    folder, name = os.path.split(path)
    wanted = f"{prefix}{name}{suffix}"
    if len(os.fsencode(wanted)) <= _NAME_MAX:
        return os.path.join(folder, wanted)
    mark = hash_mark(name)
    room = _NAME_MAX - len(os.fsencode(f"{prefix}{mark}{suffix}"))
    cut = os.fsencode(name)[:room]
    # At a character's end: a UTF-8 name cut inside one would no longer be UTF-8.
    stem = cut.decode("utf-8", "ignore") if is_utf8(name) else os.fsdecode(cut)
    return os.path.join(folder, f"{prefix}{stem}{mark}{suffix}")


def hash_mark(name: str) -> str:
    """`~` and the start of the SHA-256 of `name`'s bytes: set in a name cut or changed to fit, it
    keeps apart the names that would otherwise come out the same."""
    return "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:_HASH_CHARS]


def is_utf8(name: str) -> bool:
    """Whether `name` has no byte that is not UTF-8 (which Python keeps as a lone surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
