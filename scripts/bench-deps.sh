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
# shellcheck source=scripts/debian-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"

missing_packages() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
    have_postgresql || missing+=(postgresql)
    echo "${missing[@]}"
}

ensure_debian_packages bench-deps "wrk, taskset, postgresql initdb"
