"""Fixtures for client tests: the fake servicer on a real loopback grpc server, and inputs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))

from fake_servicer import FakeVideoPipelineServicer, motion_pipeline, people_pipeline, serving

from videodag_client import VideodagClient


@pytest.fixture
def servicer() -> FakeVideoPipelineServicer:
    return FakeVideoPipelineServicer(pipelines=[people_pipeline(), motion_pipeline()])


@pytest.fixture
def target(servicer: FakeVideoPipelineServicer) -> Iterator[str]:
    with serving(servicer) as address:
        yield address


@pytest.fixture
def client(target: str) -> Iterator[VideodagClient]:
    with VideodagClient(target, timeout=30) as videodag_client:
        yield videodag_client


@pytest.fixture
def video_bytes() -> bytes:
    # Not a real video: the fake never decodes. An odd size checks the short last chunk.
    return bytes((i * 7919 + i // 251) % 256 for i in range(300_001))


@pytest.fixture
def video_path(tmp_path: Path, video_bytes: bytes) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(video_bytes)
    return path
