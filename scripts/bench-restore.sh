#!/usr/bin/env bash
# Restore cost of durable state: N distinct keys counted by `count` on a
# 4-partition topic, then three daemon starts, each timed from process start
# to every task having finished its restore:
#   - a clean restart (SIGTERM, restart): the local store is current;
#   - a restart after SIGKILL (while idle): local store plus changelog tail,
#     after the dead member's session (6 s) expires;
#   - the state directory deleted: every key replayed from the changelog.
# Run with `just bench-restore [N]`; prints figures, asserts nothing.
set -euo pipefail

keys=${1:-1000000}
partitions=4
source "$(dirname "$0")/bench-lib.sh"
plugin="$plugins/count.wasm"

"$eddy" dev-broker --topic "keys:$partitions" --topic "counts:$partitions" --retention 4GiB >"$work/broker.out" 2>/dev/null &
pids+=($!)
wait_for_line "$work/broker.out" ":"
brokers=$(head -n1 "$work/broker.out")

awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) printf "key-%08d\tx\n", i }' >"$work/input.txt"
"$eddy" produce keys --brokers "$brokers" --key-separator $'\t' <"$work/input.txt" 2>/dev/null

# A short session timeout: after SIGKILL the group hands the partitions
# back once the dead member's session expires.
start_restore_daemon() { # log-suffix
    start_daemon "serve-$1" --session-timeout 6s
}

# "restored replayed caught-up": 1 when every partition is assigned and done
# restoring; changelog records replayed; 1 when all input is committed.
status() {
    "$eddy" pipeline get restore -o json 2>/dev/null | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
complete = len(parts) == int(sys.argv[1])
ready = complete and all(p["assigned"] and p["restore"] and not p["restore"]["restoring"] for p in parts)
replayed = sum(p["restore"]["replayed"] for p in parts if p["restore"])
slowest = max((p["restore"]["duration_ms"] for p in parts if p["restore"]), default=0)
caught_up = complete and all(p["committed_offset"] == p["high_watermark"] >= 0 for p in parts)
print(int(ready), replayed, slowest, int(caught_up))' "$partitions" || echo "0 0 0 0"
}

timed_start() { # label
    local t0 t1 ready replayed slowest caught_up
    t0=$(date +%s.%N)
    start_restore_daemon "$1"
    while :; do
        read -r ready replayed slowest caught_up < <(status)
        [ "$ready" = 1 ] && break
        sleep 0.02
    done
    t1=$(date +%s.%N)
    python3 -c 'import sys; print(f"  {sys.argv[1]:<36} {float(sys.argv[3]) - float(sys.argv[2]):6.2f} s to ready, slowest restore {int(sys.argv[5]) / 1000:6.2f} s, {int(sys.argv[4]):>9} changelog records replayed")' \
        "$1" "$t0" "$t1" "$replayed" "$slowest"
}

start_restore_daemon load
"$eddy" pipeline create restore --module "$plugin" --input keys --output counts >/dev/null
while :; do
    read -r ready replayed slowest caught_up < <(status)
    [ "$caught_up" = 1 ] && break
    sleep 0.2
done
echo "restore of $keys keys (count plugin, $partitions partitions, release build)"
echo "  'to ready': daemon process start until every partition is restored (process start and"
echo "  consumer-group join included); 'slowest restore': the longest task restore itself"

kill -TERM "$daemon"; wait "$daemon" || true
echo "  state on disk after the load: $(du -sh "$work/data/state" | cut -f1)"
timed_start "clean restart (SIGTERM before)"
kill -KILL "$daemon"; wait "$daemon" 2>/dev/null || true
timed_start "restart after SIGKILL (6 s session)"
kill -TERM "$daemon"; wait "$daemon" || true
rm -rf "$work/data/state"
timed_start "state directory deleted"
