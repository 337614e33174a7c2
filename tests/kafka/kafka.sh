#!/usr/bin/env bash
# Starts Apache Kafka (the version pinned in tests/kafka/pom.xml) as one KRaft
# broker+controller on loopback, waits until it answers, prints its bootstrap
# address as the first line of stdout, and runs until stopped (Ctrl-C or
# SIGTERM stop it cleanly; its log stays in DATA/kafka.log).
#
#   tests/kafka/kafka.sh [--port N] [--host ADDR] [--data DIR] [--heap SIZE] [--config KEY=VALUE]...
#   tests/kafka/kafka.sh --brokers 3 [--port N] [--data DIR] [--plan | --node I] ...
#   tests/kafka/kafka.sh --fetch
#
#   --port N            the client port (default 9092; 0 picks a free one);
#                       a cluster's nodes take N, N+1, ...
#   --host ADDR         the address to listen on and advertise (default
#                       127.0.0.1; another for a broker in a network namespace)
#   --data DIR          the data folder, formatted on first use and kept
#                       (default target/kafka/data in this checkout)
#   --heap SIZE         the JVM heap per node (default 512m)
#   --config KEY=VALUE  a broker setting added to server.properties (repeatable)
#   --brokers N         a cluster of N KRaft nodes (broker+controller each, a
#                       quorum of N), replication factor N (3 at most) and
#                       min.insync.replicas 2; each node in DATA/node-I
#   --plan              a cluster's ports and id, fixed in DATA/cluster.env on
#                       first use: print the bootstrap address and exit
#   --node I            run node I of the cluster alone (to restart one
#                       node); its pid is in DATA/node-I/pid
#   --secure            one node only: also a SASL_SSL listener (SCRAM-SHA-512
#                       for user eddy; OAUTHBEARER taking unsecured JWTs of
#                       scope "kafka") on a free port, with a CA and a broker
#                       certificate made in DATA/secure on first use; writes
#                       its address to DATA/secure/bootstrap and the daemon
#                       configuration that reaches it to DATA/secure/eddy.toml
#   --fetch             only fetch Apache Kafka (as setup does), then exit
#
# Everything is fetched by Maven into ~/.m2 on first use; nothing else is
# downloaded.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
port=9092
host=127.0.0.1
data="$repo/target/kafka/data"
heap=512m
extra=()
fetch_only=false
brokers=1
node=
plan_only=false
secure=false
while [ $# -gt 0 ]; do
    case $1 in
    --port) port=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --heap) heap=$2; shift 2 ;;
    --config) extra+=("$2"); shift 2 ;;
    --fetch) fetch_only=true; shift ;;
    --brokers) brokers=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --plan) plan_only=true; shift ;;
    --secure) secure=true; shift ;;
    -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$host"
}
java_opts=(-Xms"$heap" -Xmx"$heap" -XX:+UseSerialGC -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.showDateTime=true -cp "$classpath")

case $brokers in
[1-9]) ;;
*) echo "kafka.sh: --brokers takes 1 to 9, not '$brokers'" >&2; exit 2 ;;
esac
mkdir -p "$data"
data=$(cd "$data" && pwd)

# Starts the JVM for the properties file $1 logging to $2, writes its pid to
# $3, waits until the server says it started in this start's part of the
# log (the log accumulates across restarts), prints $4, and waits for the
# JVM; SIGINT or SIGTERM stop it cleanly.
run_server() {
    local config=$1 log=$2 pidfile=$3 address=$4 seen pid
    seen=$(grep -c 'Kafka Server started' "$log" 2>/dev/null || true)
    java "${java_opts[@]}" kafka.Kafka "$config" >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; exit 0' INT TERM
    for _ in $(seq 1 1200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: Apache Kafka exited during start; see $log" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        if [ "$(grep -c 'Kafka Server started' "$log" || true)" -gt "$seen" ]; then
            echo "$address"
            wait "$pid"
            exit $?
        fi
        sleep 0.1
    done
    echo "kafka.sh: Apache Kafka did not start within 120 s; see $log" >&2
    kill -TERM "$pid" 2>/dev/null || true
    exit 1
}

# Formats a node's log folder once, with the cluster id $2 (and, with
# --secure, the SCRAM user eddy).
format_once() {
    local config=$1 cluster_id=$2 dir=$3 log=$4 scram=()
    [ -f "$dir/meta.properties" ] && return 0
    if [ -n "${secure_port:-}" ]; then
        scram=(--add-scram "SCRAM-SHA-512=[name=eddy,password=$(cat "$secure_dir/password")]")
    fi
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" "${scram[@]+"${scram[@]}"}" >>"$log" 2>&1 || {
        echo "kafka.sh: formatting $dir failed; see $log" >&2
        tail -20 "$log" >&2
        exit 1
    }
}

