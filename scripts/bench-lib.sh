# Sourced by the benchmark scripts: the eddy binary (release, or the
# profile BENCH_PROFILE names, e.g. debug for a CI smoke run), the plugins,
# a scratch directory and background processes cleaned up on exit, and a
# way to wait for a line in a file.

target=${CARGO_TARGET_DIR:-target}
profile=${BENCH_PROFILE:-release}
eddy="$target/$profile/eddy"
plugins="$(dirname "${BASH_SOURCE[0]}")/../target/plugins/wasm32-wasip2/release"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for_line() { # file pattern
    for _ in $(seq 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}
