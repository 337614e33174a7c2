# The verbs a person uses. Run `scripts/setup.sh` once on a fresh machine.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where the eddy binary lands. Set CARGO_BUILD_BUILD_DIR to share the
# (large) intermediate build artefacts between checkouts, as .ci/run does;
# but never build two checkouts in one at the same time: Cargo names a
# workspace crate's artefacts by its path within the workspace, so a
# checkout whose files are older than another's last build reuses that
# build's output (a changed .proto, say) as fresh.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# Every crate under plugins/ (each is built for wasm32-wasip2).
plugins := `ls -d plugins/*/ | xargs -n1 basename | tr '\n' ' '`

# Plugins get a target directory of their own, inside this checkout: a
# cdylib's file name carries no hash, so checkouts sharing CARGO_TARGET_DIR
# would overwrite each other's .wasm. They are small and quick to build.
plugins_target := justfile_directory() / "target" / "plugins"
# The fuzz targets' final binaries (tests/fuzz is a workspace of its own).
fuzz_target_dir := justfile_directory() / "target" / "fuzz"

default: demo

# Build every plugin for wasm32-wasip2 (release): target/plugins/wasm32-wasip2/release/*.wasm.
# With link-time optimisation and one codegen unit: a plugin is small, and so inlined whole its
# calls into eddy-sdk's glue cost 15 % less (docs/plugins.md); the host's release build stays without.
plugins:
    CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_TARGET_DIR={{ plugins_target }} CARGO_BUILD_BUILD_DIR={{ plugins_target }} cargo build --release --target wasm32-wasip2 --locked {{ prepend("-p ", plugins) }}

# Build the plugins and the eddy binary.
build: plugins
    cargo build --locked -p eddy

# The fast tests alone: unit and doc tests of every crate, no broker, no daemon, no plugins.
unit:
    cargo test --workspace --locked --lib
    cargo test --workspace --locked --doc

# The modules of the e2e suite whose outcome rests on Kafka's semantics (delivery, exactly-once,
# state and restore, several daemons, error policies and hostile guests, the registry, the broker's own contract):
# `just test` runs them on Apache Kafka as well as on `eddy dev-broker`.
kafka_e2e := "broker:: cluster:: delivery:: exactly_once:: hostile:: policies:: state::"

# Run the whole test suite: unit, doc and end-to-end (real binary, broker process, real plugins) on
# `eddy dev-broker`; the Kafka-semantics e2e modules again on Apache Kafka; then the crash
# harness's kill, zombie and scale scenarios on Apache Kafka, a short broker-fault run on a
# 3-node cluster (one leader SIGKILLed, then writes refused for 75 s), a network partition (a
# daemon's link down for 20 s; needs root for `ip netns`), a daemon lost for good with a
# standby replica of its state, and a daemon whose clock jumps 2 h forward and back.
test: build
    EDDY_BIN="$CARGO_TARGET_DIR/debug/eddy" cargo test --workspace --locked 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"
    EDDY_TEST_BROKER=kafka EDDY_BIN="$CARGO_TARGET_DIR/debug/eddy" cargo test --locked -p eddy-tests --test e2e -- {{ kafka_e2e }} 2>&1 | tee -a "$CARGO_TARGET_DIR/test-output.txt"
    awk '/^test result:/ { passed += $4; failed += $6 } END { printf "total: %d passed, %d failed\n", passed, failed }' "$CARGO_TARGET_DIR/test-output.txt"
    just crash --broker kafka --scenario kill --kills 3 --records 20000 --feed-seconds 30
    just crash --broker kafka --scenario zombie --records 20000 --feed-seconds 30
    just crash --broker kafka --scenario scale --pipeline word-count --records 20000 --feed-seconds 40
    just crash --broker kafka --brokers 3 --scenario brokers --short --pipeline word-count --records 20000 --feed-seconds 120 --refuse-seconds 75
    just crash --broker kafka --scenario partition --pipeline word-count --records 20000 --feed-seconds 60
    just crash --broker kafka --scenario standby --pipeline word-count --keys 20000 --records 30000 --feed-seconds 40 --standby-replicas 1
    just crash --broker kafka --scenario clock --pipeline word-count --records 20000 --feed-seconds 50

# The e2e suite (or the tests FILTER names) on Apache Kafka alone, e.g. `just test-kafka state::`.
test-kafka *filter: build
    EDDY_TEST_BROKER=kafka EDDY_BIN="$CARGO_TARGET_DIR/debug/eddy" cargo test --locked -p eddy-tests --test e2e -- {{ filter }}

