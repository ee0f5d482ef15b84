#!/usr/bin/env bash
# Check for (and, when run as root on a Debian-like system, install) the system
# packages the bastion test suite needs:
#
#   postgresql    PostgreSQL server binaries; tests run their own throwaway
#                 cluster with initdb on a free port, so a system cluster that
#                 apt may start on 5432 does not matter.
#   redis-server  redis-server on PATH; tests start their own instance.
#   chromium      /usr/bin/chromium, driven by Playwright in the browser tests.
#
# Usage: bash scripts/system-deps.sh   (also: make system-deps)
set -euo pipefail

have_postgresql() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$initdb" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1
}

have_redis() {
    command -v redis-server >/dev/null 2>&1
}

have_chromium() {
    [[ -x /usr/bin/chromium ]]
}

missing_packages() {
    local missing=()
    have_postgresql || missing+=(postgresql)
    have_redis || missing+=(redis-server)
    have_chromium || missing+=(chromium)
    echo "${missing[@]}"
}

read -r -a missing <<<"$(missing_packages)"

if ((${#missing[@]} == 0)); then
    echo "system-deps: all present (postgresql initdb, redis-server, /usr/bin/chromium)"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    {
        echo "system-deps: missing Debian packages: ${missing[*]}"
        if command -v apt-get >/dev/null 2>&1; then
            echo "Install them with:"
            echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
            echo "or run this script as root: sudo bash scripts/system-deps.sh"
        else
            echo "apt-get is not available; install the equivalents of these packages with your"
            echo "system's package manager (needed: PostgreSQL initdb, redis-server, /usr/bin/chromium)."
        fi
    } >&2
    exit 1
fi

echo "system-deps: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

read -r -a still_missing <<<"$(missing_packages)"
if ((${#still_missing[@]} != 0)); then
    echo "system-deps: still missing after apt-get install: ${still_missing[*]}" >&2
    exit 1
fi
echo "system-deps: all present (postgresql initdb, redis-server, /usr/bin/chromium)"
