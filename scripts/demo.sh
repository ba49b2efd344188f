#!/usr/bin/env bash
# Install everything, then run the main job on the embedded defaults: start a server on
# loopback, send the bundled sample clip through player_tracking_v1, print the summary,
# stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