# Apache Kafka (the version tests/kafka/pom.xml pins, fetched by Maven on first use) as one KRaft
# node on loopback: prints its bootstrap address, runs until Ctrl-C, keeps its data and log in
# target/kafka/data. E.g. `just kafka --port 9092`; `just kafka --brokers 3` for a 3-node cluster
# (replication factor 3, min.insync.replicas 2); `just kafka --secure --data DIR` adds a SASL_SSL
# listener and writes the daemon configuration that reaches it (docs/security.md); `--help` lists
# the flags.
kafka *args:
    tests/kafka/kafka.sh {{ args }}

# The crash harness (tests/harness/crash.py): records in, daemons killed, stalled or added, then an
# independent read_committed reader checks nothing was lost or doubled. E.g. `just crash --kills 5`.
crash *args: build
    python3 -c "import confluent_kafka" 2>/dev/null || pip3 install --quiet confluent-kafka
    python3 tests/harness/crash.py --eddy "$CARGO_TARGET_DIR/debug/eddy" {{ args }}

# Failover on Apache Kafka: two daemons, one SIGKILLed mid-stream and restarted at once; prints the
# seconds from each restart to its partitions' first committed output (docs/performance.md).
failover *args: build
    just crash --broker kafka --scenario failover --kills 5 --records 40000 --feed-seconds 90 {{ args }}

# Broker faults on a 3-node Apache Kafka cluster: exactly-once word count while the leaders of its
# topics are SIGKILLed, then a rolling restart, then writes refused (NOT_ENOUGH_REPLICAS) for 90 s;
# prints the stall per fault (docs/performance.md).
fault-brokers *args: build
    just crash --broker kafka --brokers 3 --scenario brokers --pipeline word-count --records 40000 --feed-seconds 420 {{ args }}

# A flapping daemon on Apache Kafka: two daemons, one SIGKILLed 6 times and restarted after a random
# outage of up to twice the 12 s session; fails if a restart within the session cost the other daemon
# a rebalance; prints each outage, the revocations it caused and the stall (docs/performance.md).
fault-flap *args: build
    just crash --broker kafka --scenario flap --pipeline word-count --kills 6 --session-timeout 12 --records 40000 --feed-seconds 200 {{ args }}

# A network partition on Apache Kafka: broker and two daemons as hosts of their own (network
# namespaces; needs root), one daemon's link down for --cut-seconds (20) mid-stream, then back;
# prints how soon the other took its partitions and how soon it rejoined (docs/performance.md).
fault-partition *args: build
    just crash --broker kafka --scenario partition --pipeline word-count --records 40000 --feed-seconds 120 --cut-seconds 30 {{ args }}

# A daemon whose wall clock jumps, on Apache Kafka: two daemons running word count, one's clock a day
# ahead, then a day behind, then true (an LD_PRELOAD library; needs a C compiler), each for 30 s;
# prints how soon its partitions committed after each jump (docs/performance.md).
fault-clock *args: build
    just crash --broker kafka --scenario clock --pipeline word-count --records 40000 --feed-seconds 150 --clock-jump 86400 --clock-hold 30 {{ args }}

# Standby replicas on Apache Kafka: word count with 1,000,000 keys of state on two daemons, one
# SIGKILLed and not restarted, without and then with `--standby-replicas 1`; prints the changelog
# records replayed and the seconds until the moved partitions committed (docs/performance.md).
fault-standby *args: build
    just crash --broker kafka --scenario standby --pipeline word-count --keys 1000000 --records 300000 --feed-seconds 150 {{ args }}
    just crash --broker kafka --scenario standby --pipeline word-count --keys 1000000 --records 300000 --feed-seconds 150 --standby-replicas 1 {{ args }}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    CARGO_TARGET_DIR={{ plugins_target }} CARGO_BUILD_BUILD_DIR={{ plugins_target }} cargo clippy --release --target wasm32-wasip2 --locked -p eddy-sdk {{ prepend("-p ", plugins) }} -- -D warnings

