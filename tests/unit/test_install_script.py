"""The set-up scripts on a bare machine: `scripts/install.sh` where Python cannot make the venv
(a clear stop, nothing half made), and the system packages the test command installs.

Each case runs the script with stand-ins for Python and apt-get on PATH (a machine with the
wrong Python, or without openssl, is not one the tests can be run on), so what is checked is
the script's own flow: which commands it runs, what it says, and what it leaves behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A stand-in python: old or not as FAKE_OLD says; its `-m venv` fails as Debian's python3 does
# without python3.X-venv (after making .venv/bin/python) until apt-get "installs" the package.
_FAKE_PYTHON = r"""#!/bin/bash
echo "python $*" >> "$CALLS"
case "$1" in
  --version) echo "Python $FAKE_VERSION" ;;
  -c) if [[ "$2" == *sys.exit* ]]; then [ -z "$FAKE_OLD" ]; exit $?; fi; echo "${FAKE_VERSION%.*}" ;;
  -m) mkdir -p .venv/bin && printf '#!/bin/sh\nexit 3\n' > .venv/bin/python && chmod +x .venv/bin/python
      if [ -e "$VENV_PACKAGE" ]; then exit 0; fi
      echo "The virtual environment was not created successfully because ensurepip is not available." >&2; exit 1 ;;
esac
"""
_FAKE_APT_GET = r"""#!/bin/bash
echo "apt-get $*" >> "$CALLS"
if [ "$1" = install ] && [ -n "$APT_PROVIDES_VENV" ]; then touch "$VENV_PACKAGE"; fi
"""


# sudo as `-n` asks of it: at once or not at all; here, at once.
_FAKE_SUDO = '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n'


def _run_install(tmp_path: Path, **environment: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name, text in (("python3", _FAKE_PYTHON), ("apt-get", _FAKE_APT_GET), ("sudo", _FAKE_SUDO)):
        (bin_folder / name).write_text(text)
        (bin_folder / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.touch()
    completed = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "install.sh")], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": f"{bin_folder}:/usr/bin:/bin", "CALLS": str(calls), "FAKE_VERSION": "3.11.2",
             "VENV_PACKAGE": str(tmp_path / "venv-package-installed"), **environment},
    )
    return completed, calls.read_text().splitlines()


def test_an_older_python_is_refused_by_its_version_before_anything_is_made(tmp_path: Path) -> None:
    completed, calls = _run_install(tmp_path, FAKE_VERSION="3.10.12", FAKE_OLD="1")
    assert completed.returncode == 1
    assert "needs Python 3.11 or newer, and python3 is Python 3.10.12: set PYTHON to one" in completed.stderr
    assert not (tmp_path / ".venv").exists()
    assert not any(" -m venv" in call for call in calls)


def test_a_python_that_is_not_there_is_named(tmp_path: Path) -> None:
    completed, _ = _run_install(tmp_path, PYTHON="python3.99")
    assert completed.returncode == 1
    assert "there is no python3.99: set PYTHON to one" in completed.stderr


def test_a_venv_without_pip_is_removed_and_debians_venv_package_installed_before_trying_again(tmp_path: Path) -> None:
    completed, calls = _run_install(tmp_path, APT_PROVIDES_VENV="1")
    assert "apt-get install -y -qq --no-install-recommends python3.11-venv" in calls
    assert [call for call in calls if call.startswith("python -m venv")] == ["python -m venv .venv"] * 2
    # The venv made on the second try is used: its (stand-in) python is what fails next.
    assert "installing python3.11-venv with apt-get" in completed.stdout
    assert "installing videodag and its dependencies into .venv" in completed.stdout
    assert completed.returncode == 3


def test_a_venv_that_cannot_be_made_stops_the_install_and_leaves_no_half_made_venv(tmp_path: Path) -> None:
    completed, calls = _run_install(tmp_path)
    assert completed.returncode == 1
    assert "python3 could not create a venv in .venv (on Debian or Ubuntu: apt-get install python3-venv)" in (
        completed.stderr)
    assert "ensurepip is not available" in completed.stderr
    assert not (tmp_path / ".venv").exists()
    assert "apt-get install -y -qq --no-install-recommends python3.11-venv" in calls


def test_the_test_command_installs_only_the_debian_packages_whose_commands_are_missing(tmp_path: Path) -> None:
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for command in ("id", "env"):
        (bin_folder / command).symlink_to(shutil.which(command) or f"/usr/bin/{command}")
    (bin_folder / "sudo").write_text(_FAKE_SUDO)
    (bin_folder / "redis-server").write_text("#!/bin/sh\n")
    # A stand-in apt-get: logs what it is asked, and "installs" openssl as a command.
    (bin_folder / "apt-get").write_text(
        '#!/bin/bash\necho "apt-get $*" >> "$CALLS"\n'
        'if [ "$1" = install ]; then printf "#!/bin/sh\\n" > "$BIN/openssl" && /bin/chmod +x "$BIN/openssl"; fi\n'
    )
    for name in ("redis-server", "apt-get", "sudo"):
        (bin_folder / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    environment = {"PATH": str(bin_folder), "CALLS": str(calls), "BIN": str(bin_folder)}
    script = ROOT / "scripts" / "ensure_system_packages.sh"

    completed = subprocess.run(["/bin/bash", str(script)], env=environment, capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert calls.read_text().splitlines() == ["apt-get update -qq",
                                              "apt-get install -y -qq --no-install-recommends openssl"]
    # Once every command is there, nothing is installed.
    again = subprocess.run(["/bin/bash", str(script)], env=environment, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and again.stdout == ""
    assert len(calls.read_text().splitlines()) == 2


def test_a_venv_left_without_pip_by_an_earlier_install_is_made_anew(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no pip in it
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    (tmp_path / "venv-package-installed").touch()  # this time the venv module works
    completed, calls = _run_install(tmp_path)
    assert ".venv has no pip that runs: making it anew" in completed.stdout
    assert calls.count("python -m venv .venv") == 1
    assert completed.returncode == 3  # the new venv's (stand-in) python is the one used next
