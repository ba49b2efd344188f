"""The image's `docker run` lines give the server time to drain before Docker kills it.

`docker stop` sends SIGKILL 10 s after SIGTERM unless told otherwise, where the server's drain
takes its grace (20 s by default) and up to the README's clean-up time more: a `docker run` copied
from the README or the Dockerfile had its running jobs killed mid-drain, each charged an attempt.
"""

from __future__ import annotations

import re
from pathlib import Path

from videodag_service.server_arguments import settings_from

ROOT = Path(__file__).resolve().parents[2]


def _docker_runs(text: str) -> list[str]:
    return [line for line in text.splitlines() if "docker run " in line]


def _clean_up_seconds(readme: str) -> float:
    said = re.search(r"The exit takes up to (\d+) s more than the\s+grace", readme)
    assert said is not None, "the README says how long the exit takes past the grace"
    return float(said.group(1))


def test_every_docker_run_gives_the_drain_and_its_clean_up_before_sigkill() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    needed = settings_from([]).shutdown_grace_seconds + _clean_up_seconds(readme)
    lines = _docker_runs(readme) + _docker_runs((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert lines, "the README and the Dockerfile show how to run the image"
    for line in lines:
        given = re.search(r"--stop-timeout[ =](\d+)", line)
        assert given is not None and float(given.group(1)) >= needed, line
