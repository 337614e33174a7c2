#!/usr/bin/env bash
# A healthy pipeline's throughput alone and beside hostile ones, in one
# daemon, in one run: `uppercase` over N preloaded records (4 partitions),
# measured alone, then again while 21 hostile pipelines (trap, endless loop,
# occasional spin past the deadline, memory hog, unbounded recursion, huge
# record, flood of records; each under fail, skip and dead-letter) chew on a
# stream where one record in 10 is poisoned, then alone again. Also prints
# how long the host took to stop looping guests (from the daemon's errors)
# and the daemon's memory. Run with `just bench-hostile [N]`; asserts nothing.
# HOSTILE="loop spin" runs only those fixtures, POLICIES="skip" only that policy;
# EDDY_GUEST_WORKER=false keeps guests that failed in the daemon's process; PROFILE=CMD runs CMD once
# while the healthy pipeline runs beside the hostile ones (a CPU sampler).
set -euo pipefail

records=${1:-500000}
partitions=4
hostile_records=50000
source "$(dirname "$0")/bench-lib.sh"

all_fixtures=(
    "trap trap"
    "loop endless_loop trigger=boom"
    "spin endless_loop trigger=boom spin=3s"
    "hog memory_hog trigger=boom"
    "recurse deep_recursion trigger=boom"
    "huge flood"
    "flood flood records=200000"
)
fixtures=()
for f in "${all_fixtures[@]}"; do
    if [ -z "${HOSTILE:-}" ] || [[ " $HOSTILE " == *" ${f%% *} "* ]]; then fixtures+=("$f"); fi
done
read -r -a policies <<<"${POLICIES:-fail skip dead-letter}"

topics=(--topic "ok-in:$partitions" --topic "ok-out:$partitions" --topic "bad-in:2")
for f in "${fixtures[@]}"; do
    for p in "${policies[@]}"; do topics+=(--topic "${f%% *}-$p-out:2"); done
done
"$eddy" dev-broker "${topics[@]}" >"$work/broker.out" 2>/dev/null &
pids+=($!)
wait_for_line "$work/broker.out" ":"
brokers=$(head -n1 "$work/broker.out")

awk -v n="$records" 'BEGIN {
    for (i = 0; i < n; i++) printf "k%d\trecord-%08d abcdefghijklmnopqrstuvwxyz0123456789 abcdefghijklmnopqrstuvwxyz0123456789\n", i, i;
}' >"$work/ok.txt"
"$eddy" produce ok-in --brokers "$brokers" --key-separator $'\t' <"$work/ok.txt" 2>/dev/null
awk -v n="$hostile_records" 'BEGIN {
    for (i = 0; i < n; i++) printf "k%d\t%s-%06d\n", i % 97, (i % 10 == 4 ? "boom" : "fine"), i;
}' >"$work/bad.txt"
"$eddy" produce bad-in --brokers "$brokers" --key-separator $'\t' <"$work/bad.txt" 2>/dev/null
# The input files' writeback would otherwise land in the middle of a run.
rm -f "$work/ok.txt" "$work/bad.txt"
sync

start_daemon serve

# Runs `uppercase` as pipeline $1 over all of ok-in; prints records per
# second from its partitions' assignment to the probe that saw its last
# commit (every 20 ms or so, with the probe's own time).
healthy_run() {
    "$eddy" pipeline create "$1" --module "$plugins/uppercase.wasm" --input ok-in --output ok-out >/dev/null
    local processed done profiling=""
    while :; do
        read -r processed done < <(progress "$1" "$partitions")
        if [ -z "$profiling" ] && [ "$processed" -gt 0 ]; then
            profiling=1
            if [ "$1" = beside ] && [ -n "${PROFILE:-}" ]; then $PROFILE >&2 & fi
        fi
        [ "$done" = 1 ] && break
        sleep 0.02
    done
    local t0 t1
    t1=$(date +%s.%N)
    t0=$(assigned_at "$1")
    "$eddy" pipeline delete "$1" >/dev/null
    python3 -c 'import sys; n, t0, t1 = sys.argv[1:]; print(f"{int(n) / (float(t1) - float(t0)):.0f}")' \
        "$processed" "$t0" "$t1"
}

