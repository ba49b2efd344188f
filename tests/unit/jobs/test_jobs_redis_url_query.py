"""A Redis URL whose query names a setting its kind of connection does not take.

redis-py reads such a URL without complaint and fails only as it makes its first connection,
with a TypeError: the server and `videodag-worker` ended on an uncaught traceback, where every
other bad value of a setting is a one-line refusal (exit 2) naming the setting as it was given.
The likeliest is the README's own `?ssl_ca_certs=` written after `redis://` instead of `rediss://`.
"""

from __future__ import annotations

import signal

import pytest

from videodag_service.jobs import worker_command
from videodag_service.jobs.redis_urls import redis_url_problem
from videodag_service.stop_signals import STOP_SIGNALS


@pytest.mark.parametrize(("url", "said"), [
    ("redis://:Sup3rSecret@127.0.0.1:6379/0?ssl_ca_certs=/etc/ca.pem",
     "'redis://***@127.0.0.1:6379/0?***' cannot be used: redis-py takes no 'ssl_ca_certs' in the query of a "
     "redis:// URL (TLS settings need a rediss:// URL)"),
    ("redis://127.0.0.1:6379/0?sockettimeout=5",
     "'redis://127.0.0.1:6379/0?***' cannot be used: redis-py takes no 'sockettimeout' in the query of a "
     "redis:// URL"),
    # A name that is part of the hidden password is not shown either.
    ("redis://:Sup3rSecret@127.0.0.1:6379/0?Sup3rSecret=1",
     "'redis://***@127.0.0.1:6379/0?***' cannot be used: its query names a setting redis-py does not take there"),
    # Values the connection refuses as it is made are said the same way.
    ("redis://127.0.0.1:6379/0?protocol=5", "'redis://127.0.0.1:6379/0?***' cannot be used: protocol must be"),
])
def test_a_query_redis_py_takes_only_as_it_connects_is_a_problem_of_the_url(url: str, said: str) -> None:
    problem = redis_url_problem(url)
    assert problem is not None and problem.startswith(said), problem
    assert "Sup3r" not in problem


@pytest.mark.parametrize("url", [
    "redis://:Sup3rSecret@127.0.0.1:6379/0",
    "rediss://127.0.0.1:6379/0?ssl_ca_certs=/path/to/ca.pem",  # the README's form, TLS settings and all
    "redis://127.0.0.1:6379/0?socket_timeout=5&health_check_interval=10",
])
def test_a_url_whose_query_redis_py_takes_is_no_problem(url: str) -> None:
    assert redis_url_problem(url) is None


def test_the_server_refuses_such_a_url_in_one_line_naming_its_variable(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from videodag_service import server as server_module

    monkeypatch.setenv("VIDEODAG_REDIS_URL", "redis://:Sup3rSecret@127.0.0.1:1/0?ssl_ca_certs=/etc/ca.pem")
    handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    try:
        code = server_module.main(["--port", "0", "--job-backend", "redis", "--temp-dir", f"{tmp_path}/t",
                                   "--data-dir", f"{tmp_path}/d"])
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    said = capsys.readouterr().err
    assert code == 2, said
    assert said.startswith("videodag-server: VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:1/0?***' cannot be used: "
                           "redis-py takes no 'ssl_ca_certs'") and len(said.splitlines()) == 1, said
    assert "Sup3r" not in said


def test_the_worker_refuses_such_a_url_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VIDEODAG_REDIS_URL", "redis://:Sup3rSecret@127.0.0.1:1/0?ssl_ca_certs=/etc/ca.pem")
    with pytest.raises(SystemExit) as ended:
        worker_command.main([])
    said = capsys.readouterr().err
    assert ended.value.code == 2, said
    assert "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:1/0?***' cannot be used: redis-py takes no 'ssl_ca_certs'" in said
    assert "Sup3r" not in said
