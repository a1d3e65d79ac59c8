# Shared helpers for berth's hack/ scripts. Source it: `. "$(dirname "$0")/lib.sh"`.
# Sets BERTH_REPO (the checkout's root) and defines small functions; changes no options
# of the sourcing script except what it sets itself.

BERTH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BERTH_REPO

berth_log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
berth_die() { berth_log "error: $*"; exit 1; }

berth_require_root() {
    [ "$(id -u)" -eq 0 ] || berth_die "must run as root (it installs packages, mounts and starts daemons)"
}

# Puts ~/.cargo/bin on PATH when cargo is installed there (rustup's default) but not found.
berth_ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        PATH="${HOME:-/root}/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 || berth_die "cargo not found: install a Rust toolchain (1.88 or newer, e.g. with rustup)"
}

# The cargo target dir (honours CARGO_TARGET_DIR, as cargo does).
berth_target_dir() {
    printf '%s\n' "${CARGO_TARGET_DIR:-$BERTH_REPO/target}"
}

# True if PID is alive and its command line contains PATTERN (guards against a recycled
# PID from a stale pid file).
berth_pid_matches() {
    local pid="$1" pattern="$2"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# Stops PID (SIGTERM, then SIGKILL after TIMEOUT seconds, default 10) and waits for it.
berth_stop_pid() {
    local pid="$1" timeout="${2:-10}" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    berth_log "pid $pid did not stop within ${timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# A TCP port on 127.0.0.1 nobody listens on right now (the caller must still handle the
# race of someone taking it before it binds).
berth_free_port() {
    local port i
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    berth_die "no free port found"
}

# Waits until an HTTP GET of URL answers with any status (up to TIMEOUT seconds, default 20).
# Prints the status code.
berth_wait_http() {
    local url="$1" timeout="${2:-20}" code i
    for ((i = 0; i < timeout * 10; i++)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)"
        if [ -n "$code" ] && [ "$code" != "000" ]; then
            printf '%s\n' "$code"
            return 0
        fi
        sleep 0.1
    done
    return 1
}
