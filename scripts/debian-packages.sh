# Shared by system-deps.sh and bench-deps.sh (sourced, not run): find what is missing with the
# caller's `missing_packages`, install it with apt-get when root, or say how and fail.

have_postgresql() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$initdb" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1
}

# ensure_debian_packages NAME NEEDED: NAME prefixes every line (and names the script to run as
# root); NEEDED says in words what must be present.
ensure_debian_packages() {
    local name=$1 needed=$2
    local -a missing still_missing
    read -r -a missing <<<"$(missing_packages)"
    if ((${#missing[@]} == 0)); then
        echo "$name: all present ($needed)"
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        {
            echo "$name: missing Debian packages: ${missing[*]}"
            if command -v apt-get >/dev/null 2>&1; then
                echo "Install them with:"
                echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
                echo "or run this script as root: sudo bash scripts/$name.sh"
            else
                echo "apt-get is not available; install the equivalents of these packages with your"
                echo "system's package manager (needed: $needed)."
            fi
        } >&2
        return 1
    fi
    echo "$name: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    read -r -a still_missing <<<"$(missing_packages)"
    if ((${#still_missing[@]} != 0)); then
        echo "$name: still missing after apt-get install: ${still_missing[*]}" >&2
        return 1
    fi
    echo "$name: all present ($needed)"
}
