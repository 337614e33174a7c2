#!/usr/bin/env bash
# Memory under sustained load (issue 7: daemon memory "bounded under load"):
# one daemon runs two pipelines on the same live input for MINUTES
# (default 10) while `latency_probe` produces SOAK_RATE records/s (default
# 10,000) of 100-200 bytes over 4 partitions:
#   - soak-upper: `uppercase` (stateless), whose output the probe reads back
#     for end-to-end latency;
#   - soak-count: `count` over the records' keys, every one new, so its
#     RocksDB state and changelog grow by SOAK_RATE keys a second.
# Every 10 s it samples the daemon's RSS and both pipelines' progress and
# prints a line a minute with where the memory is (`eddy daemon info`: the
# state stores' shared block cache, the write buffers charged to it, the
# table readers beside it, and glibc's heap in use and free;
# SOAK_STATE_MEMORY sets the budget, default the daemon's 64MiB;
# EDDY_HEAP_TRIM_INTERVAL=0s leaves glibc's free memory resident); at the
# end, the RSS after the first minute, the highest in each half of the run
# and at the end, the probe's latency and each pipeline's processor call
# times (its slowest partition's).
# Bounded means the second half's peak is near the first half's while
# state keeps growing. The broker keeps SOAK_RETENTION per partition
# (default 128MiB), so it does not fill the machine's memory.
# Run with `just soak [MINUTES]`; prints figures, asserts nothing.
set -euo pipefail

minutes=${1:-10}
rate=${SOAK_RATE:-10000}
retention=${SOAK_RETENTION:-128MiB}
partitions=4
source "$(dirname "$0")/bench-lib.sh"
seconds=$((minutes * 60))
examples="$target/$profile/examples"

"$eddy" dev-broker --retention "$retention" --topic "soak-in:$partitions" \
    --topic "soak-upper:$partitions" --topic "soak-counts:$partitions" >"$work/broker.out" 2>/dev/null &
pids+=($!)
wait_for_line "$work/broker.out" ":"
brokers=$(head -n1 "$work/broker.out")
start_daemon serve ${SOAK_STATE_MEMORY:+--state-memory "$SOAK_STATE_MEMORY"}

"$eddy" pipeline create soak-upper --module "$plugins/uppercase.wasm" \
    --input soak-in --output soak-upper --from latest >/dev/null
"$eddy" pipeline create soak-count --module "$plugins/count.wasm" \
    --input soak-in --output soak-counts --from latest >/dev/null
for name in soak-upper soak-count; do
    wait_for_line "$work/serve.log" "partitions assigned pipeline=$name "
done

# "cache (write buffers) + readers  C-heap-used  C-heap-free" in MiB, from
# `eddy daemon info`.
state_memory() {
    "$eddy" daemon info -o json | python3 -c '
import json, sys
m = json.load(sys.stdin)["memory"]
c, w, t, u, f = (m[k] / 2**20 for k in ("state_cache_bytes", "state_write_buffer_bytes",
    "state_table_reader_bytes", "native_heap_used_bytes", "native_heap_free_bytes"))
print(f"{c:.1f} ({w:.1f}) + {t:.1f} {u:9.1f} {f:9.1f}")'
}

# Records the pipeline's tasks took in.
records_in() {
    "$eddy" pipeline get "$1" -o json | python3 -c '
import json, sys
print(sum(p["records_in"] for p in json.load(sys.stdin)["partitions"]))'
}

echo "eddy soak ($profile build): $minutes min at $rate records/s, 4 partitions, broker retention $retention per partition"
echo "  pipelines: soak-upper (uppercase), soak-count (count over keys that are all new)"
echo "  minute   RSS MiB   state cache (write buffers) + table readers, glibc heap used, free MiB   upper records   count records (= keys in state)"
"$examples/latency_probe" "$brokers" soak-in soak-upper "$rate" "$seconds" >"$work/probe.out" &
probe=$!
pids+=("$probe")
start=$(date +%s)
samples=()
while kill -0 "$probe" 2>/dev/null; do
    sleep 10
    kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited; its log: $work/serve.log" >&2; exit 1; }
    elapsed=$(($(date +%s) - start))
    rss=$(rss_mib)
    samples+=("$elapsed:$rss")
    if [ $((elapsed % 60)) -lt 10 ]; then
        printf '  %6d %9d %68s %15s %15s\n' $((elapsed / 60)) "$rss" "$(state_memory)" \
            "$(records_in soak-upper)" "$(records_in soak-count)"
    fi
done
wait "$probe"
read -r _ sent _ received _ p50 _ p99 _ max <"$work/probe.out"
python3 - "$seconds" "${samples[@]}" <<'PY'
import sys
seconds = int(sys.argv[1])
samples = [tuple(map(int, s.split(":"))) for s in sys.argv[2:]]
first_minute = next((r for t, r in samples if t >= 60), None)
half = seconds // 2
early = max((r for t, r in samples if t < half), default=0)
late = max((r for t, r in samples if t >= half), default=0)
print(f"  RSS MiB: after the first minute {first_minute}, peak in the first half {early}, "
      f"in the second half {late}, at the end {samples[-1][1] if samples else 0}")
PY
echo "  upper: sent $sent, read back $received; latency p50 $p50 ms, p99 $p99 ms, max $max ms"
for name in soak-upper soak-count; do
    read -r calls p50_call p99_call max_call < <(call_times "$name")
    echo "  $name processor calls: $calls, slowest partition p50 $p50_call ms, p99 $p99_call ms, max $max_call ms"
done
echo "  daemon peak RSS $(peak_rss_mib) MiB"
