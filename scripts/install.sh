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

if [ "${1:-}" = "--upgrade" ]; then
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
  } > "$CONSTRAINTS"
  echo "==> wrote $CONSTRAINTS"
elif [ -n "${1:-}" ]; then
  echo "usage: bash scripts/install.sh [--upgrade]" >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
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
