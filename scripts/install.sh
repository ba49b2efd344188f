#!/usr/bin/env bash
# Install everything videodag needs into .venv/ (idempotent; safe to run again).
# Needs only Python >= 3.11 with venv; models are fetched once into $VIDEODAG_MODEL_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "==> installing videodag and its dependencies into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Some vision packages pull in the GUI build of OpenCV, which silently replaces the headless cv2.
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  echo "error: opencv-python (the GUI build) is installed; it replaces opencv-python-headless" >&2
  exit 1
fi
.venv/bin/python -m pip check
echo "==> fetching models"
.venv/bin/python -m videodag_service.fetch_models
echo "==> installed: .venv/bin/videodag-server and .venv/bin/videodag"
