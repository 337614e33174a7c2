#!/usr/bin/env bash
# Runs an independent broker probe (PROBE BOOTSTRAP, e.g. shared/kafka/check-broker.py,
# which needs `pip install confluent-kafka`) against `eddy dev-broker`, or with
# `--kafka` against Apache Kafka from tests/kafka/kafka.sh: the same probe passing on
# both is what makes the dev broker a stand-in. Exits with the probe's status.
# Run with `just probe-broker PROBE` (or `just probe-broker PROBE --kafka`).
set -euo pipefail

probe=$1
kind=${2:-}
out=$(mktemp)
if [ "$kind" = --kafka ]; then
    data=$(mktemp -d)
    # The script and its JVM in a process group of their own, stopped together.
    setsid "$(dirname "$0")/../tests/kafka/kafka.sh" --port 0 --data "$data" >"$out" &
    broker=$!
    name="Apache Kafka"
    trap 'kill -TERM -- "-$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -rf "$out" "$data"' EXIT
    tries=1800
else
    eddy="${CARGO_TARGET_DIR:-target}/debug/eddy"
    "$eddy" dev-broker >"$out" 2>/dev/null &
    broker=$!
    name="eddy dev-broker"
    trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -f "$out"' EXIT
    tries=100
fi
for _ in $(seq "$tries"); do
    [ -s "$out" ] && break
    kill -0 "$broker" 2>/dev/null || { echo "probe-broker: $name did not start" >&2; exit 1; }
    sleep 0.1
done
bootstrap=$(head -n1 "$out")
[ -n "$bootstrap" ] || { echo "probe-broker: $name printed no address" >&2; exit 1; }
echo "probing $name at $bootstrap with $probe"
python3 "$probe" "$bootstrap"
