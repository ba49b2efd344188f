#!/usr/bin/env bash
# Install the Debian packages whose commands the tests run, where a command is missing:
# redis-server (the Redis job backend's tests) and openssl (the TLS tests make their
# certificates with it; a slim image has the library but not the command).
# Non-interactive and idempotent; needs root (or sudo) only to install.
set -euo pipefail

missing=()
for pair in redis-server:redis-server openssl:openssl; do
  if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

# sudo resets the environment: the setting goes through env, after it.
as_root=(env DEBIAN_FRONTEND=noninteractive)
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo -n "${as_root[@]}")
fi

echo "==> installing ${missing[*]} with apt-get"
"${as_root[@]}" apt-get update -qq
# --no-install-recommends: the tests need the commands only, not redis-tools or a running service.
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The redis-server package starts a system service on port 6379; the tests start their own
# servers on free loopback ports, so the system one is stopped where a service manager allows it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  "${as_root[@]}" systemctl stop redis-server || true
fi
command -v redis-server >/dev/null && command -v openssl >/dev/null