alone1=$(healthy_run alone-1)

for f in "${fixtures[@]}"; do
    read -r name plugin config <<<"$f"
    for p in "${policies[@]}"; do
        args=(--on-error "$p" --call-timeout 1s --memory 32MiB --max-output-records 100000)
        for c in $config; do args+=(--config "$c"); done
        "$eddy" pipeline create "$name-$p" --module "$plugins/$plugin.wasm" --input bad-in \
            --output "$name-$p-out" "${args[@]}" >/dev/null
    done
done
# Let the hostile pipelines get going: each has failed calls by now.
wait_for_line "$work/serve.log" "skipped a record the guest failed on\|task failed"
sleep 3
sync

beside=$(healthy_run beside)
# Hostile pipelines still working through their input when it ended.
hostile_busy=0
for f in "${fixtures[@]}"; do
    for p in "${policies[@]}"; do
        [ "$p" = fail ] && continue
        behind=$("$eddy" pipeline get "${f%% *}-$p" -o json | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
print(int(any(p["committed_offset"] < p["high_watermark"] for p in parts)))')
        hostile_busy=$((hostile_busy + behind))
    done
done

for f in "${fixtures[@]}"; do
    for p in "${policies[@]}"; do "$eddy" pipeline delete "${f%% *}-$p" >/dev/null; done
done
alone2=$(healthy_run alone-2)

# The guest worker, where guests that failed run (unless EDDY_GUEST_WORKER=false).
worker_hwm_kib=0
for w in $(pgrep -P "$daemon" -f guest-worker || true); do
    worker_hwm_kib=$((worker_hwm_kib + $(awk '/VmHWM/ {print $2}' "/proc/$w/status")))
done
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")
sed 's/\x1b\[[0-9;]*m//g' "$work/serve.log" | grep -o 'interrupted after [0-9.]*m\?s' |
    sed 's/interrupted after //' >"$work/stops.txt" || true

python3 - "$alone1" "$beside" "$alone2" "$hwm_kib" "$rss_kib" "$hostile_busy" "$records" "$work/stops.txt" "$(( ${#fixtures[@]} * ${#policies[@]} ))" "$worker_hwm_kib" <<'PY'
import statistics, sys
alone1, beside, alone2, hwm, rss, busy, n, stops, _, worker_hwm = sys.argv[1:]
alone = (int(alone1) + int(alone2)) / 2
def secs(s):
    return float(s[:-2]) / 1000 if s.endswith("ms") else float(s[:-1])
stops = sorted(secs(l.strip()) for l in open(stops) if l.strip())
print(f"uppercase over {int(n):,} records on 4 partitions (release build), alone and beside {int(sys.argv[9])} hostile pipelines")
print(f"  alone (before)             {int(alone1):>10,} records/s")
print(f"  beside hostile pipelines   {int(beside):>10,} records/s")
print(f"  alone (after)              {int(alone2):>10,} records/s")
print(f"  kept                       {100 * int(beside) / alone:9.1f} % of the mean alone")
print(f"  hostile pipelines (skip, dead-letter) still busy at its end: {busy}")
if stops:
    print(f"  looping guests stopped     {len(stops)} times, deadline 1 s: after "
          f"{statistics.median(stops):.3f} s median, {stops[0]:.3f}-{stops[-1]:.3f} s range")
print(f"  daemon RSS                 {int(rss) / 1024:.1f} MiB at the end, {int(hwm) / 1024:.1f} MiB peak")
if int(worker_hwm):
    print(f"  guests that failed ran in  the guest worker, RSS {int(worker_hwm) / 1024:.1f} MiB peak")
else:
    print("  guests that failed ran in  the daemon's process (no guest worker)")
PY
