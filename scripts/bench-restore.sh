#!/usr/bin/env bash
# Restore cost of durable state: N distinct keys counted by `count` on a
# 4-partition topic, then three daemon starts, each timed from process start
# to every task having finished its restore:
#   - a clean restart (SIGTERM, restart): the local store is current;
#   - a restart after SIGKILL mid-idle: local store plus changelog tail;
#   - the state directory deleted: every key replayed from the changelog.
# Run with `just bench-restore [N]`; prints figures, asserts nothing.
set -euo pipefail

keys=${1:-1000000}
partitions=4
target=${CARGO_TARGET_DIR:-target}
eddy="$target/release/eddy"
plugin="$(dirname "$0")/../target/plugins/wasm32-wasip2/release/count.wasm"
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

"$eddy" dev-broker --topic "keys:$partitions" --topic "counts:$partitions" --retention 4GiB >"$work/broker.out" 2>/dev/null &
pids+=($!)
wait_for_line "$work/broker.out" ":"
brokers=$(head -n1 "$work/broker.out")

awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) printf "key-%08d\tx\n", i }' >"$work/input.txt"
"$eddy" produce keys --brokers "$brokers" --key-separator $'\t' <"$work/input.txt" 2>/dev/null

start_daemon() { # log-suffix
    "$eddy" serve --brokers "$brokers" --data-dir "$work/data" --listen 127.0.0.1:0 \
        >"$work/serve-$1.out" 2>"$work/serve-$1.log" &
    daemon=$!
    pids+=("$daemon")
    wait_for_line "$work/serve-$1.out" "control plane listening on"
    export EDDY_SERVER=$(sed -n 's/.*control plane listening on //p' "$work/serve-$1.out")
}

# "restored replayed caught-up": 1 when every partition is assigned and done
# restoring; changelog records replayed; 1 when all input is committed.
status() {
    "$eddy" pipeline get restore -o json 2>/dev/null | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
ready = len(parts) == int(sys.argv[1]) and all(p["assigned"] and p["restore"] and not p["restore"]["restoring"] for p in parts)
replayed = sum(p["restore"]["replayed"] for p in parts if p["restore"])
caught_up = all(p["committed_offset"] == p["high_watermark"] >= 0 for p in parts)
print(int(ready), replayed, int(caught_up))' "$partitions" || echo "0 0 0"
}

timed_start() { # label
    local t0 t1 ready replayed caught_up
    t0=$(date +%s.%N)
    start_daemon "$1"
    while :; do
        read -r ready replayed caught_up < <(status)
        [ "$ready" = 1 ] && break
        sleep 0.02
    done
    t1=$(date +%s.%N)
    python3 -c 'import sys; print(f"  {sys.argv[1]:<34} {float(sys.argv[3]) - float(sys.argv[2]):7.2f} s, {int(sys.argv[4]):>9} changelog records replayed")' \
        "$1" "$t0" "$t1" "$replayed"
}

start_daemon load
"$eddy" pipeline create restore --module "$plugin" --input keys --output counts >/dev/null
while :; do
    read -r ready replayed caught_up < <(status)
    [ "$caught_up" = 1 ] && break
    sleep 0.2
done
du_state=$(du -sh "$work/data/state" | cut -f1)
changelog=$("$eddy" consume eddy.restore.step-0.changelog --brokers "$brokers" --from-beginning --idle-timeout 2s 2>/dev/null | wc -l)
echo "restore of $keys keys (count plugin, $partitions partitions, release build)"
echo "  state on disk $du_state; changelog $changelog records"
echo "  each figure: daemon start to every partition restored (includes process start and group join)"

kill -TERM "$daemon"; wait "$daemon" || true
timed_start "clean restart (SIGTERM before)"
kill -KILL "$daemon"; wait "$daemon" 2>/dev/null || true
timed_start "restart after SIGKILL"
kill -TERM "$daemon"; wait "$daemon" || true
rm -rf "$work/data/state"
timed_start "state directory deleted"
