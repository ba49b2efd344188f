"""Fixtures the job tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for each test module that asks for one."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
