#!/usr/bin/env bash
# Install the pinned npm packages: the Node.js example client and the buf CLI (idempotent).
# `npm ci` runs only where node_modules is missing or older than its package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing Node.js and npm with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "error: npm not found; install Node.js 18 or newer (the Node client and buf need it)" >&2
    exit 1
  fi
fi
for folder in examples/node-client tools/buf; do
  installed="$folder/node_modules/.package-lock.json"
  if [ ! -f "$installed" ] || [ "$folder/package-lock.json" -nt "$installed" ]; then
    echo "==> npm ci in $folder"
    (cd "$folder" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
