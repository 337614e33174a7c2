# Sourced by the benchmark scripts: the eddy binary (release, or the
# profile BENCH_PROFILE names, e.g. debug for a CI smoke run), the plugins,
# a scratch directory and background processes cleaned up on exit (the
# daemons' logs kept in BENCH_LOGS if it names a directory), a way
# to wait for a line in a file, a daemon starter, a progress probe, the
# daemon's memory and a pipeline's processor call times.

target=${CARGO_TARGET_DIR:-target}
profile=${BENCH_PROFILE:-release}
eddy="$target/$profile/eddy"
plugins="$(dirname "${BASH_SOURCE[0]}")/../target/plugins/wasm32-wasip2/release"
work=$(mktemp -d)
pids=()
cleanup() {
    # Last started first, each waited for: a daemon stops while its broker
    # still answers.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    # BENCH_LOGS=DIR keeps the daemons' logs for a closer look.
    if [ -n "${BENCH_LOGS:-}" ]; then
        mkdir -p "$BENCH_LOGS" && cp "$work"/*.log "$BENCH_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 60 s, looking every 10 ms (the benchmark reads the daemon's
# CPU time the moment its partitions are assigned).
wait_for_line() { # file pattern
    for _ in $(seq 6000); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.01
    done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}

# Starts `eddy serve` on $brokers and $work/data, with stdout and the log in
# $work/NAME.out and $work/NAME.log and any extra flags; sets $daemon and
# EDDY_SERVER.
start_daemon() { # name [serve flags...]
    local name=$1
    shift
    "$eddy" serve --brokers "$brokers" --data-dir "$work/data" --listen 127.0.0.1:0 "$@" \
        >"$work/$name.out" 2>"$work/$name.log" &
    daemon=$!
    pids+=("$daemon")
    wait_for_line "$work/$name.out" "control plane listening on"
    export EDDY_SERVER=$(sed -n 's/.*control plane listening on //p' "$work/$name.out")
}

# "processed done": records pipeline $1's first step processed, and 1 once
# it has $2 partitions (all steps) and every one's committed offset has
# reached its end.
progress() { # pipeline partitions
    "$eddy" pipeline get "$1" -o json | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
done = len(parts) == int(sys.argv[1]) and all(p["committed_offset"] == p["high_watermark"] >= 0 for p in parts)
print(sum(p["records_in"] for p in parts if p.get("step", 0) == 0), int(done))' "$2"
}

# When pipeline $1's consumer group handed out its partitions (the daemon
# logs it), as Unix seconds: joining a group takes seconds that say nothing
# about the data path, so eddy's clocks start there.
assigned_at() {
    wait_for_line "$work/serve.log" "partitions assigned pipeline=$1 " >/dev/null
    grep -m1 "partitions assigned pipeline=$1 " "$work/serve.log" |
        cut -d' ' -f1 |
        python3 -c 'import sys, datetime; print(datetime.datetime.fromisoformat(sys.stdin.read().strip().replace("Z", "+00:00")).timestamp())'
}

# The daemon's resident memory now, and its peak, in MiB.
rss_mib() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$daemon/status"; }
peak_rss_mib() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$daemon/status"; }

# "calls p50 p99 max": pipeline $1's processor calls (all partitions) and
# the slowest partition's percentiles in ms; "0 - - -" before any call.
call_times() { # pipeline
    "$eddy" pipeline get "$1" -o json | python3 -c '
import json, sys
calls = [p["guest_calls"] for p in json.load(sys.stdin)["partitions"] if p.get("guest_calls", {}).get("calls")]
if not calls:
    print("0 - - -")
else:
    slowest = [max(c[k] for c in calls) / 1e3 for k in ("p50_us", "p99_us", "max_us")]
    print(sum(c["calls"] for c in calls), *("%.2f" % v for v in slowest))'
}
