"""With glibc told to keep freed memory, parsing upload chunks stops faulting fresh pages in."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")

# Parses 256 KiB chunk messages from fresh buffers, as gRPC hands them over, and prints the
# page faults per message after warming up.
PARSE_CHUNKS = """
import os, resource, sys
from videodag.v1 import video_pipeline_service_pb2 as pb
from videodag_service.allocator import keep_freed_memory_for_reuse
if sys.argv[1] == "tuned":
    assert keep_freed_memory_for_reuse()
raw = pb.UploadAndRunRequest(chunk=os.urandom(256 * 1024)).SerializeToString()
def parse():
    return pb.UploadAndRunRequest.FromString(bytes(bytearray(raw))).chunk
for _ in range(20):
    parse()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    parse()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


def _faults_per_message(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", PARSE_CHUNKS, mode], capture_output=True, text=True, check=True)
    return float(result.stdout)


def test_parsing_chunks_reuses_freed_memory_once_tuned() -> None:
    assert _faults_per_message("tuned") < 5


def test_the_default_allocator_faults_for_every_chunk() -> None:
    """What the tuning is for; should glibc change its defaults, this says the tuning may go."""
    assert _faults_per_message("default") > 50
