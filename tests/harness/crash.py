#!/usr/bin/env python3
"""Crash harness: records in, daemons killed, then an independent
read_committed reader (confluent-kafka) checks that nothing was lost and,
under exactly-once, nothing doubled. The shape of Kafka's own system tests
(transactions_test.py, streams_eos_test.py).

Scenarios:
  kill    one daemon, SIGKILLed --kills times at random points and restarted
  zombie  two daemons; one is SIGSTOPped past its session timeout so its
          partitions move, then SIGCONTed: none of its late writes may show
  scale   one daemon, a second and a third join mid-stream, one is killed
  failover two daemons; one is SIGKILLed mid-stream and restarted at once,
          --kills times: the stall of its partitions, from the restart to
          their first committed output, is printed per kill
  brokers Apache Kafka as a cluster (--brokers 3): the leader of the input's,
          the output's, the repartition topic's and the changelog's first
          partition is SIGKILLed in turn mid-stream (and restarted once its
          partitions moved), then every broker is restarted one by one; the
          stall of committed progress per fault is printed
  partition two daemons and the broker as hosts of their own (netns.py):
          one daemon's link is cut past its session timeout, then healed
  standby two daemons, one SIGKILLed for good: the records the other
          replays to take over its state, with and without standbys
  flap    two daemons, one restarted again and again within its session
  clock   two daemons; the wall clock of one jumps mid-stream forward by
          --clock-jump seconds, back by twice that, then to the true time,
          each held --clock-hold seconds (an LD_PRELOAD library,
          clockshift.c): the stall of its partitions after each jump is
          printed

Pipelines: uppercase (every input's upper-cased value once) and word-count
(split-words -> count: every word's counts 1..n once, and the state equal to
the reference counts).

Runs against `eddy dev-broker` in its own process (--broker dev), Apache
Kafka started by tests/kafka/kafka.sh (--broker kafka), or any Kafka given
with --bootstrap. Prints one summary line of figures; exits non-zero when the
guarantee was broken (exactly-once: anything lost or doubled; at-least-once:
anything lost).

Example: python3 tests/harness/crash.py --pipeline word-count --records 100000 --kills 5 --seed 7
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from netns import Network

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Seconds after writes are refused during which a commit already under way
# may still land (see Harness.refuse_writes).
IN_FLIGHT_GRACE_S = 15


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(what, timeout, check, interval=0.1):
    """Polls `check` until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def restored_after(daemon, since, step):
    """The changelog records each task of `step` replayed in the restores
    `daemon` logged after the Unix time `since`."""
    import datetime
    replayed = []
    with open(daemon.log_path, errors="replace") as f:
        for line in f:
            if "state restored" not in line or f"/{step}/" not in line:
                continue
            at = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
            if at.timestamp() >= since:
                replayed.append(int(line.split("replayed=", 1)[1].split()[0]))
    return replayed


def revocations(daemon):
    """How many times `daemon` logged partitions revoked from it."""
    with open(daemon.log_path, errors="replace") as f:
        return sum(1 for line in f if "partitions revoked" in line)


def fenced_lines(daemon):
    """The lines of `daemon`'s log saying one of its producers or group
    members was fenced."""
    with open(daemon.log_path, errors="replace") as f:
        return [line.strip() for line in f if "fenced" in line.lower()]


def first_line(proc, timeout, match):
    """The first stdout line of `proc` containing `match`, read on a thread."""
    found = []

    def read():
        for line in proc.stdout:
            if match in line:
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        raise SystemExit(f"the process did not print {match!r} within {timeout}s")
    return found[0]


class Daemon:
    """`eddy serve` in its own process, with its own data directory."""

    def __init__(self, args, work, index, brokers, host=None, env=None):
        """`host`: (command prefix, address) of a host of its own (see
        netns.py); the daemon runs on loopback without one. `env`: more
        environment for its process."""
        self.args, self.index, self.brokers = args, index, brokers
        self.env = env or {}
        self.prefix, self.address = host or ([], "127.0.0.1")
        self.data = os.path.join(work, f"daemon-{index}")
        self.log_path = os.path.join(work, f"daemon-{index}.log")
        self.proc = None
        self.server = None

    def start(self):
        with open(self.log_path, "a") as log_file:
            self.proc = subprocess.Popen(
                [*self.prefix, self.args.eddy, "serve", "--listen", f"{self.address}:0",
                 # A host of its own (netns.py) on a bridge only the harness reaches.
                 *(["--anonymous-control-plane"] if self.prefix else []),
                 "--brokers", self.brokers,
                 "--data-dir", self.data, "--session-timeout", f"{self.args.session_timeout}s"],
                stdout=subprocess.PIPE, stderr=log_file, text=True,
                env={**os.environ, "RUST_LOG": "info,librdkafka=warn,rdkafka=warn", **self.env})
        line = first_line(self.proc, 60, "control plane listening on ")
        self.server = line.split("control plane listening on ", 1)[1]
        log(f"daemon {self.index} serving at {self.server} (pid {self.proc.pid})")

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def run_eddy(self, *argv):
        return subprocess.run([self.args.eddy, *argv, "--server", self.server],
                              capture_output=True, text=True)

    def eddy(self, *argv):
        """stdout of `eddy ARGV`; the harness stops if it fails."""
        result = self.run_eddy(*argv)
        if result.returncode != 0:
            raise SystemExit(f"eddy {' '.join(argv)} failed: {result.stderr.strip()}")
        return result.stdout

    def eddy_maybe(self, *argv):
        """stdout of `eddy ARGV`, or None (the error logged) if it failed."""
        result = self.run_eddy(*argv)
        if result.returncode != 0:
            log(f"eddy {' '.join(argv)}: {result.stderr.strip()}")
            return None
        return result.stdout