# Fuzz the decoders and checks that read what others wrote (tests/fuzz): the packed batch codec,
# pipeline specs and registry records. `just fuzz` runs each target briefly, as CI does;
# `just fuzz pipeline_spec 3600` runs one for an hour. A target starts from its seeds
# (tests/fuzz/seeds/TARGET) when it has them. cargo-fuzz wants nightly flags: the stable
# toolchain takes them with RUSTC_BOOTSTRAP=1. Crashes land in tests/fuzz/artifacts/TARGET.
fuzz target="" seconds="15":
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
    cd tests/fuzz && for t in {{ if target == "" { "packed_batch pipeline_spec registry_record" } else { target } }}; do \
        dict=(); [ -f "dictionaries/$t.dict" ] && dict=(-dict="dictionaries/$t.dict"); \
        seeds=(); [ -d "seeds/$t" ] && seeds=("corpus/$t" "seeds/$t") && mkdir -p "corpus/$t"; \
        RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR={{ fuzz_target_dir }} cargo fuzz run --sanitizer none "$t" "${seeds[@]+"${seeds[@]}"}" -- -max_total_time={{ seconds }} -rss_limit_mb=2048 "${dict[@]+"${dict[@]}"}" || exit 1; \
    done

# Licences, bans and sources of every dependency (deny.toml). Advisories are left out: RustSec's
# database is a git repository these machines cannot fetch (`cargo deny check advisories` elsewhere).
deny:
    command -v cargo-deny >/dev/null 2>&1 || cargo install cargo-deny --locked --quiet
    cargo deny --locked check bans licenses sources

# Probe `eddy dev-broker` with an independent client (e.g. ../shared/kafka/check-broker.py);
# `just probe-broker PROBE --kafka` probes Apache Kafka the same way.
probe-broker probe *kind: build
    python3 -c "import confluent_kafka" 2>/dev/null || pip3 install --quiet confluent-kafka
    scripts/probe-broker.sh {{ probe }} {{ kind }}

# Start the daemon on its embedded broker, deploy `uppercase`, produce lines, print the output.
demo: build
    scripts/demo.sh

# The data-path benchmark, side by side in one run (scripts/bench.sh): native rdkafka loops,
# `uppercase` as a builtin and as a module (at-least-once, exactly-once), word count native and
# in eddy; records/s, records per CPU-second and ratios, latency at half the native rate, task
# instantiation, peak RSS. RUNS= selects rows, BENCH_PERF=ROW profiles one with perf.
bench records="1000000": plugins
    cargo build --release --locked -p eddy --bin eddy --examples
    scripts/bench.sh {{ records }}

# The same benchmark, short and on debug builds: a CI smoke check that it runs (figures printed,
# no thresholds; debug figures say nothing about speed).
bench-smoke records="20000": build
    cargo build --locked -p eddy --examples
    BENCH_PROFILE=debug ROUNDS=1 LATENCY_SECONDS=2 LATENCY_RATE=2000 scripts/bench.sh {{ records }}

# Microbenchmarks (divan): the guest call per batch size, Wasm and builtin; instantiating a
# task's guest; state commits and reads (host/benches/data_path.rs).
microbench *args: plugins
    cargo bench --locked -p eddy --bench data_path -- {{ args }}

# Where a task's instantiation time goes: the same module instantiated on warm and new threads,
# in used and unused pool slots; each condition's CPU time, page faults and `init` (host/benches/instantiation.rs).
bench-instantiation: plugins
    cargo bench --locked -p eddy --bench instantiation

# A healthy pipeline's throughput alone and beside 21 hostile ones; time to stop a looping guest; RSS.
bench-hostile records="500000": plugins
    cargo build --release --locked -p eddy
    scripts/bench-hostile.sh {{ records }}

# Daemon memory under sustained live load: `uppercase` and a `count` whose state grows, RSS a
# minute, the peaks of each half of the run, end-to-end latency (SOAK_RATE=, default 10,000 rec/s).
soak minutes="10": plugins
    cargo build --release --locked -p eddy --bin eddy --examples
    scripts/soak.sh {{ minutes }}

# Restore time of durable state: N keys, clean restart, SIGKILL, state directory lost.
bench-restore keys="1000000": plugins
    cargo build --release --locked -p eddy
    scripts/bench-restore.sh {{ keys }}

# eddy beside Kafka Streams itself on one Apache Kafka broker (scripts/bench-streams.py): the
# native loop on eddy's Kafka path (the ceiling), eddy and Kafka Streams (bench/kafka-streams) on
# uppercase and word count, at-least-once and exactly-once; records per CPU-second, peak RSS.
# `just bench-streams --rounds 1 --jobs uppercase` narrows it; `--help` lists the options.
bench-streams *args: plugins
    cargo build --release --locked -p eddy --bin eddy --examples
    python3 -c "import confluent_kafka" 2>/dev/null || pip3 install --quiet confluent-kafka
    python3 scripts/bench-streams.py {{ args }}
