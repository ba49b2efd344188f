#!/usr/bin/env bash
# Install everything videodag needs into .venv/ (idempotent; safe to run again).
# Needs only Python >= 3.11 with venv; models are fetched once into $VIDEODAG_MODEL_DIR.
#
# Every package is installed at the version constraints.txt pins, the tools that judge the code
# (ruff, mypy, pytest, the stubs) included: a clone installs, and CI judges, with what was
# tested, whatever was released since. `bash scripts/install.sh --upgrade` takes the newest
# releases pyproject.toml admits instead, in a venv of its own, writes them to constraints.txt,
# and then installs them here.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CONSTRAINTS=constraints.txt
if [ -n "${1:-}" ] && [ "$1" != --upgrade ]; then
  echo "usage: bash scripts/install.sh [--upgrade]" >&2
  exit 2
fi

require_python() {
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: videodag needs Python 3.11 or newer, and there is no $PYTHON: set PYTHON to one," \
      "e.g. PYTHON=python3.12" >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: videodag needs Python 3.11 or newer, and $PYTHON is $("$PYTHON" --version 2>&1):" \
      "set PYTHON to one, e.g. PYTHON=python3.12" >&2
    exit 1
  fi
}

# Debian and Ubuntu ship venv's pip apart (python3.X-venv): without it `python -m venv` fails
# after making .venv/bin/python, which the next run would take for a finished venv.
create_venv() {
  "$PYTHON" -m venv .venv && return 0
  rm -rf .venv
  if command -v apt-get >/dev/null 2>&1; then
    local package as_root=(env DEBIAN_FRONTEND=noninteractive)
    package="python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -n "${as_root[@]}"); fi
    echo "==> installing $package with apt-get"
    if "${as_root[@]}" apt-get update -qq \
        && "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$package" \
        && "$PYTHON" -m venv .venv; then
      return 0
    fi
    rm -rf .venv
  fi
  echo "error: $PYTHON could not create a venv in .venv (on Debian or Ubuntu: apt-get install python3-venv)" >&2
  exit 1
}

if [ "${1:-}" = "--upgrade" ]; then
  require_python
  # A venv of its own: .venv may hold packages the project does not need (a profiler, say),
  # which must not end up pinned.
  fresh="$(mktemp -d)"
  trap 'rm -rf "$fresh"' EXIT
  echo "==> resolving the newest releases pyproject.toml admits, in a new venv"
  "$PYTHON" -m venv "$fresh"
  "$fresh/bin/python" -m pip install --quiet --upgrade pip
  "$fresh/bin/python" -m pip install --quiet -e ".[dev]"
  {
    echo "# Exact versions scripts/install.sh installs; written by \`bash scripts/install.sh --upgrade\`."
    echo "# pyproject.toml says what the project accepts, this file what was tested."
    "$fresh/bin/python" -m pip freeze --all --exclude-editable
  } > "$fresh/constraints.txt"
  mv "$fresh/constraints.txt" "$CONSTRAINTS"
  echo "==> wrote $CONSTRAINTS"
fi

# One left without pip by a creation that failed before this script removed such venvs.
if [ -x .venv/bin/python ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "==> .venv has no pip that runs: making it anew"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  require_python
  echo "==> creating .venv with $("$PYTHON" --version)"
  create_venv
fi
echo "==> installing videodag and its dependencies into .venv (versions from $CONSTRAINTS)"
.venv/bin/python -m pip install --quiet --constraint "$CONSTRAINTS" pip
.venv/bin/python -m pip install --quiet --constraint "$CONSTRAINTS" -e ".[dev]"
# Some vision packages pull in the GUI build of OpenCV, which silently replaces the headless cv2.
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  echo "error: opencv-python (the GUI build) is installed; it replaces opencv-python-headless" >&2
  exit 1
fi
.venv/bin/python -m pip check
echo "==> fetching models"
.venv/bin/python -m videodag_service.fetch_models
echo "==> installed: .venv/bin/videodag-server and .venv/bin/videodag"