class Workload:
    """The input records and what the output must be."""

    def __init__(self, kind, records, seed, keys=300):
        self.kind = kind
        rng = random.Random(seed)
        if kind == "uppercase":
            self.inputs = [(f"k{i % 1000}", f"record-{i:07d}") for i in range(records)]
        else:
            # Words of `keys` distinct keys: the first lines name every one
            # (four per line), the rest are drawn at random.
            vocabulary = [f"w{n:03d}" for n in range(keys)]
            naming = [" ".join(vocabulary[i:i + 4]) for i in range(0, keys, 4)]
            self.inputs = [(None, line) for line in naming[:records]]
            self.inputs += [(None, " ".join(rng.choice(vocabulary) for _ in range(4)))
                            for _ in range(records - len(self.inputs))]
            self.reference = Counter(w for _, line in self.inputs for w in line.split())

    def modules(self, plugins):
        names = ["uppercase"] if self.kind == "uppercase" else ["split-words", "count"]
        return [os.path.join(plugins, f"{n.replace('-', '_')}.wasm") for n in names]

    def check(self, outputs):
        """(lost, duplicated, detail) for the outputs in log order."""
        if self.kind == "uppercase":
            seen = Counter(value for _, value in outputs)
            expected = [value.upper() for _, value in self.inputs]
            lost = sum(1 for v in expected if v not in seen)
            duplicated = sum(n - 1 for n in seen.values() if n > 1)
            unexpected = len(set(seen) - set(expected))
            return lost, duplicated, f"{unexpected} unexpected"
        # Word count: each word's counts, in its partition's order.
        counts = defaultdict(list)
        for key, value in outputs:
            counts[key].append(int(value))
        duplicated = lost = 0
        for word, n in self.reference.items():
            seq = counts.get(word, [])
            duplicated += len(seq) - len(set(seq))
            if not seq or max(seq) != n:
                lost += 1
        return lost, duplicated, f"{len(counts)} words"


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = tempfile.mkdtemp(prefix="eddy-crash-")
        self.broker = None
        self.run_id = f"crash-{args.seed}-{int(time.time())}"
        self.input, self.output = f"{self.run_id}-in", f"{self.run_id}-out"
        self.pipeline = self.run_id
        self.workload = Workload(args.pipeline, args.records, args.seed, args.keys)
        self.daemons = []
        self.nodes = {}
        self.network = None
        self.fed = 0
        self.feed_error = None

    # --- the broker and topics --------------------------------------------

    def start_broker(self):
        if self.args.bootstrap:
            return self.args.bootstrap
        if self.args.broker == "kafka" and self.args.brokers > 1:
            return self.start_cluster()
        if self.args.broker == "kafka":
            # The script and its JVM in a session of their own, stopped together.
            script = os.path.join(ROOT, "tests", "kafka", "kafka.sh")
            data = os.path.join(self.work, "kafka")
            prefix, host = [], "127.0.0.1"
            if self.args.scenario == "partition":
                # Broker and daemons as hosts of their own (see netns.py).
                self.network = Network()
                host = self.network.add_host("kafka")
                prefix = self.network.run_in("kafka")
            self.broker = subprocess.Popen([*prefix, "bash", script, "--port", "0", "--host", host,
                                            "--data", data],
                                           stdout=subprocess.PIPE, text=True,
                                           start_new_session=True)
            bootstrap = first_line(self.broker, 180, ":")
            log(f"Apache Kafka at {bootstrap} (log {data}/kafka.log)")
            return bootstrap
        self.broker = subprocess.Popen([self.args.eddy, "dev-broker"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
        bootstrap = first_line(self.broker, 30, ":")
        log(f"eddy dev-broker at {bootstrap} (pid {self.broker.pid})")
        return bootstrap

    def start_cluster(self):
        """Apache Kafka as --brokers KRaft nodes, each started by
        tests/kafka/kafka.sh --node I so one can be killed and restarted."""
        self.kafka_data = os.path.join(self.work, "kafka")
        plan = subprocess.run(["bash", self.kafka_script(), "--brokers", str(self.args.brokers),
                               "--port", "0", "--data", self.kafka_data, "--plan"],
                              capture_output=True, text=True, check=True)
        bootstrap = plan.stdout.strip()
        for node in range(1, self.args.brokers + 1):
            self.nodes[node] = self.start_node(node, wait=False)
        for node, proc in self.nodes.items():
            first_line(proc, 180, ":")
        log(f"Apache Kafka, {self.args.brokers} nodes, at {bootstrap} (logs {self.kafka_data})")
        return bootstrap

    def kafka_script(self):
        return os.path.join(ROOT, "tests", "kafka", "kafka.sh")

    def start_node(self, node, wait=True):
        proc = subprocess.Popen(["bash", self.kafka_script(), "--data", self.kafka_data,
                                 "--node", str(node)],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        if wait:
            first_line(proc, 180, ":")
        return proc

    def node_pid(self, node):
        with open(os.path.join(self.kafka_data, f"node-{node}", "pid")) as f:
            return int(f.read().strip())

    def stop_node(self, node, sig):
        """Sends `sig` to node's JVM and waits for its script to end."""
        os.kill(self.node_pid(node), sig)
        self.nodes[node].wait(120)

    def leader(self, topic, partition=0):
        md = AdminClient({"bootstrap.servers": self.brokers}).list_topics(topic, timeout=10)
        found = md.topics.get(topic)
        if found is None or partition not in found.partitions:
            return -1  # not created yet
        return found.partitions[partition].leader

    def fully_replicated(self):
        """Whether every partition of every topic has all its replicas in sync."""
        md = AdminClient({"bootstrap.servers": self.brokers}).list_topics(timeout=10)
        return all(len(p.isrs) == len(p.replicas) and p.leader >= 0
                   for t in md.topics.values() for p in t.partitions.values())

    def create_topics(self):
        admin = AdminClient({"bootstrap.servers": self.brokers})
        replicas = min(self.args.brokers, 3) if self.args.broker == "kafka" else 1
        topics = [NewTopic(t, self.args.partitions, replicas) for t in (self.input, self.output)]
        for topic, future in admin.create_topics(topics).items():
            future.result(30)

    # --- input and progress ------------------------------------------------

    def feed(self):
        """Produces the inputs over about --feed-seconds, in order."""
        producer = Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True,
                             "linger.ms": 5})
        inputs = self.workload.inputs
        chunk = max(1, len(inputs) // max(1, int(self.args.feed_seconds * 20)))
        started = time.monotonic()
        try:
            for start in range(0, len(inputs), chunk):
                for key, value in inputs[start:start + chunk]:
                    producer.produce(self.input, key=key, value=value)
                producer.flush(30)
                self.fed = min(len(inputs), start + chunk)
                due = started + self.args.feed_seconds * self.fed / len(inputs)
                time.sleep(max(0.0, due - time.monotonic()))
        except Exception as e:  # reported by the main thread
            self.feed_error = e

    def committed(self):
        """Inputs the pipeline's first step committed (its consumer group)."""
        return sum(self.committed_per_partition().values())

    def committed_per_partition(self, group=None, topic=None, partitions=None):
        """The committed input offset per partition of the first step (or
        of `group` on `topic`; of `partitions`, all if None); a commit is a
        transaction's, so an offset moving means output committed. (Kafka
        answers a partition with a transaction open on its offset only
        once that transaction ends, so a dead daemon's open transaction
        holds up a look that includes its partitions.)"""
        group = group or f"eddy.{self.pipeline}"
        if not hasattr(self, "_offsets"):
            self._offsets = {}
        if group not in self._offsets:
            # One client per group, kept: a new one per look would cost a
            # connection.
            self._offsets[group] = Consumer({"bootstrap.servers": self.brokers,
                                             "group.id": group})
        wanted = range(self.args.partitions) if partitions is None else partitions
        parts = [TopicPartition(topic or self.input, p) for p in wanted]
        if partitions is not None:
            # A look at some partitions: no last-seen fallback.
            return {tp.partition: max(tp.offset, 0)
                    for tp in self._offsets[group].committed(parts, timeout=10)}
        if not hasattr(self, "_last"):
            self._last = {}
        try:
            self._last[group] = {tp.partition: max(tp.offset, 0)
                                 for tp in self._offsets[group].committed(parts, timeout=10)}
        except KafkaException as e:
            # The group's coordinator may be the broker just killed: what
            # was seen last stands until it answers again.
            log(f"reading the committed offsets failed ({e}); using the last seen")
            if group not in self._last:
                raise
        return dict(self._last[group])

    def read_output(self, want):
        """Every committed output record, read with read_committed."""
        consumer = Consumer({"bootstrap.servers": self.brokers, "group.id": f"{self.run_id}-reader",
                             "isolation.level": "read_committed", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        consumer.assign([TopicPartition(self.output, p, 0) for p in range(self.args.partitions)])
        out, eof, quiet_until = [], set(), None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(eof) == self.args.partitions and len(out) >= want:
                    quiet_until = quiet_until or time.monotonic() + 3
                    if time.monotonic() > quiet_until:
                        break
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    eof.add(msg.partition())
                    continue
                raise SystemExit(f"reading the output failed: {msg.error()}")
            eof.discard(msg.partition())
            quiet_until = None
            out.append(((msg.key() or b"").decode(), (msg.value() or b"").decode()))
        consumer.close()
        return out

    # --- daemons -----------------------------------------------------------

    def add_daemon(self, env=None):
        index = len(self.daemons)
        host = None
        if self.network:
            address = self.network.add_host(f"d{index}")
            host = (self.network.run_in(f"d{index}"), address)
        daemon = Daemon(self.args, self.work, index, self.brokers, host, env)
        daemon.start()
        self.daemons.append(daemon)
        return daemon

    def deploy(self, daemon):
        argv = ["pipeline", "create", self.pipeline, "--input", self.input, "--output", self.output,
                "--guarantee", self.args.guarantee, "--max-batch", str(self.args.max_batch)]
        if self.args.commit_interval:
            argv += ["--commit-interval", self.args.commit_interval]
        if self.args.standby_replicas:
            argv += ["--standby-replicas", str(self.args.standby_replicas)]
        for module in self.workload.modules(self.args.plugins):
            argv += ["--module", module]
        # A daemon on a cluster that just started may not have read the
        # registry yet: it answers UNAVAILABLE and keeps trying.
        wait_for("the pipeline deployed", 120, lambda: daemon.eddy_maybe(*argv) is not None, 1)

    def two_daemons_running(self, second_env=None):
        """Two daemons, the pipeline deployed through the first, once each
        runs tasks (the second, started with `second_env` in its
        environment, learns of the pipeline from the registry)."""
        daemons = self.add_daemon(), self.add_daemon(second_env)
        self.deploy(daemons[0])
        wait_for("both daemons running tasks", 120,
                 lambda: all(self.owned_partitions(d, maybe=True) for d in daemons), 0.5)
        return daemons

    def kill_mid_stream(self, daemon, kills):
        """Waits for progress, then a random moment, then SIGKILLs `daemon`
        and checks the kill landed mid-stream; the progress at the kill."""
        before = self.committed()
        total = len(self.workload.inputs)
        if before >= total:
            raise SystemExit(f"every input was processed before kill {kills}: feed the input "
                             f"for longer (--feed-seconds) or kill fewer times (--kills)")
        at = sum(self.mid_stream("a kill").values())
        daemon.kill()
        if not 0 < at < total:
            raise SystemExit(f"kill {kills} did not land mid-stream: {at} of {total} committed")
        log(f"kill {kills}: SIGKILL daemon {daemon.index} with {at}/{total} inputs committed")
        return at

    def mid_stream(self, fault):
        """Waits for progress, then a random moment before `fault`; the
        committed input offset per partition at that moment."""
        before = self.committed()
        wait_for(f"progress before {fault}", 180, lambda: self.committed() > before)
        time.sleep(self.rng.uniform(0.1, self.args.max_kill_delay))
        return self.committed_per_partition()

    def recovered(self, at, killed_at):
        """Seconds from a kill until the committed progress passes `at`."""
        wait_for("progress after a restart", 300, lambda: self.committed() > at)
        return time.monotonic() - killed_at

    # --- scenarios ---------------------------------------------------------

    def scenario_kill(self):
        daemon = self.add_daemon()
        self.deploy(daemon)
        recoveries = []
        for k in range(1, self.args.kills + 1):
            at = self.kill_mid_stream(daemon, k)
            killed_at = time.monotonic()
            daemon.start()
            recoveries.append(self.recovered(at, killed_at))
        return {"kills": self.args.kills, "recoveries": recoveries}

    def owned(self, daemon):
        """How many input partitions of the first step `daemon` runs now."""
        return len(self.owned_partitions(daemon))

    def owned_partitions(self, daemon, maybe=False, step=0):
        """The input partitions of `step` `daemon` runs now; with `maybe`,
        none when the daemon cannot be asked."""
        argv = ("pipeline", "get", self.pipeline, "-o", "json")
        answer = daemon.eddy_maybe(*argv) if maybe else daemon.eddy(*argv)
        if answer is None:
            return []
        status = json.loads(answer)
        return sorted(p.get("partition", 0) for p in status["partitions"]
                      if p["step"] == step and p["assigned"])

    def scenario_failover(self):
        """Two daemons; one is SIGKILLed mid-stream and restarted at once.
        With static group membership its partitions wait for it (the other
        daemon keeps its own), so the stall is the restart's own cost: from
        the new process's start to the first transaction committed on each
        of its partitions."""
        first, victim = self.two_daemons_running()
        total = len(self.workload.inputs)
        firsts, alls, moved = [], [], []
        for k in range(1, self.args.kills + 1):
            parts = self.owned_partitions(victim)
            at = self.mid_stream("a kill")
            victim.kill()
            if sum(at.values()) >= total:
                raise SystemExit(f"every input was processed before kill {k}: feed the input "
                                 f"for longer (--feed-seconds) or kill fewer times (--kills)")
            log(f"kill {k}: SIGKILL daemon {victim.index} (partitions {parts}) with "
                f"{sum(at.values())}/{total} inputs committed")
            restarted_at = time.monotonic()
            victim.start()
            pending, first_at = set(parts), None
            def progressed():
                nonlocal first_at
                now = self.committed_per_partition()
                done = {p for p in pending if now[p] > at[p]}
                if done and first_at is None:
                    first_at = time.monotonic()
                pending.difference_update(done)
                return not pending
            wait_for("the restarted daemon's partitions to commit again", 300, progressed, 0.05)
            firsts.append(first_at - restarted_at)
            alls.append(time.monotonic() - restarted_at)
            now_owned = self.owned_partitions(victim)
            moved.append(now_owned != parts)
            log(f"kill {k}: first committed output {firsts[-1]:.2f}s after the restart, on every "
                f"partition of the restarted daemon after {alls[-1]:.2f}s; its partitions "
                f"{'moved to ' + str(now_owned) if moved[-1] else 'came back unchanged'}")
        return {"kills": self.args.kills, "recoveries": firsts,
                "restart_to_first_output_s": [round(s, 2) for s in firsts],
                "restart_to_all_partitions_s": [round(s, 2) for s in alls],
                "partitions_moved": sum(moved)}

    def scenario_flap(self):
        """A flapping daemon: two daemons, one SIGKILLed --kills times and
        restarted after a random outage of up to twice the session timeout.
        A restart within the session must cost the other daemon no
        rebalance (static membership); a longer outage moves the partitions
        and back. Nothing may be lost or doubled throughout."""
        kept, flapper = self.two_daemons_running()
        total, session = len(self.workload.inputs), self.args.session_timeout
        flaps = []
        for k in range(1, self.args.kills + 1):
            at = sum(self.mid_stream("a flap").values())
            if at >= total:
                raise SystemExit(f"every input was processed before flap {k}: feed for longer")
            revoked = revocations(kept)
            own = self.owned_partitions(kept)
            before = self.committed_per_partition(partitions=own)
            outage = self.rng.uniform(0, 2 * session)
            flapper.kill()
            killed_at = time.monotonic()
            # The other daemon's own partitions go on while this one is down.
            wait_for(f"daemon {kept.index} committing on its own partitions", 120,
                     lambda: any(n > before[p] for p, n in
                                 self.committed_per_partition(partitions=own).items()), 0.2)
            kept_going = time.monotonic() - killed_at
            time.sleep(max(0.0, killed_at + outage - time.monotonic()))  # the outage is the fault
            flapper.start()
            wait_for(f"daemon {flapper.index} running partitions again", 300,
                     lambda: self.owned_partitions(flapper, maybe=True), 0.5)
            recovered = self.recovered(at, killed_at)
            rebalanced = revocations(kept) - revoked
            log(f"flap {k}: down {outage:.1f}s (session {session}s): daemon {kept.index} "
                f"committed on its own partitions {kept_going:.1f}s after the kill and saw "
                f"{rebalanced} revocations; every partition committed {recovered:.1f}s after it")
            # Well within the session the group must not notice the restart.
            if outage + 3 < session and rebalanced:
                raise SystemExit(f"a restart after {outage:.1f}s, within the {session}s session, "
                                 f"cost daemon {kept.index} {rebalanced} revocations")
            flaps.append({"outage_s": round(outage, 1), "revocations": rebalanced,
                          "kept_committing_s": round(kept_going, 1),
                          "stall_s": round(recovered, 1)})
        return {"kills": self.args.kills, "recoveries": [f["stall_s"] for f in flaps],
                "flaps": flaps}

    def scenario_zombie(self):
        """A daemon stalled past its session timeout (SIGSTOP) loses its
        partitions to the other; when it wakes (SIGCONT) its producers are
        fenced, so nothing it wrote late becomes visible."""
        if not self.args.commit_interval:
            # Long transactions: the stalled daemon almost surely holds an
            # open one, which must never become visible.
            self.args.commit_interval = "2s"
        first, second = self.two_daemons_running()
        before = self.committed()
        wait_for("progress before the stall", 120, lambda: self.committed() > before)
        time.sleep(self.rng.uniform(0.1, self.args.max_kill_delay))
        at = self.committed()
        second.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        log(f"SIGSTOP daemon {second.index} with {at}/{len(self.workload.inputs)} inputs committed")
        wait_for("the other daemon to take every partition", 120,
                 lambda: self.owned(first) == self.args.partitions, 0.5)
        moved = time.monotonic() - stopped_at
        recovered = self.recovered(at, stopped_at)
        time.sleep(self.rng.uniform(0.5, 2.0))
        logged = os.path.getsize(second.log_path)
        second.signal(signal.SIGCONT)
        log(f"SIGCONT daemon {second.index} after {time.monotonic() - stopped_at:.1f}s")
        wait_for("the woken daemon to rejoin the group", 120,
                 lambda: second.proc.poll() is None and self.owned(second) > 0, 0.5)
        def since_woken():
            with open(second.log_path) as f:
                f.seek(logged)
                return f.read()
        wait_for("the woken daemon's tasks to stop", 60,
                 lambda: "partitions revoked" in since_woken(), 0.5)
        fenced = "fenced" in since_woken().lower()
        return {"kills": 0, "recoveries": [recovered], "partitions_moved_s": round(moved, 1),
                "zombie_fenced": fenced}

    def scenario_scale(self):
        """One daemon, then a second and a third join mid-stream; then one
        of the three is killed."""
        daemons = [self.add_daemon()]
        self.deploy(daemons[0])
        for _ in range(2):
            before = self.committed()
            wait_for("progress before a daemon joins", 120, lambda: self.committed() > before)
            joined = self.add_daemon()
            daemons.append(joined)
            wait_for(f"daemon {joined.index} to take partitions", 120,
                     lambda: self.owned(joined) > 0, 0.5)
            log(f"daemon {joined.index} joined: partitions "
                f"{[self.owned(d) for d in daemons]}")
        victim = self.rng.choice(daemons)
        at = self.kill_mid_stream(victim, 1)
        killed_at = time.monotonic()
        survivors = [d for d in daemons if d is not victim]
        wait_for("the survivors to take every partition", 120,
                 lambda: sum(self.owned(d) for d in survivors) == self.args.partitions, 0.5)
        moved = time.monotonic() - killed_at
        return {"kills": 1, "recoveries": [self.recovered(at, killed_at)], "daemons": 3,
                "partitions_moved_s": round(moved, 1)}

    def scenario_partition(self):
        """Two daemons, each a host of its own beside the broker's: one's
        link is taken down mid-stream for --cut-seconds (more than its
        session timeout), then brought back. The other daemon must take
        every partition and carry on from the changelog; the cut one's
        writes must be fenced; on return it must rejoin without fencing the
        new owner back."""
        if self.network is None:
            raise SystemExit("the partition scenario needs --broker kafka (one broker)")
        if self.args.cut_seconds <= self.args.session_timeout:
            raise SystemExit("--cut-seconds must exceed --session-timeout")
        kept, cut = self.two_daemons_running()
        moved = self.owned_partitions(cut)
        at = sum(self.mid_stream("the cut").values())
        if at >= len(self.workload.inputs):
            raise SystemExit("every input was processed before the cut: feed for longer")
        host = f"d{cut.index}"
        self.network.cut(host)
        cut_at = time.monotonic()
        log(f"link of daemon {cut.index} down with {at} inputs committed; "
            f"it ran partitions {moved}")
        wait_for(f"daemon {kept.index} to own every partition", 120,
                 lambda: self.owned(kept) == self.args.partitions, 0.5)
        taken = time.monotonic() - cut_at
        stall = self.recovered(at, cut_at)
        log(f"daemon {kept.index} took the partitions {taken:.1f}s after the cut; "
            f"committed progress stalled {stall:.1f}s")
        # The fault lasts --cut-seconds: holding the link down is the test.
        time.sleep(max(0.0, cut_at + self.args.cut_seconds - time.monotonic()))
        kept_fenced = fenced_lines(kept)
        self.network.heal(host)
        healed_at = time.monotonic()
        log(f"link of daemon {cut.index} up after {healed_at - cut_at:.0f}s")
        wait_for(f"daemon {cut.index} to run partitions again", 180,
                 lambda: self.owned_partitions(cut, maybe=True), 1)
        rejoined = time.monotonic() - healed_at
        log(f"daemon {cut.index} rejoined {rejoined:.1f}s after the link came back: partitions "
            f"{self.owned_partitions(kept)} and {self.owned_partitions(cut)}")
        before = self.committed()
        if before < len(self.workload.inputs):
            wait_for("progress after the return", 180, lambda: self.committed() > before)
        fenced_back = fenced_lines(kept)[len(kept_fenced):]
        if fenced_back:
            raise SystemExit(f"the returning daemon fenced daemon {kept.index}: {fenced_back[:3]}")
        cut_fenced = fenced_lines(cut)
        log(f"daemon {cut.index} logged {len(cut_fenced)} fencings of its own writes after the "
            f"cut, daemon {kept.index} none after the return")
        return {"kills": 1, "recoveries": [stall], "partitions_taken_s": round(taken, 1),
                "rejoined_s": round(rejoined, 1), "cut_daemon_fenced": len(cut_fenced),
                "moved_partitions": moved}

    def scenario_clock(self):
        """Two daemons; the second's wall clock jumps mid-stream: forward by
        --clock-jump seconds, back by twice that, then to the true time,
        each held for --clock-hold seconds.
        Its monotonic clock does not move, as with a real step of the
        clock. After each jump every partition it runs must commit again
        (the seconds that took are printed): the timestamps it writes must
        stay ones the broker accepts, and nothing may wait on the jumped
        clock. The run's checks then find nothing lost or doubled and the
        state exact."""
        shift_file = os.path.join(self.work, "clock-shift")
        with open(shift_file, "w") as f:
            f.write("0\n")
        env = {"LD_PRELOAD": self.build_clockshift(), "CLOCKSHIFT_FILE": shift_file}
        first, jumper = self.two_daemons_running(env)
        jump, total, stalls = self.args.clock_jump, len(self.workload.inputs), []
        for shift in (jump, -jump, 0):
            parts = self.owned_partitions(jumper)
            at = self.mid_stream(f"the jump to {shift:+d}s")
            if sum(at.values()) >= total:
                raise SystemExit("every input was processed before a jump: feed for longer "
                                 "(--feed-seconds)")
            with open(shift_file + ".new", "w") as f:
                f.write(f"{shift}\n")
            os.replace(shift_file + ".new", shift_file)
            jumped_at = time.monotonic()
            log(f"daemon {jumper.index}'s clock now {shift:+d}s from true (partitions {parts}) "
                f"with {sum(at.values())}/{total} inputs committed")
            wait_for(f"every partition of daemon {jumper.index} to commit after the jump", 120,
                     lambda: all(n > at[p] for p, n in self.committed_per_partition().items()
                                 if p in parts), 0.2)
            stalls.append(time.monotonic() - jumped_at)
            log(f"committed on partitions {parts} again {stalls[-1]:.1f}s after the jump")
            if shift > 0:
                self.registry_write_through(jumper, first)
            # The jumped clock stays for --clock-hold: running on it is the test.
            time.sleep(max(0.0, jumped_at + self.args.clock_hold - time.monotonic()))
        return {"kills": 0, "clock_s": [jump, -jump, 0],
                "stall_after_jump_s": [round(s, 1) for s in stalls]}

    def registry_write_through(self, writer, reader):
        """Deploys a second pipeline through `writer` and deletes it again:
        registry records (its module's chunks, its spec, its deletion)
        written with `writer`'s clock, each of which `reader` must see."""
        name, output = f"{self.pipeline}-probe", f"{self.run_id}-probe"
        admin = AdminClient({"bootstrap.servers": self.brokers})
        admin.create_topics([NewTopic(output, 1, 1)])[output].result(30)
        module = os.path.join(self.args.plugins, "uppercase.wasm")
        writer.eddy("pipeline", "create", name, "--input", self.input, "--output", output,
                    "--module", module)

        def listed():
            answer = json.loads(reader.eddy("pipeline", "list", "-o", "json"))
            return {p["name"] for p in answer}

        wait_for(f"daemon {reader.index} to list the pipeline created through daemon "
                 f"{writer.index}", 60, lambda: name in listed(), 0.5)
        writer.eddy("pipeline", "delete", name)
        wait_for(f"daemon {reader.index} to drop the pipeline deleted through daemon "
                 f"{writer.index}", 60, lambda: name not in listed(), 0.5)
        log(f"a pipeline created and deleted through daemon {writer.index} came and went on "
            f"daemon {reader.index}")

    def build_clockshift(self):
        """Compiles clockshift.c into the work directory; its path."""
        library = os.path.join(self.work, "clockshift.so")
        source = os.path.join(ROOT, "tests", "harness", "clockshift.c")
        built = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"could not compile {source} (the clock scenario needs a C "
                             f"compiler, cc): {built.stderr.strip()}")
        return library

    def scenario_standby(self):
        """Two daemons running word count; once the stateful step's state
        holds every key, one is SIGKILLed mid-stream and not restarted. The
        other takes its partitions and restores their state: from the
        changelog's start, or with --standby-replicas 1 from its warm copy.
        Printed: the changelog records it replayed and the seconds from the
        kill until the stateful step committed on every moved partition."""
        if self.args.pipeline != "word-count":
            raise SystemExit("the standby scenario needs --pipeline word-count")
        kept, victim = self.two_daemons_running()
        stateful = (f"eddy.{self.pipeline}.step-1", f"eddy.{self.pipeline}.step-1.repartition")
        moved = self.owned_partitions(victim, step=1)
        naming = -(-self.args.keys // 4)
        wait_for("every key in the state", 600,
                 lambda: self.committed() >= naming + len(self.workload.inputs) // 10, 1)
        at = self.committed_per_partition(*stateful)
        killed_at, killed_wall = time.monotonic(), time.time()
        victim.kill()
        log(f"SIGKILL daemon {victim.index} (no restart); it ran step-1 partitions {moved}")

        def moved_committed():
            now = self.committed_per_partition(*stateful)
            return all(now[p] > at[p] for p in moved)

        wait_for("the moved partitions to commit", 600, moved_committed, 0.2)
        serving = time.monotonic() - killed_at
        replayed = restored_after(kept, killed_wall, "step-1")
        log(f"the moved partitions committed {serving:.1f}s after the kill; "
            f"{sum(replayed)} changelog records replayed ({replayed})")
        # A warm copy lags its changelog by what was in flight at the kill,
        # never by a share of the state.
        if self.args.standby_replicas and sum(replayed) > self.args.keys // 10:
            raise SystemExit(f"with standby replicas the restore replayed {sum(replayed)} "
                             f"records, as if no copy were warm")
        return {"kills": 1, "recoveries": [serving], "keys": self.args.keys,
                "standby_replicas": self.args.standby_replicas,
                "replayed": sum(replayed), "moved_partitions": moved}

    def scenario_brokers(self):
        """Exactly-once through broker faults: each of the leaders of the
        pipeline's topics SIGKILLed mid-stream, then a rolling restart."""
        if self.args.broker != "kafka" or self.args.brokers < 3:
            raise SystemExit("the brokers scenario needs --broker kafka --brokers 3")
        daemon = self.add_daemon()
        self.deploy(daemon)
        prefix = f"eddy.{self.pipeline}"
        last = "step-1" if self.args.pipeline == "word-count" else "step-0"
        topics = {"input": self.input, "output": self.output,
                  f"{last} changelog": f"{prefix}.{last}.changelog"}
        if self.args.pipeline == "word-count":
            topics["repartition"] = f"{prefix}.step-1.repartition"
        wait_for("the pipeline's topics", 120,
                 lambda: all(self.leader(t) >= 0 for t in topics.values()), 0.5)
        faults = []

        def fault(name, node, sig):
            at = sum(self.mid_stream(name).values())
            if at >= len(self.workload.inputs):
                raise SystemExit(f"every input was processed before {name}: feed the input "
                                 "for longer (--feed-seconds)")
            hit = time.monotonic()
            self.stop_node(node, sig)
            log(f"{name}: {signal.Signals(sig).name} broker {node} with {at} inputs committed")
            # Restarted once progress resumed on the two brokers left.
            stall = self.recovered(at, hit)
            self.nodes[node] = self.start_node(node)
            wait_for(f"broker {node} back in sync", 300, self.fully_replicated, 1)
            log(f"{name}: committed progress stalled {stall:.1f}s")
            faults.append({"fault": name, "broker": node, "stall_s": round(stall, 1)})

        killed = list(topics.items())
        if self.args.short:
            killed = [self.rng.choice(killed)]
        for what, topic in killed:
            node = self.leader(topic)
            fault(f"SIGKILL the leader of {what} partition 0", node, signal.SIGKILL)
        if not self.args.short:
            for node in sorted(self.nodes):
                fault(f"restart broker {node}", node, signal.SIGTERM)
        faults.append(self.refuse_writes(daemon, [t for t in topics.values() if t != self.input]))
        return {"kills": len(faults), "recoveries": [f["stall_s"] for f in faults],
                "brokers": self.args.brokers, "faults": faults}

    def refuse_writes(self, daemon, topics):
        """One broker down and min.insync.replicas=3 on `topics`: every write
        of the pipeline answered NOT_ENOUGH_REPLICAS for --refuse-seconds.
        The pipeline must say why in its status, commit nothing meanwhile,
        and resume once the setting is back."""
        from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                           ResourceType)
        def set_min_isr(value):
            # A client of its own each time: one made before the kill may
            # send the request to the dead broker.
            admin = AdminClient({"bootstrap.servers": self.brokers})
            op = AlterConfigOpType.SET if value else AlterConfigOpType.DELETE
            resources = [ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
                ConfigEntry("min.insync.replicas", str(value or ""),
                            incremental_operation=op)]) for t in topics]
            for future in admin.incremental_alter_configs(resources, request_timeout=60).values():
                future.result(90)

        node = max(self.nodes)
        self.stop_node(node, signal.SIGKILL)
        wait_for(f"broker {node} out of the in-sync replicas", 120,
                 lambda: not self.fully_replicated(), 1)
        set_min_isr(3)
        refused_at = time.monotonic()
        log(f"writes refused: broker {node} down, min.insync.replicas=3 on {len(topics)} topics")

        seen = []

        def why():
            """The first partition error that names the refusal; others
            (a restore meeting a leader change) are transient."""
            status = json.loads(daemon.eddy_maybe("pipeline", "get", self.pipeline, "-o", "json")
                                or "{}")
            errors = [p.get("lastError", p.get("last_error", ""))
                      for p in status.get("partitions", [])]
            seen[:] = [e for e in errors if e]
            return next((e for e in seen
                         if "min.insync.replicas" in e and "NOT_ENOUGH_REPLICAS" in e), None)

        try:
            reason = wait_for("the status to say why writes are refused", 120, why, 1)
        except SystemExit:
            raise SystemExit("the status does not say that Kafka refuses writes for want of "
                             f"in-sync replicas; it says: {seen}")
        shown = time.monotonic() - refused_at
        log(f"{shown:.0f}s after the refusal the pipeline's status says: {reason[:300]}")
        # A transaction whose records were acknowledged before the brokers
        # applied the setting may still commit just after: its end needs no
        # write to the refused topics (the markers follow when they can).
        # From then on nothing may commit.
        time.sleep(max(0.0, refused_at + IN_FLIGHT_GRACE_S - time.monotonic()))
        held = self.committed()
        remaining = refused_at + self.args.refuse_seconds - time.monotonic()
        time.sleep(max(0.0, remaining))
        at = self.committed()
        if at != held:
            raise SystemExit(f"inputs were committed while every write was refused: {held} -> {at}")
        set_min_isr(None)
        restored = time.monotonic()
        log(f"min.insync.replicas restored after {restored - refused_at:.0f}s "
            f"with {at} inputs committed")
        stall = self.recovered(at, restored)
        self.nodes[node] = self.start_node(node)
        wait_for(f"broker {node} back in sync", 300, self.fully_replicated, 1)
        log(f"refused writes: committed progress resumed {stall:.1f}s after the setting was restored")
        return {"fault": f"NOT_ENOUGH_REPLICAS for {restored - refused_at:.0f}s", "broker": node,
                "stall_s": round(stall, 1), "status_shown_after_s": round(shown, 1)}

    def run(self):
        self.brokers = self.start_broker()
        self.create_topics()
        log(f"seed {self.args.seed}: {self.args.records} records through {self.args.pipeline} "
            f"({self.args.guarantee}), scenario {self.args.scenario}")
        feeder = threading.Thread(target=self.feed, daemon=True)
        started = time.monotonic()
        feeder.start()
        figures = getattr(self, f"scenario_{self.args.scenario}")()
        feeder.join()
        if self.feed_error:
            raise SystemExit(f"producing the input failed: {self.feed_error}")
        total = len(self.workload.inputs)
        wait_for("every input committed", 600, lambda: self.committed() == total, 0.5)
        elapsed = time.monotonic() - started
        # The last step may still be catching up on the repartition topic:
        # its state reaching the reference (or the deadline) says it is done.
        state_ok = self.check_state() if self.args.pipeline == "word-count" else None
        want = total if self.args.pipeline == "uppercase" else 0
        outputs = self.read_output(want)
        lost, duplicated, detail = self.workload.check(outputs)
        return self.report(figures, lost, duplicated, detail, state_ok, len(outputs), elapsed)

    def check_state(self):
        """Whether the pipeline's state (queried over gRPC) comes to equal
        the reference counts within a minute."""
        deadline = time.monotonic() + 60
        while True:
            wrong = self.state_differences()
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(1)
        if wrong:
            log(f"state differs from the reference for {len(wrong)} words, e.g. {sorted(wrong)[:3]}")
        return not wrong

    def state_differences(self):
        """The words whose count in the pipeline's state (queried over gRPC)
        is not the reference count."""
        daemon = next(d for d in self.daemons if d.proc and d.proc.poll() is None)
        state, after = {}, ""
        while True:
            # A partition moving in a rebalance answers UNAVAILABLE for a moment.
            page = wait_for("a state scan", 120,
                            lambda: daemon.eddy_maybe("state", "scan", self.pipeline, "--limit",
                                                      "10000", "--start-after", after, "-o",
                                                      "json"), 1)
            page = json.loads(page)
            entries = page["entries"]
            for e in entries:
                state[e["key"]] = int(e["value"])
            if len(entries) < 10000:
                break
            after = entries[-1]["key"]
        return {w for w in set(state) | set(self.workload.reference)
                if state.get(w) != self.workload.reference.get(w)}

    def report(self, figures, lost, duplicated, detail, state_ok, outputs, elapsed):
        recoveries = figures.get("recoveries", [])
        summary = {
            "scenario": self.args.scenario, "pipeline": self.args.pipeline,
            "guarantee": self.args.guarantee, "seed": self.args.seed,
            "records": len(self.workload.inputs), "outputs": outputs,
            "kills": figures.get("kills", 0), "lost": lost, "duplicated": duplicated,
            "state_equals_reference": state_ok,
            "recover_s_max": round(max(recoveries), 2) if recoveries else None,
            "recover_s_mean": round(sum(recoveries) / len(recoveries), 2) if recoveries else None,
            "elapsed_s": round(elapsed, 1), "detail": detail,
            **{k: v for k, v in figures.items() if k not in ("kills", "recoveries")},
        }
        print(json.dumps(summary))
        broken = lost > 0 or state_ok is False
        if self.args.guarantee == "exactly-once":
            broken = broken or duplicated > 0
        return 1 if broken else 0

    def close(self):
        for consumer in getattr(self, "_offsets", {}).values():
            consumer.close()
        for d in self.daemons:
            d.signal(signal.SIGCONT)
            d.kill()
        for proc in self.nodes.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if self.broker:
            if self.args.broker == "kafka":
                try:
                    os.killpg(self.broker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.broker.kill()
            self.broker.wait()
        if self.network:
            self.network.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--scenario", choices=["kill", "zombie", "scale", "failover", "flap", "brokers",
                                 "partition", "standby", "clock"], default="kill")
    parser.add_argument("--pipeline", choices=["uppercase", "word-count"], default="uppercase")
    parser.add_argument("--guarantee", choices=["exactly-once", "at-least-once"],
                        default="exactly-once")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--feed-seconds", type=float, default=60,
                        help="spread the input over this long, so kills land mid-stream")
    parser.add_argument("--max-batch", type=int, default=100)
    parser.add_argument("--commit-interval", help="e.g. 1s (default: the guarantee's; 2s for zombie)")
    parser.add_argument("--max-kill-delay", type=float, default=3.0,
                        help="a kill comes up to this long after progress is seen")
    parser.add_argument("--session-timeout", type=int, default=6)
    parser.add_argument("--broker", choices=["dev", "kafka"], default="dev",
                        help="eddy dev-broker, or Apache Kafka from tests/kafka/kafka.sh")
    parser.add_argument("--brokers", type=int, default=1,
                        help="with --broker kafka: a cluster of this many nodes (3 for brokers)")
    parser.add_argument("--keys", type=int, default=300,
                        help="word-count: distinct words, so the state holds this many keys")
    parser.add_argument("--standby-replicas", type=int, default=0,
                        help="deploy with this many standby replicas")
    parser.add_argument("--cut-seconds", type=float, default=20,
                        help="partition scenario: how long the daemon's link stays down")
    parser.add_argument("--short", action="store_true",
                        help="brokers scenario: one leader SIGKILLed (its topic chosen by the "
                             "seed) and no rolling restart before the refusal, as CI runs it")
    parser.add_argument("--refuse-seconds", type=float, default=90,
                        help="brokers scenario: how long writes are refused (NOT_ENOUGH_REPLICAS)")
    parser.add_argument("--clock-jump", type=int, default=7200,
                        help="clock scenario: seconds the daemon's clock jumps forward, then "
                             "back by twice that")
    parser.add_argument("--clock-hold", type=float, default=10,
                        help="clock scenario: seconds each jumped clock is kept")
    parser.add_argument("--bootstrap", help="an external Kafka instead of starting a broker")
    parser.add_argument("--eddy", default=os.path.join(target, "debug", "eddy"))
    parser.add_argument("--plugins", default=os.path.join(ROOT, "target", "plugins",
                                                          "wasm32-wasip2", "release"))
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    harness = Harness(args)
    try:
        status = harness.run()
    finally:
        harness.close()
    if status:
        log(f"the guarantee was broken; rerun with --seed {args.seed}; logs in {harness.work}")
    sys.exit(status)


if __name__ == "__main__":
    main()
