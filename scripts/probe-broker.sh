#!/usr/bin/env bash
# Runs an independent broker probe (PROBE BOOTSTRAP, e.g. shared/kafka/check-broker.py,
# which needs `pip install confluent-kafka`) against `eddy dev-broker`.
# Exits with the probe's status. Run with `just probe-broker PROBE`.
set -euo pipefail

probe=$1
eddy="${CARGO_TARGET_DIR:-target}/debug/eddy"
out=$(mktemp)
"$eddy" dev-broker >"$out" 2>/dev/null &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do
    [ -s "$out" ] && break
    sleep 0.1
done
bootstrap=$(head -n1 "$out")
echo "probing eddy dev-broker at $bootstrap with $probe"
python3 "$probe" "$bootstrap"
