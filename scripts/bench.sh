#!/usr/bin/env bash
# Throughput of `uppercase` through the daemon: preloads N keyed records of
# 100-200 bytes into a 4-partition topic on `eddy dev-broker`, then deploys
# the pipeline once per guarantee, one after the other over the same input
# in the same daemon (GUARANTEES="at-least-once exactly-once" by default),
# and measures each one's wall time and the daemon's CPU time (user + sys,
# from /proc) until every record is processed and committed.
# Run with `just bench [N]`; prints figures, asserts nothing.
#
# N defaults to 1,000,000 (about 150 MB of input).
set -euo pipefail

records=${1:-1000000}
partitions=4
source "$(dirname "$0")/bench-lib.sh"
plugin="$plugins/uppercase.wasm"

"$eddy" dev-broker --topic "bench-in:$partitions" --topic "bench-out-native:$partitions" \
    --topic "bench-out-at-least-once:$partitions" --topic "bench-out-exactly-once:$partitions" \
    >"$work/broker.out" 2>/dev/null &
pids+=($!)
wait_for_line "$work/broker.out" ":"
brokers=$(head -n1 "$work/broker.out")

awk -v n="$records" 'BEGIN {
    pad = "abcdefghijklmnopqrstuvwxyz0123456789 ";
    while (length(pad) < 200) pad = pad pad;
    for (i = 0; i < n; i++) printf "k%d\trecord-%08d %s\n", i, i, substr(pad, 1, 85 + (i * 37) % 100);
}' >"$work/input.txt"
"$eddy" produce bench-in --brokers "$brokers" --key-separator $'\t' <"$work/input.txt" 2>/dev/null

start_daemon serve

# CPU time of all the daemon's threads, in nanoseconds (schedstat is exact
# where /proc/PID/stat counts 10 ms ticks).
cpu() { cat /proc/"$daemon"/task/*/schedstat | awk '{ns += $1} END {printf "%d", ns}'; }

# Measures one pipeline over the preloaded input: name, guarantee, output.
measure() {
    local name=$1 guarantee=$2 output=$3
    local cpu0 cpu1 t0 t1 processed done
    cpu0=$(cpu)
    "$eddy" pipeline create "$name" --module "$plugin" --input bench-in --output "$output" \
        --guarantee "$guarantee" >/dev/null
    while :; do
        read -r processed done < <(progress "$name" "$partitions")
        [ "$done" = 1 ] && break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    cpu1=$(cpu)
    # The clock starts when the consumer group has handed out the partitions
    # (the daemon logs it), not at creation: joining a group takes seconds that
    # say nothing about the data path.
    t0=$(sed 's/\x1b\[[0-9;]*m//g' "$work/serve.log" | grep "partitions assigned" | grep -m1 "pipeline=$name " |
        cut -d' ' -f1 |
        python3 -c 'import sys, datetime; print(datetime.datetime.fromisoformat(sys.stdin.read().strip().replace("Z", "+00:00")).timestamp())')
    "$eddy" pipeline pause "$name" >/dev/null
    row "eddy $guarantee" "$processed" "$(python3 -c "print($t1 - $t0)")" \
        "$(python3 -c "print(($cpu1 - $cpu0) / 1e9)")"
    if [ "$processed" -ne "$records" ]; then
        echo "  note: $processed records processed, $records produced" >&2
    fi
}

# Prints one row: what, records, wall seconds, CPU seconds; the ratio of
# its records per CPU-second to the native baseline's once that ran.
native_rate=""
row() {
    python3 - "$@" "$native_rate" <<'PY'
import sys
what, n, wall, cpu, native = sys.argv[1:]
n, wall, cpu = int(n), float(wall), float(cpu)
rate = n / cpu if cpu > 0 else float("inf")
ratio = f"{rate / float(native):6.2f}" if native else "     -"
print(f"  {what:<22} {wall:8.2f} {cpu:8.3f} {n / wall:10.0f} {rate:10.0f}   {ratio}")
PY
}

echo "uppercase ($profile builds): $records keyed records of 100-200 bytes, $partitions partitions"
echo "  wall: from partition assignment (eddy) or the first record (native) to the last commit"
echo "  CPU: the processing process, all threads, user + sys"
echo "  what                       wall s    CPU s      rec/s  rec/CPU-s  vs native"
# (a) the native baseline: a plain rdkafka loop with eddy's client settings.
read -r _ n _ wall _ cpu < <("$target/$profile/examples/native_uppercase" "$brokers" bench-in \
    bench-out-native bench-native "$records")
row "native rdkafka loop" "$n" "$wall" "$cpu"
native_rate=$(python3 -c "print($n / $cpu)")
# Upload (and so compile) the module first: neither measurement pays for it.
"$eddy" module push "$plugin" >/dev/null
for guarantee in ${GUARANTEES:-at-least-once exactly-once}; do
    measure "bench-$guarantee" "$guarantee" "bench-out-$guarantee"
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")
echo "  daemon peak RSS $((rss_kib / 1024)) MiB"
