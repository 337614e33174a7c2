#!/usr/bin/env python3
"""eddy beside Kafka Streams, on one Apache Kafka broker (`just bench-streams`).

The same preloaded input, RECORDS keyed records of 100-200 bytes over 4
partitions (lines of a few words, for word count), through each system in
turn, the rounds interleaved:

  (a')  the native loop on eddy's own Kafka path (host/examples/
        native_uppercase.rs, `lean`): the ceiling of any upper-casing
        processor on eddy's client, no WebAssembly, no state
  (b)   eddy, the `uppercase` plugin
  (k)   Kafka Streams, `mapValues(v -> v.toUpperCase())`
        (bench/kafka-streams), -Xmx1g, two stream threads, the record cache
        at its default (10 MiB), the commit interval eddy uses (100 ms)
  and word count: eddy `split-words -> count`, Kafka Streams WordCountDemo;
  each at-least-once and exactly-once.

Both eddy and Kafka Streams get the same warm-up: one process runs over the
whole input, and the first WARMUP records (200,000) are not measured. The
measurement starts when the records committed reach WARMUP and ends when
every partition is committed to its end; records per CPU-second counts the
records committed in between over the processing process's CPU time (user +
sys, all threads) in between. Peak RSS is the process's high-water mark.
The native loop measures itself from its first record (it has no JIT or
caches to warm).

Prints figures; asserts nothing. Options: --records N (1,000,000),
--warmup N (200,000), --rounds N (3), --rows a,b,k (all), --jobs
uppercase,word-count, --guarantees at-least-once,exactly-once; BENCH_PROFILE
picks the eddy build (release; debug for a smoke run).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4


def log(message):
    print(message, flush=True)


def cpu_seconds(pid):
    """User + sys CPU of every thread process `pid` ran, ended ones too."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def wait_for(what, timeout, check, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def first_line(path, match, timeout=120, process=None):
    """The first line of file `path` containing `match`."""

    def check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode}) before `{match}`; see {path}")
        try:
            with open(path, errors="replace") as f:
                return next((line.strip() for line in f if match in line), None)
        except FileNotFoundError:
            return None

    return wait_for(f"`{match}` in {path}", timeout, check, interval=0.02)


