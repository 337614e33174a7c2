#!/usr/bin/env bash
# Starts Apache Kafka (the version pinned in tests/kafka/pom.xml) as one KRaft
# broker+controller on loopback, waits until it answers, prints its bootstrap
# address as the first line of stdout, and runs until stopped (Ctrl-C or
# SIGTERM stop it cleanly; its log stays in DATA/kafka.log).
#
#   tests/kafka/kafka.sh [--port N] [--data DIR] [--heap SIZE] [--config KEY=VALUE]...
#   tests/kafka/kafka.sh --fetch
#
#   --port N            the client port (default 9092; 0 picks a free one)
#   --data DIR          the data folder, formatted on first use and kept
#                       (default target/kafka/data in this checkout)
#   --heap SIZE         the JVM heap (default 512m)
#   --config KEY=VALUE  a broker setting added to server.properties (repeatable)
#   --fetch             only fetch Apache Kafka (as setup does), then exit
#
# Everything is fetched by Maven into ~/.m2 on first use; nothing else is
# downloaded.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
port=9092
data="$repo/target/kafka/data"
heap=512m
extra=()
fetch_only=false
while [ $# -gt 0 ]; do
    case $1 in
    --port) port=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --heap) heap=$2; shift 2 ;;
    --config) extra+=("$2"); shift 2 ;;
    --fetch) fetch_only=true; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kafka.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

command -v java >/dev/null || { echo "kafka.sh: java (17 or newer) is not on PATH" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka.sh: mvn (Maven) is not on PATH" >&2; exit 1; }

# The class path, resolved by Maven once per version of the pom and kept in
# target/kafka (concurrent first starts each resolve and rename atomically).
cache="$repo/target/kafka"
mkdir -p "$cache"
pom_hash=$(sha256sum "$here/pom.xml" | cut -c1-16)
classpath_file="$cache/classpath-$pom_hash.txt"
# A cached class path naming a jar no longer in ~/.m2 is resolved again.
if [ -s "$classpath_file" ]; then
    IFS=: read -r -a jars <"$classpath_file" || true
    for jar in "${jars[@]}"; do
        [ -f "$jar" ] || { rm -f "$classpath_file"; break; }
    done
fi
if [ ! -s "$classpath_file" ]; then
    tmp=$(mktemp "$cache/classpath.XXXXXX")
    if ! mvn -q -B -f "$here/pom.xml" dependency:build-classpath -Dmdep.outputFile="$tmp" >"$tmp.log" 2>&1; then
        echo "kafka.sh: Maven could not resolve Apache Kafka (tests/kafka/pom.xml):" >&2
        tail -20 "$tmp.log" >&2
        rm -f "$tmp" "$tmp.log"
        exit 1
    fi
    rm -f "$tmp.log"
    mv "$tmp" "$classpath_file"
fi
classpath=$(cat "$classpath_file")
if $fetch_only; then
    echo "kafka.sh: Apache Kafka $(grep -o '<kafka.version>[^<]*' "$here/pom.xml" | cut -d'>' -f2) is in the local Maven repository" >&2
    exit 0
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[ "$port" = 0 ] && port=$(free_port)
controller_port=$(free_port)

mkdir -p "$data"
data=$(cd "$data" && pwd)
config="$data/server.properties"
# Written on every start (ports may change); the log folder is kept.
cat >"$config" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.check.interval.ms=1000
log.cleaner.backoff.ms=1000
PROPERTIES
for setting in "${extra[@]+"${extra[@]}"}"; do
    echo "$setting" >>"$config"
done

java_opts=(-Xms"$heap" -Xmx"$heap" -XX:+UseSerialGC -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.showDateTime=true -cp "$classpath")
log="$data/kafka.log"
if [ ! -f "$data/logs/meta.properties" ]; then
    cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>>"$log")
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" >>"$log" 2>&1 || {
        echo "kafka.sh: formatting $data/logs failed; see $log" >&2
        tail -20 "$log" >&2
        exit 1
    }
fi

# Started when the server says so in this start's part of the log (the
# log accumulates across restarts).
seen=$(grep -c 'Kafka Server started' "$log" 2>/dev/null || true)
java "${java_opts[@]}" kafka.Kafka "$config" >>"$log" 2>&1 &
pid=$!
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    exit 0
}
trap stop INT TERM

for _ in $(seq 1 1200); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "kafka.sh: Apache Kafka exited during start; see $log" >&2
        tail -20 "$log" >&2
        exit 1
    fi
    if [ "$(grep -c 'Kafka Server started' "$log" || true)" -gt "$seen" ]; then
        echo "127.0.0.1:$port"
        wait "$pid"
        exit $?
    fi
    sleep 0.1
done
echo "kafka.sh: Apache Kafka did not start within 120 s; see $log" >&2
kill -TERM "$pid" 2>/dev/null || true
exit 1