# Writes a KRaft node's properties: FILE NODE_ID VOTERS CLIENT_PORT
# CONTROLLER_PORT LOG_DIR REPLICAS, then any --config settings. A cluster
# (REPLICAS > 1) keeps writes on two in-sync replicas and notices a dead
# broker within 3 s.
write_properties() {
    local file=$1 id=$2 voters=$3 client=$4 controller=$5 logs=$6 replicas=$7
    local min_isr=$((replicas < 2 ? replicas : 2))
    cat >"$file" <<PROPERTIES
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$host:$client,CONTROLLER://$host:$controller${secure_port:+,SASL_SSL://$host:$secure_port}
advertised.listeners=PLAINTEXT://$host:$client${secure_port:+,SASL_SSL://$host:$secure_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$logs
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.check.interval.ms=1000
log.cleaner.backoff.ms=1000
PROPERTIES
    if [ -n "${secure_port:-}" ]; then
        cat >>"$file" <<SECURE
sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker" unsecuredValidatorRequiredScope="kafka";
ssl.keystore.type=PEM
ssl.keystore.location=$secure_dir/broker-keystore.pem
SECURE
    fi
    if [ "$replicas" -gt 1 ]; then
        printf '%s\n' broker.heartbeat.interval.ms=500 broker.session.timeout.ms=3000 >>"$file"
    fi
    for setting in "${extra[@]+"${extra[@]}"}"; do
        echo "$setting" >>"$file"
    done
}

# With --secure: a CA, a broker certificate for $host (and localhost)
# signed by it, and the SCRAM password, made once in DATA/secure.
make_secure_material() {
    secure_dir="$data/secure"
    mkdir -p "$secure_dir"
    chmod 700 "$secure_dir"
    [ -f "$secure_dir/broker-keystore.pem" ] && return 0
    if [ -f "$data/logs/meta.properties" ]; then
        echo "kafka.sh: --secure needs a data folder formatted with it (the SCRAM user is made at format); use a new --data" >&2
        exit 2
    fi
    local d=$secure_dir san="DNS:localhost,IP:$host"
    [ "$host" = 127.0.0.1 ] || san+=",IP:127.0.0.1"
    {
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=eddy test CA" \
            -keyout "$d/ca.key" -out "$d/ca.pem"
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" \
            -keyout "$d/broker.key" -out "$d/broker.csr"
        printf 'subjectAltName=%s\n' "$san" >"$d/broker.ext"
        openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
            -CAcreateserial -days 30 -extfile "$d/broker.ext" -out "$d/broker.pem"
    } >>"$data/kafka.log" 2>&1 || { echo "kafka.sh: making certificates failed; see $data/kafka.log" >&2; exit 1; }
    openssl rand -hex 16 >"$d/password"
    # Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain.
    cat "$d/broker.key" "$d/broker.pem" "$d/ca.pem" >"$d/broker-keystore.pem.tmp"
    mv "$d/broker-keystore.pem.tmp" "$d/broker-keystore.pem"
}

