#!/usr/bin/env bash
# Make `redis-server` available for the Redis job backend's tests: install Debian's package
# when it is missing. Non-interactive and idempotent; needs root (or sudo) only to install.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
# --no-install-recommends: the tests need the binary only, not redis-tools or a running service.
"${as_root[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system service on port 6379; the tests start their own servers on free
# loopback ports, so the system one is stopped where a service manager allows it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    "${as_root[@]}" systemctl stop redis-server || true
fi
command -v redis-server >/dev/null
