"""A Redis URL as messages may show it: the README has its password put in the URL (in
VIDEODAG_REDIS_URL, out of `ps`), so a refusal quoting the URL, or redis-py's reason for it,
would copy the password into the log."""

from __future__ import annotations

import re

_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def shown_redis_url(url: str) -> str:
    """`url` with what stands before its last `@` (a password, or a user and a password, which
    may hold `/`, `?` or `#` written as is) shown as `***`, and a query or fragment after the
    host (`?password=`) as `?***`."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    _, at, place = rest.rpartition("@")
    host_and_path, tail = _split_tail(place)
    return f"{scheme}{separator}{'***@' if at else ''}{host_and_path}{'?***' if tail else ''}"


def _split_tail(place: str) -> tuple[str, str]:
    """`place` (what follows the `@`) cut before its query or fragment, and that query or fragment."""
    tail = re.search(r"[?#]", place)
    return (place, "") if tail is None else (place[:tail.start()], place[tail.start():])


def _hidden_parts(url: str) -> str:
    """What `shown_redis_url` hides of `url`, as one text: what stands before the last `@`, a space,
    and the query or fragment."""
    rest = url.partition("://")[2] or url
    secret, _, place = rest.rpartition("@")
    return secret + " " + _split_tail(place)[1]


def redis_reason_without_secrets(reason: str, url: str) -> str:
    """redis-py's reason for refusing `url`, each text it quotes from what `shown_redis_url`
    hides shown as `***` (a password with a `/` in it is read as the port: "... as 'Secret'")."""
    hidden = _hidden_parts(url)
    if not hidden.strip():
        return reason

    def hide(quote: re.Match[str]) -> str:
        text = quote.group(1) if quote.group(1) is not None else quote.group(2)
        return "'***'" if text and text in hidden else quote.group(0)

    said = _QUOTED.sub(hide, reason)
    password = hidden.split(" ", 1)[0].partition(":")[2]
    if len(password) >= 3 and password in said:
        return "redis-py cannot read it, and its reason would show the password: check the URL's form"
    return said


_UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '(\w+)'")


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot read `url` (a scheme, a port, a query it has no setting for), with
    neither its password nor what the reason quotes of it; None if it can. A setting's check,
    made before any connection."""
    from redis import ConnectionPool, RedisError  # redis is installed for the redis job backend only
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        # Its query's names become the connection's arguments only when one is made, the first
        # command's: a name that kind of connection does not take (`redis://...?ssl_ca_certs=`,
        # TLS settings in a URL without TLS) was a TypeError's traceback there. Made, not connected.
        ConnectionPool.from_url(url).make_connection()
    except TypeError as error:
        return f"{shown_redis_url(url)!r} cannot be used: {_unknown_query_reason(str(error), url)}"
    except (ValueError, RedisError) as error:
        return f"{shown_redis_url(url)!r} cannot be used: {redis_reason_without_secrets(str(error), url)}"
    return None


def _unknown_query_reason(reason: str, url: str) -> str:
    """What a connection's TypeError for `url` says, told as the URL's fault: the query name it
    does not take, unless that name is part of what the URL's `***` hides before its host."""
    unexpected = _UNEXPECTED_ARGUMENT.search(reason)
    secret = (url.partition("://")[2] or url).rpartition("@")[0]
    if unexpected is None or unexpected.group(1) in secret:
        return "its query names a setting redis-py does not take there"
    name = unexpected.group(1)
    scheme = url.partition("://")[0].lower()
    hint = " (TLS settings need a rediss:// URL)" if name.startswith("ssl") and scheme != "rediss" else ""
    return f"redis-py takes no {name!r} in the query of a {scheme}:// URL{hint}"
