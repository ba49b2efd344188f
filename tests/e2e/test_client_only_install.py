"""`pip install videodag` without extras, as a service that only calls a server installs it:
the client library and the `videodag` CLI work, nothing of the server's weight comes along,
and the server's commands and `videodag render` say what to install instead of failing with a
traceback.

The wheel is built from a copy of what the Dockerfile builds from, and installed with pip into
a fresh venv, its dependencies from the package index at the versions `constraints.txt` pins.
Another venv holds its dependencies at the lowest versions pyproject admits, protobuf 5 among
them, as a service held back by another library's pins has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from harness import ServerHarness
from packaging.requirements import Requirement
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
WHEEL_SOURCES = ("pyproject.toml", "README.md", "constraints.txt", "protos/gen/python", "service", "client")
CLIENT_SCRIPT = """
import sys
from videodag_client import FrameResult, RunSummary, VideodagClient

with VideodagClient(sys.argv[1]) as client:
    ids = [pipeline.id for pipeline in client.list_pipelines()]
    with client.upload_and_run(sys.argv[2], "frame_stats_v1") as run:
        events = list(run)
frames = [event for event in events if isinstance(event, FrameResult)]
summary = [event for event in events if isinstance(event, RunSummary)]
print(len(frames), "frame_stats_v1" in ids, summary[0].frames_processed, frames[0].result["stats"]["width"])
"""


OLD_VERSIONS_SCRIPT = """
import asyncio
import json
import sys
from videodag_client import AsyncVideodagClient, FrameResult, JobState, NotFound, VideodagClient

target, clip = sys.argv[1], sys.argv[2]
seen = {}
with VideodagClient(target) as client:
    with client.upload_and_run(clip, "frame_stats_v1") as run:
        seen["frames"] = sum(isinstance(event, FrameResult) for event in run)
    try:
        with client.upload_and_run(clip, "no_such_pipeline") as run:
            list(run)
    except NotFound as error:
        seen["refusal"] = [error.reason, error.resource.resource_name if error.resource else None]
    job = client.submit_job(clip, "frame_stats_v1")
    with client.watch_job(job.id) as watch:
        events = list(watch)
    seen["job"] = [events[-1].state.name, sum(isinstance(event, FrameResult) for event in events)]


async def listed() -> list[str]:
    async with AsyncVideodagClient(target) as client:
        return [pipeline.id for pipeline in await client.list_pipelines()]

seen["async_lists_frame_stats"] = "frame_stats_v1" in asyncio.run(listed())
print(json.dumps(seen))
"""


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)


def _run_in(venv: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's commands from the venv's folder: from this repository's root,
    `python -m` would read the dev install's metadata (videodag.egg-info) before the venv's."""
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                          timeout=300, check=False, stdin=subprocess.DEVNULL, cwd=venv)


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client_wheel")
    source = root / "source"
    for name in WHEEL_SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                  "--wheel-dir", str(root / "wheels"), str(source)])
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "wheels").glob("videodag-*.whl")
    return wheel


def _venv_with(root: Path, wheel: Path, constraints: Path) -> Path:
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr[-3000:]
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                      "--constraint", str(constraints), str(wheel)])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _installed_versions(venv: Path) -> dict[str, str]:
    listed = _run_in(venv, ["python", "-m", "pip", "list", "--format", "json"])
    return {entry["name"].lower(): entry["version"] for entry in json.loads(listed.stdout)}


def _floor(requirement: str) -> str:
    (lowest,) = [spec.version for spec in Requirement(requirement).specifier if spec.operator == ">="]
    return lowest


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory, client_wheel: Path) -> Path:
    """A venv holding videodag as `pip install videodag` installs it, and nothing else."""
    return _venv_with(tmp_path_factory.mktemp("client_only"), client_wheel, REPO_ROOT / "constraints.txt")


def _floors() -> dict[str, str]:
    return {_name(line): _floor(line) for line in PROJECT["dependencies"]}


# protobuf 6.31.1 (6.30 and 6.31 warn of code generated for protobuf 5), with a grpcio of its time.
PROTOBUF_6_31 = {"protobuf": "6.31.1", "grpcio": "1.73.1", "grpcio-status": "1.73.1"}


@pytest.fixture(scope="module", params=[pytest.param("floors", id="floors"),
                                        pytest.param("protobuf-6.31", id="protobuf-6.31")])
