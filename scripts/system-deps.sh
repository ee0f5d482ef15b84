#!/usr/bin/env bash
# Check for (and, when run as root on a Debian-like system, install) the system
# packages the bastion test suite needs:
#
#   postgresql    PostgreSQL server binaries; tests run their own throwaway
#                 cluster with initdb on a free port, so a system cluster that
#                 apt may start on 5432 does not matter.
#   redis-server  redis-server on PATH; tests start their own instance.
#   chromium      /usr/bin/chromium, driven by Playwright in the browser tests.
#   nginx         nginx on PATH (or /usr/sbin/nginx); the fault suite's two-host test starts
#                 its own with its own prefix and config on a free port, never the system's.
#
# Usage: bash scripts/system-deps.sh   (also: make system-deps)
set -euo pipefail
# shellcheck source=scripts/debian-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"

have_redis() {
    command -v redis-server >/dev/null 2>&1
}

have_chromium() {
    [[ -x /usr/bin/chromium ]]
}

have_nginx() {
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]
}

missing_packages() {
    local missing=()
    have_postgresql || missing+=(postgresql)
    have_redis || missing+=(redis-server)
    have_chromium || missing+=(chromium)
    have_nginx || missing+=(nginx)
    echo "${missing[@]}"
}

ensure_debian_packages system-deps "postgresql initdb, redis-server, /usr/bin/chromium, nginx"
