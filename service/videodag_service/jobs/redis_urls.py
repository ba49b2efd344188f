"""A Redis URL as messages may show it: the README has its password put in the URL (in
VIDEODAG_REDIS_URL, out of `ps`), so a refusal quoting the URL, or redis-py's reason for it,
would copy the password into the log."""

from __future__ import annotations

import re


def shown_redis_url(url: str) -> str:
    """`url` with what stands before `@` (a password, or a user and a password) shown as `***`,
    and a query (which may give `password=`) as `?***`."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    rest, question, _ = rest.partition("?")
    _, at, place = rest.rpartition("@")  # a password may hold a `/` written as is
    return f"{scheme}{separator}{'***@' if at else ''}{place}{'?***' if question else ''}"


def redis_reason_without_secrets(reason: str, url: str) -> str:
    """redis-py's reason for refusing `url`, unless it quotes a part of what `shown_redis_url`
    hides: a password with a `/` in it, written as is, is read as the port ("... as 'Secret'")."""
    before_place, _, _ = url.partition("?")[0].rpartition("@")
    query = url.partition("?")[2]
    hidden = re.split(r"[:/@&=]+", before_place.partition("://")[2]) + re.split(r"[&=]+", query)
    if any(len(part) >= 3 and part in reason for part in hidden):
        return "redis-py cannot read it, and its reason would show the password: check the URL's form"
    return reason
