"""The public API's type hints accept what the documentation shows: checked with mypy --strict on
a caller's script, as a type-checked service embedding the client would be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
README = REPO_ROOT / "README.md"

CALLER = """
import asyncio
import io
import subprocess
import tempfile
import zipfile
from typing import IO, BinaryIO

from videodag_client import AsyncVideodagClient, RunOptions, VideodagClient, VideodagError


def on_progress(sent: int, total: int | None) -> None:
    print(sent, total)


async def on_progress_awaited(sent: int, total: int | None) -> None:
    await asyncio.sleep(0)


async def on_reconnect_awaited(error: VideodagError, last_frame_index: int | None) -> None:
    await asyncio.sleep(0)


def blocking() -> None:
    with VideodagClient("localhost:50051", timeout=5.0) as client:
        with client.upload_and_run("clip.mp4", "frame_stats_v1", RunOptions(frame_stride=2),
                                   on_upload_progress=on_progress) as run:
            for event in run:
                print(event)


def from_file_objects(given: IO[bytes], binary: BinaryIO) -> None:
    # The binary file objects a caller has at hand, as the upload reads them.
    with VideodagClient("localhost:50051") as client:
        client.submit_job(given, "frame_stats_v1")
        client.submit_job(binary, "frame_stats_v1")
        client.submit_job(io.BytesIO(b"..."), "frame_stats_v1")
        with subprocess.Popen(["cat", "clip.mp4"], stdout=subprocess.PIPE) as producer:
            assert producer.stdout is not None
            list(client.upload_and_run(producer.stdout, "frame_stats_v1"))
        with tempfile.SpooledTemporaryFile() as spooled:
            client.submit_job(spooled, "frame_stats_v1")
        with zipfile.ZipFile("clips.zip") as archive, archive.open("clip.mp4") as member:
            client.submit_job(member, "frame_stats_v1")
        with open("clip.mp4", "rb", buffering=0) as unbuffered:
            client.submit_job(unbuffered, "frame_stats_v1")


async def awaited() -> None:
    async with AsyncVideodagClient("localhost:50051") as client:
        async for event in client.upload_and_run("clip.mp4", "frame_stats_v1", on_upload_progress=on_progress):
            print(event)
        job = await client.submit_job("clip.mp4", "frame_stats_v1", on_upload_progress=on_progress_awaited)
        async for update in client.watch_job(job.id, on_reconnect=on_reconnect_awaited):
            print(update)


async def awaited_in_blocks(client: AsyncVideodagClient, job_id: str) -> int | None:
    # The streams' own attributes, read on what `async with` binds, as the README's resume does.
    async with client.upload_and_run("clip.mp4", "frame_stats_v1") as run:
        async for event in run:
            print(event)
    async with client.watch_job(job_id) as watch:
        async for update in watch:
            print(update, watch.job, watch.reconnects)
        return watch.last_frame_index
"""


def strict_mypy_errors(tmp_path: Path, scripts: dict[str, str]) -> list[str]:
    """The errors mypy --strict finds in `scripts` (file name: source), as a caller's type check would."""
    for name, source in scripts.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    environment = {**os.environ, "MYPYPATH": os.pathsep.join(
        str(REPO_ROOT / folder) for folder in ("client", "protos/gen/python"))}
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(REPO_ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), *scripts],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300,
    )
    assert "Found" in checked.stdout or "Success" in checked.stdout, checked.stdout + checked.stderr
    return [line for line in checked.stdout.splitlines() if any(f"{name}:" in line for name in scripts)]


def test_a_strictly_typed_caller_of_both_clients_type_checks(tmp_path: Path) -> None:
    assert strict_mypy_errors(tmp_path, {"caller.py": CALLER}) == []


def test_the_readme_python_examples_type_check_as_written(tmp_path: Path) -> None:
    # A typed service pastes them as they stand: the blocks that are whole programs of the client's.
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    examples = {f"readme_example_{number}.py": block for number, block in enumerate(blocks)
                if "from videodag_client import" in block}
    assert len(examples) >= 3
    assert strict_mypy_errors(tmp_path, examples) == []
