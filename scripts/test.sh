#!/usr/bin/env bash
# Run every test: installs what is missing first, so a fresh machine passes.
# Extra arguments go to pytest, e.g. scripts/test.sh -k dag -x
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
for extra in scripts/ensure_system_packages.sh scripts/ensure_node_deps.sh; do
  if [ -f "$extra" ]; then bash "$extra"; fi
done
echo "==> checking the generated contract code is up to date"
.venv/bin/python scripts/generate_protos.py --check
echo "==> lint and types"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy service client
echo "==> tests"
exec .venv/bin/python -m pytest "$@"
