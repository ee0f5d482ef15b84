#!/usr/bin/env bash
# Check for (and, when run as root on a Debian-like system, install) what `make bench` and
# `make profile` need beyond the test packages (scripts/system-deps.sh):
#
#   wrk         the HTTP load generator (Debian package `wrk`)
#   taskset     pins the server and wrk to separate cores (util-linux)
#   postgresql  the PostgreSQL half of target 3 (skipped by `bench.run --no-postgres`)
#
# Python packages (py-spy) come from bench/requirements.txt, installed into .venv by make.
# Usage: bash scripts/bench-deps.sh   (make bench and make profile run it)
set -euo pipefail

have_postgresql() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$initdb" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1
}

missing_packages() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
    have_postgresql || missing+=(postgresql)
    echo "${missing[@]}"
}

read -r -a missing <<<"$(missing_packages)"
if ((${#missing[@]} == 0)); then
    echo "bench-deps: all present (wrk, taskset, postgresql initdb)"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    {
        echo "bench-deps: missing Debian packages: ${missing[*]}"
        echo "Install them with:"
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        echo "or run this script as root: sudo bash scripts/bench-deps.sh"
    } >&2
    exit 1
fi

echo "bench-deps: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

read -r -a still_missing <<<"$(missing_packages)"
if ((${#still_missing[@]} != 0)); then
    echo "bench-deps: still missing after apt-get install: ${still_missing[*]}" >&2
    exit 1
fi
echo "bench-deps: all present (wrk, taskset, postgresql initdb)"