def old_venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             client_wheel: Path) -> tuple[Path, dict[str, str]]:
    """The client with every dependency at the lowest version pyproject admits, or with a
    protobuf 6 whose releases 6.30 and 6.31 warn of the generated code's age."""
    pins = _floors() if request.param == "floors" else PROTOBUF_6_31
    root = tmp_path_factory.mktemp("client_old")
    constraints = root / "pins.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    return _venv_with(root, client_wheel, constraints), pins


def test_it_installs_the_client_dependencies_and_none_of_the_servers(client_venv: Path) -> None:
    installed = set(_installed_versions(client_venv))
    server_only = {_name(requirement) for requirement in PROJECT["optional-dependencies"]["server"]}
    assert {"opencv-python-headless", "numpy", "onnxruntime", "scipy", "rapidocr"} <= server_only
    assert {_name(requirement) for requirement in PROJECT["dependencies"]} <= installed
    assert installed & server_only == set()


def test_the_python_client_runs_a_video(client_venv: Path, server: ServerHarness, sample_clip: Path) -> None:
    finished = _run_in(client_venv, ["python", "-c", CLIENT_SCRIPT, server.target, str(sample_clip)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.split() == ["120", "True", "120", "768"]


def test_the_cli_runs_a_video_and_render_names_the_extra_it_needs(client_venv: Path, server: ServerHarness,
                                                                   sample_clip: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    ran = _run_in(client_venv, ["videodag", "run", "--server", server.target, "--pipeline",
                "frame_stats_v1", "--output", str(results), str(sample_clip)])
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len(results.read_text().splitlines()) == 120

    annotated = tmp_path / "annotated.mp4"
    rendered = _run_in(client_venv, ["videodag", "render", str(sample_clip), str(results),
                     "-o", str(annotated)])
    assert rendered.returncode == 2
    assert "pip install 'videodag[render]'" in rendered.stderr
    assert "Traceback" not in rendered.stderr
    assert not annotated.exists()
    assert server.leftover_uploads() == []


def test_render_says_so_when_opencv_is_there_but_does_not_load(client_venv: Path, tmp_path: Path) -> None:
    """The GUI build of OpenCV in a slim container: `import cv2` fails for want of libGL."""
    broken = tmp_path / "site" / "cv2"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")\n')
    (tmp_path / "results.jsonl").write_text('{"frame_index": 0, "result": {}}\n')
    rendered = subprocess.run(
        [str(client_venv / "bin" / "videodag"), "render", "clip.mp4", "results.jsonl", "-o", "annotated.mp4"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert rendered.returncode == 2
    assert "cv2: libGL.so.1: cannot open shared object file" in rendered.stderr
    assert "pip install 'videodag[render]'" in rendered.stderr
    assert "Traceback" not in rendered.stderr


@pytest.mark.parametrize("command", [["videodag-server"], ["videodag-worker"],
                                     ["python", "-m", "videodag_service.fetch_models"]],
                         ids=["videodag-server", "videodag-worker", "fetch_models"])
def test_the_server_commands_name_the_extra_they_need(client_venv: Path, command: list[str]) -> None:
    finished = _run_in(client_venv, command)
    assert finished.returncode == 1, finished.stderr[-3000:]
    assert "pip install 'videodag[server]'" in finished.stderr
    assert "missing: " in finished.stderr and "opencv-python-headless" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_the_client_works_on_older_protobuf_and_grpcio(old_venv: tuple[Path, dict[str, str]], server: ServerHarness,
                                                       sample_clip: Path) -> None:
    """protobuf 5 and 6 and older grpcio, against a server on today's: the generated code loads
    without a warning, and runs, jobs and the rich error details all work."""
    venv, pins = old_venv
    versions = _installed_versions(venv)
    assert {name: Version(versions[name]) for name in pins} == {name: Version(pin) for name, pin in pins.items()}
    finished = _run_in(venv, ["python", "-W", "error", "-c", OLD_VERSIONS_SCRIPT, server.target, str(sample_clip)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout) == {"frames": 120, "refusal": ["PIPELINE_NOT_FOUND", "no_such_pipeline"],
                                           "job": ["SUCCEEDED", 120], "async_lists_frame_stats": True}
    assert server.leftover_uploads() == []


def test_the_floors_hold_protobuf_5() -> None:
    assert Version(_floors()["protobuf"]).major == 5


def test_the_cli_starts_without_a_word_on_stderr(old_venv: tuple[Path, dict[str, str]]) -> None:
    venv, _pins = old_venv
    started = _run_in(venv, ["videodag", "--version"])
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stderr == ""