def caught_up(committed, high, guarantee):
    """Whether an internal topic's partition is consumed to its end. Written
    in transactions, its last offset is a commit marker, which a consumer's
    committed position may or may not have passed yet."""
    slack = 1 if guarantee == "exactly-once" else 0
    return committed >= 0 and committed >= high - slack


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.processes = []
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        profile = os.environ.get("BENCH_PROFILE", "release")
        self.eddy = target / profile / "eddy"
        self.examples = target / profile / "examples"
        self.plugins = REPO / "target/plugins/wasm32-wasip2/release"
        self.results = {}  # row key -> list of (rate, wall_rate, rss)

    # -- processes ---------------------------------------------------------

    def spawn(self, name, argv, env=None):
        out = open(self.work / f"{name}.out", "w")
        err = open(self.work / f"{name}.log", "w")
        process = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        self.processes.append(process)
        return process

    def stop(self, process, timeout=60):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self):
        for process in reversed(self.processes):
            self.stop(process)

    def start_kafka(self):
        kafka = self.spawn(
            "kafka",
            [str(REPO / "tests/kafka/kafka.sh"), "--port", "0", "--data", str(self.work / "kafka"), "--heap", "1g"],
        )
        self.brokers = first_line(self.work / "kafka.out", ":", timeout=300, process=kafka)
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": self.brokers})

    def create_topics(self, names, partitions=PARTITIONS):
        from confluent_kafka.admin import NewTopic

        futures = self.admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for future in futures.values():
            future.result(60)

    def eddy_cli(self, *argv):
        return subprocess.run(
            [str(self.eddy), *argv],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "EDDY_SERVER": self.server},
        ).stdout

    def start_daemon(self):
        daemon = self.spawn(
            "serve",
            [str(self.eddy), "serve", "--brokers", self.brokers, "--data-dir", str(self.work / "eddy-data"),
             "--listen", "127.0.0.1:0"],
        )
        line = first_line(self.work / "serve.out", "control plane listening on", process=daemon)
        self.server = line.rsplit(" ", 1)[1]
        self.daemon = daemon
        for module in ("uppercase", "split_words", "count"):
            self.eddy_cli("module", "push", str(self.plugins / f"{module}.wasm"))

    # -- input ------------------------------------------------------------

    def preload(self):
        """RECORDS + WARMUP records of 100-200 bytes into `bench-in`: a unique
        number, then words, so word count has some repeated and many unique."""
        total = self.args.records + self.args.warmup
        pad = "the quick brown fox jumps over the lazy dog and keeps running far away "
        pad = (pad * 4)[:200]
        path = self.work / "input.txt"
        with open(path, "w") as f:
            for i in range(total):
                f.write(f"k{i}\trecord-{i:08d} {pad[:85 + (i * 37) % 100]}\n")
        self.create_topics(["bench-in"])
        with open(path) as f:
            subprocess.run(
                [str(self.eddy), "produce", "bench-in", "--brokers", self.brokers, "--key-separator", "\t"],
                stdin=f,
                check=True,
                stderr=subprocess.DEVNULL,
            )
        self.total = total

    # -- progress ---------------------------------------------------------

    def group_progress(self, group, guarantee):
        """Records group `group` committed on `bench-in`, and whether it is
        done: the input committed to its end, and every internal topic
        (Kafka Streams' repartition topics) committed to within a
        transaction marker of its end (see `caught_up`)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        future = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
        committed = future.result(10).topic_partitions or []
        total, done, seen = 0, True, set()
        for tp in committed:
            offset = max(tp.offset, 0)
            seen.add((tp.topic, tp.partition))
            if tp.topic == "bench-in":
                total += offset
                done = done and offset >= self.high_watermarks[tp.partition]
            else:
                done = done and caught_up(offset, self.watermark(tp.topic, tp.partition), guarantee)
        done = done and all(("bench-in", p) in seen for p in range(PARTITIONS))
        return total, done

    def watermark(self, topic, partition):
        from confluent_kafka import Consumer, TopicPartition

        if self.watermark_reader is None:
            self.watermark_reader = Consumer({"bootstrap.servers": self.brokers, "group.id": "bench-watermarks"})
        return self.watermark_reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]

    def measure(self, key, what, pid, progress):
        """Waits out the warm-up, then measures until the input is committed."""
        warmup = self.args.warmup
        deadline = time.monotonic() + 1800
        while True:
            committed, done = progress()
            if committed >= warmup or done:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: the warm-up did not finish")
            time.sleep(0.05)
        t0, cpu0, start = time.monotonic(), cpu_seconds(pid), committed
        while not done:
            time.sleep(0.05)
            committed, done = progress()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: did not finish ({committed} of {self.total} committed)")
        wall, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
        self.row(key, what, committed - start, wall, cpu, peak_rss_mib(pid))

    def row(self, key, what, records, wall, cpu, rss):
        rate = records / cpu if cpu > 0 else 0.0
        wall_rate = records / wall if wall > 0 else 0.0
        self.results.setdefault(key, (what, []))[1].append((rate, wall_rate, rss))
        log(f"  {what:<44} {records:>9} {wall:8.2f} {cpu:8.2f} {wall_rate:10.0f} {rate:10.0f} {rss:>8}")

    # -- rows -------------------------------------------------------------

    def native(self, round_):
        out = subprocess.run(
            [str(self.examples / "native_uppercase"), self.brokers, "bench-in", f"out-native-{round_}",
             f"bench-native-{round_}", str(self.total), "lean"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        fields = dict(zip(out[0::2], out[1::2]))
        self.row("a", "(a') native loop, eddy's Kafka path", int(fields["processed"]),
                 float(fields["wall_s"]), float(fields["cpu_s"]), int(fields["rss_mib"]))

    def eddy_row(self, job, guarantee, round_):
        name = f"{job}-{guarantee}-{round_}"
        output = f"out-eddy-{name}"
        self.create_topics([output])
        modules = {"uppercase": ["uppercase"], "word-count": ["split_words", "count"]}[job]
        argv = ["pipeline", "create", name, "--input", "bench-in", "--output", output, "--guarantee", guarantee]
        for module in modules:
            argv += ["--module", str(self.plugins / f"{module}.wasm")]
        self.eddy_cli(*argv)

        def progress():
            parts = json.loads(self.eddy_cli("pipeline", "get", name, "-o", "json"))["partitions"]
            first = [p for p in parts if p.get("step", 0) == 0]
            committed = sum(max(p["committed_offset"], 0) for p in first)
            done = len(parts) == PARTITIONS * len(modules) and all(
                p["committed_offset"] == p["high_watermark"] >= 0 if p.get("step", 0) == 0
                else caught_up(p["committed_offset"], p["high_watermark"], guarantee)
                for p in parts)
            return committed, done

        self.measure(f"b-{job}-{guarantee}", f"(b) eddy {job}, {guarantee}", self.daemon.pid, progress)
        self.eddy_cli("pipeline", "delete", name)

    def streams_row(self, job, guarantee, round_):
        app = f"ks-{job}-{guarantee}-{round_}"
        output = f"out-{app}"
        self.create_topics([output])
        streams = self.spawn(
            app,
            [str(REPO / "bench/kafka-streams/run.sh"), job, "--bootstrap", self.brokers, "--input", "bench-in",
             "--output", output, "--application-id", app, "--guarantee", guarantee, "--threads", "2",
             "--state-dir", str(self.work / "streams-state")],
            env={"JAVA_OPTS": "-Xmx1g"},
        )
        first_line(self.work / f"{app}.out", "state RUNNING", timeout=300, process=streams)
        self.measure(f"k-{job}-{guarantee}", f"(k) Kafka Streams {job}, {guarantee}", streams.pid,
                     lambda: self.group_progress(app, guarantee))
        self.stop(streams)

    # -- the run ----------------------------------------------------------

    def run(self):
        args = self.args
        self.start_kafka()
        self.preload()
        self.watermark_reader = None
        self.high_watermarks = [self.watermark("bench-in", p) for p in range(PARTITIONS)]
        self.start_daemon()
        log(f"eddy and Kafka Streams on Apache Kafka ({self.brokers}): {args.warmup} warm-up + "
            f"{args.records} measured records of 100-200 bytes, {PARTITIONS} partitions")
        log("  CPU: the processing process, all threads, user + sys; RSS: its peak (the daemon's over the whole run)")
        log(f"  {'what':<44} {'records':>9} {'wall s':>8} {'CPU s':>8} {'rec/s':>10} {'rec/CPU-s':>10} {'RSS MiB':>8}")
        for round_ in range(1, args.rounds + 1):
            log(f"  round {round_} of {args.rounds}")
            if "a" in args.rows:
                self.native(round_)
            for job in args.jobs:
                for guarantee in args.guarantees:
                    # eddy and Kafka Streams take turns going first.
                    order = ["b", "k"] if round_ % 2 else ["k", "b"]
                    for row in order:
                        if row not in args.rows:
                            continue
                        if row == "b":
                            self.eddy_row(job, guarantee, round_)
                        else:
                            self.streams_row(job, guarantee, round_)
        self.summary()

    def summary(self):
        log(f"  median of {self.args.rounds} rounds{'':<26} {'rec/s':>10} {'rec/CPU-s':>10} {'RSS MiB':>8}   ratio")
        medians = {}
        for key, (what, runs) in self.results.items():
            medians[key] = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            rss = max(r[2] for r in runs)
            ratios = []
            if key.startswith("b-") and ("k-" + key[2:]) in self.results:
                k = statistics.median(r[0] for r in self.results["k-" + key[2:]][1])
                ratios.append(f"{medians[key] / k:.2f} of (k)")
            if key.startswith("k-") and "a" in self.results and "uppercase" in key:
                a = statistics.median(r[0] for r in self.results["a"][1])
                ratios.append(f"(a') is {a / medians[key]:.2f} of this")
            log(f"  {what:<44} {wall:10.0f} {medians[key]:10.0f} {rss:>8}   {', '.join(ratios)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default="a,b,k", type=lambda s: s.split(","))
    parser.add_argument("--jobs", default="uppercase,word-count", type=lambda s: s.split(","))
    parser.add_argument("--guarantees", default="at-least-once,exactly-once", type=lambda s: s.split(","))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    bench = Bench(args, work)
    try:
        bench.run()
    finally:
        bench.close()
        if os.environ.get("BENCH_LOGS"):
            shutil.copytree(work, os.environ["BENCH_LOGS"], dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("kafka", "eddy-data", "streams-state", "input.txt"))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
