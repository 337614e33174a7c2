package dev.eddy.streams;

import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.streams.StreamsConfig;

/**
 * A job's command line: {@code JOB --bootstrap HOST:PORT --input TOPIC --output TOPIC
 * --application-id ID [--guarantee at-least-once|exactly-once] [--threads N]
 * [--commit-interval-ms MS] [--state-dir DIR] [--size-ms MS] [--grace-ms MS] [--gap-ms MS]}.
 */
record Options(
        String job,
        String bootstrap,
        String input,
        String output,
        String applicationId,
        String guarantee,
        int threads,
        long commitIntervalMs,
        String stateDir,
        long sizeMs,
        long graceMs,
        long gapMs) {

    static final String JOBS = "uppercase, word-count, tumbling-count or session-count";

    /** eddy's default commit interval (`pipeline create --commit-interval`), for both guarantees. */
    static final long EDDY_COMMIT_INTERVAL_MS = 100;

    static Options parse(String[] args) {
        if (args.length == 0 || args[0].startsWith("--")) {
            throw new IllegalArgumentException("the first argument is the job: " + JOBS);
        }
        Map<String, String> flags = new HashMap<>();
        for (int i = 1; i < args.length; i += 2) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected `--FLAG VALUE`, found `" + args[i] + "`");
            }
            flags.put(args[i].substring(2), args[i + 1]);
        }
        Options options = new Options(
                args[0],
                required(flags, "bootstrap"),
                required(flags, "input"),
                required(flags, "output"),
                required(flags, "application-id"),
                flags.getOrDefault("guarantee", "at-least-once"),
                Integer.parseInt(flags.getOrDefault("threads", "2")),
                Long.parseLong(flags.getOrDefault("commit-interval-ms",
                        Long.toString(EDDY_COMMIT_INTERVAL_MS))),
                flags.getOrDefault("state-dir", System.getProperty("java.io.tmpdir") + "/kafka-streams"),
                Long.parseLong(flags.getOrDefault("size-ms", "60000")),
                Long.parseLong(flags.getOrDefault("grace-ms", "0")),
                Long.parseLong(flags.getOrDefault("gap-ms", "300000")));
        if (!options.guarantee.equals("at-least-once") && !options.guarantee.equals("exactly-once")) {
            throw new IllegalArgumentException(
                    "--guarantee is at-least-once or exactly-once, not `" + options.guarantee + "`");
        }
        return options;
    }

    private static String required(Map<String, String> flags, String name) {
        String value = flags.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    /**
     * The Streams configuration: the guarantee, threads and commit interval asked for, the
     * record cache left at its default (10 MiB per client), everything else Kafka's default.
     */
    Properties streamsConfig() {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                guarantee.equals("exactly-once") ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitIntervalMs);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // Like an eddy pipeline created without --start-from: from the beginning of its input.
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return props;
    }
}
