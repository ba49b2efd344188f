"""constraints.txt pins what pyproject.toml asks for, within its ranges, and the venv holds those pins.

`scripts/install.sh` installs with constraints.txt so that a clone, and CI, get the versions the
tests ran with; a release of ruff, mypy or a stub package since must not turn a clean clone red.
A dependency added to pyproject.toml without a pin, or a range moved past its pin, is caught here
rather than by a clone that installs whatever is newest.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator, f"constraints.txt pins exact versions only: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared_requirements() -> list[Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        lines += extra
    return [requirement for requirement in map(Requirement, lines)
            if canonicalize_name(requirement.name) != canonicalize_name(PROJECT["name"])]


def test_every_requirement_is_pinned_at_a_version_its_range_admits() -> None:
    pins = _pins()
    requirements = _declared_requirements()
    assert len(requirements) > 20
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run `bash scripts/install.sh --upgrade`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_the_venv_holds_the_pinned_versions() -> None:
    """The tests judge what a clone installs: a drifted venv is set right by `bash scripts/install.sh`."""
    drifted = []
    for name, pinned in _pins().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # needed only on another Python or platform
        if installed != pinned:
            drifted.append(f"{name} {installed} (constraints.txt: {pinned})")
    assert not drifted, "run `bash scripts/install.sh`: " + ", ".join(drifted)
