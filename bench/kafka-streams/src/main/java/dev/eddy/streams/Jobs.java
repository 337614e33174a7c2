package dev.eddy.streams;

import java.time.Duration;
import java.util.Arrays;
import java.util.Locale;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;

/**
 * The reference topologies, each as Kafka Streams' documentation writes it. Keys and values are
 * strings; the output formats are those of eddy's plugins of the same names, so that a checker
 * compares the two without translating.
 */
final class Jobs {
    private Jobs() {}

    /** The topology of {@code options.job()}. */
    static Topology build(Options options) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> input =
                builder.stream(options.input(), Consumed.with(Serdes.String(), Serdes.String()));
        switch (options.job()) {
            case "uppercase" -> uppercase(input, options);
            case "word-count" -> wordCount(input, options);
            case "tumbling-count" -> tumblingCount(input, options);
            case "session-count" -> sessionCount(input, options);
            default -> throw new IllegalArgumentException(
                    "unknown job `" + options.job() + "`: " + Options.JOBS);
        }
        return builder.build();
    }

    /** The first example of every Kafka Streams guide; tombstones stay tombstones. */
    private static void uppercase(KStream<String, String> input, Options options) {
        input.mapValues(v -> v == null ? null : v.toUpperCase(Locale.ROOT))
                .to(options.output(), Produced.with(Serdes.String(), Serdes.String()));
    }

    /**
     * WordCountDemo: the lower-cased line split on {@code \W+}, grouped by word, counted. The
     * counts go out as decimal strings, as eddy's {@code count} plugin writes them.
     */
    private static void wordCount(KStream<String, String> input, Options options) {
        input.filter((k, v) -> v != null)
                .flatMapValues(v -> Arrays.asList(v.toLowerCase(Locale.getDefault()).split("\\W+")))
                .filter((k, word) -> !word.isEmpty())
                .groupBy((k, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count()
                .toStream()
                .mapValues(count -> Long.toString(count))
                .to(options.output(), Produced.with(Serdes.String(), Serdes.String()));
    }

    /** A count per key per tumbling window, emitted once when the window closes. */
    private static void tumblingCount(KStream<String, String> input, Options options) {
        input.groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .windowedBy(TimeWindows.ofSizeAndGrace(
                        Duration.ofMillis(options.sizeMs()), Duration.ofMillis(options.graceMs())))
                .count()
                .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                .toStream()
                .map((window, count) -> KeyValue.pair(window.key(), windowJson(window, count)))
                .to(options.output(), Produced.with(Serdes.String(), Serdes.String()));
    }

    /** A count per key per session (an inactivity gap), emitted once when the session closes. */
    private static void sessionCount(KStream<String, String> input, Options options) {
        input.groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .windowedBy(SessionWindows.ofInactivityGapAndGrace(
                        Duration.ofMillis(options.gapMs()), Duration.ofMillis(options.graceMs())))
                .count()
                .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                .toStream()
                // A merged-away session is forwarded as a null count: not a result.
                .filter((window, count) -> count != null)
                .map((window, count) -> KeyValue.pair(window.key(), windowJson(window, count)))
                .to(options.output(), Produced.with(Serdes.String(), Serdes.String()));
    }

    /**
     * {@code {"count":n,"end":ms,"key":"…","start":ms}}, keys sorted as eddy's windowed-count
     * writes them. Kafka Streams' session windows end at their last record, inclusive; eddy's
     * windows end exclusive, which the checker accounts for.
     */
    private static String windowJson(Windowed<String> window, long count) {
        return "{\"count\":" + count
                + ",\"end\":" + window.window().end()
                + ",\"key\":" + jsonString(window.key())
                + ",\"start\":" + window.window().start() + "}";
    }

    private static String jsonString(String s) {
        if (s == null) {
            return "\"\"";
        }
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