# With --secure: where the secured listener is, and how eddy reaches it.
write_secure_client_files() {
    echo "$host:$secure_port" >"$secure_dir/bootstrap"
    cat >"$secure_dir/eddy.toml" <<TOML
brokers = "$host:$secure_port"

[kafka]
security-protocol = "sasl-ssl"

[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "eddy"
password-file = "$secure_dir/password"

[kafka.tls]
ca-file = "$secure_dir/ca.pem"
TOML
}

secure_port=
if $secure; then
    if [ "$brokers" -gt 1 ] || [ -n "$node" ] || $plan_only; then
        echo "kafka.sh: --secure is for one node" >&2
        exit 2
    fi
    command -v openssl >/dev/null || { echo "kafka.sh: --secure needs openssl" >&2; exit 1; }
    make_secure_material
    secure_port=$(free_port)
fi

if [ "$brokers" -gt 1 ] || [ -n "$node" ] || $plan_only; then
    # A cluster: its ports and id are fixed on first use, so a node
    # restarted alone finds the others where they were.
    plan="$data/cluster.env"
    if [ ! -f "$plan" ]; then
        client_ports=() controller_ports=()
        for i in $(seq 1 "$brokers"); do
            if [ "$port" = 0 ]; then client_ports+=("$(free_port)"); else client_ports+=($((port + i - 1))); fi
            controller_ports+=("$(free_port)")
        done
        cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>>"$data/kafka.log")
        tmp=$(mktemp "$data/cluster.env.XXXXXX")
        printf 'BROKERS=%s\nCLUSTER_ID=%s\nCLIENT_PORTS="%s"\nCONTROLLER_PORTS="%s"\n' \
            "$brokers" "$cluster_id" "${client_ports[*]}" "${controller_ports[*]}" >"$tmp"
        mv -n "$tmp" "$plan"
        rm -f "$tmp"
    fi
    # shellcheck disable=SC1090
    source "$plan"
    read -r -a client_ports <<<"$CLIENT_PORTS"
    read -r -a controller_ports <<<"$CONTROLLER_PORTS"
    bootstrap=
    voters=
    for i in $(seq 1 "$BROKERS"); do
        bootstrap+="${bootstrap:+,}$host:${client_ports[i - 1]}"
        voters+="${voters:+,}$i@$host:${controller_ports[i - 1]}"
    done
    if $plan_only; then
        echo "$bootstrap"
        exit 0
    fi
    if [ -z "$node" ]; then
        # Every node, each by this script in --node mode; stopped together.
        children=()
        outputs=()
        node_args=(--data "$data" --heap "$heap" --host "$host")
        for setting in "${extra[@]+"${extra[@]}"}"; do
            node_args+=(--config "$setting")
        done
        for i in $(seq 1 "$BROKERS"); do
            out="$data/node-$i.started"
            : >"$out"
            "$0" "${node_args[@]}" --node "$i" >"$out" &
            children+=($!)
            outputs+=("$out")
        done
        trap 'kill -TERM "${children[@]}" 2>/dev/null || true; wait; exit 0' INT TERM
        for i in "${!children[@]}"; do
            while [ ! -s "${outputs[i]}" ]; do
                kill -0 "${children[i]}" 2>/dev/null || { echo "kafka.sh: node $((i + 1)) failed to start" >&2; kill -TERM "${children[@]}" 2>/dev/null; exit 1; }
                sleep 0.1
            done
        done
        echo "$bootstrap"
        wait
        exit 0
    fi
    case $node in
    [1-9]) [ "$node" -le "$BROKERS" ] || { echo "kafka.sh: the cluster has $BROKERS nodes, no node $node" >&2; exit 2; } ;;
    *) echo "kafka.sh: --node takes a node number, not '$node'" >&2; exit 2 ;;
    esac
    dir="$data/node-$node"
    mkdir -p "$dir"
    replicas=$((BROKERS < 3 ? BROKERS : 3))
    client_port=${client_ports[node - 1]}
    write_properties "$dir/server.properties" "$node" "$voters" "$client_port" \
        "${controller_ports[node - 1]}" "$dir/logs" "$replicas"
    format_once "$dir/server.properties" "$CLUSTER_ID" "$dir/logs" "$dir/kafka.log"
    run_server "$dir/server.properties" "$dir/kafka.log" "$dir/pid" "$host:$client_port"
fi

[ "$port" = 0 ] && port=$(free_port)
controller_port=$(free_port)
config="$data/server.properties"
# Written on every start (ports may change); the log folder is kept.
write_properties "$config" 1 "1@$host:$controller_port" "$port" "$controller_port" "$data/logs" 1

log="$data/kafka.log"
$secure && write_secure_client_files
if [ ! -f "$data/logs/meta.properties" ]; then
    format_once "$config" "$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>>"$log")" "$data/logs" "$log"
fi
run_server "$config" "$log" "$data/pid" "$host:$port"
