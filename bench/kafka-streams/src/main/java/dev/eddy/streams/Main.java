package dev.eddy.streams;

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;

/**
 * Runs one reference job until SIGTERM (or SIGINT), then closes it cleanly. Prints one line per
 * state change to stdout, {@code state RUNNING at MS}, which the tests and the benchmark wait
 * on; an error in a stream thread stops the client and the process exits 1.
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws InterruptedException {
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("kafka-streams-jobs: " + e.getMessage());
            System.exit(2);
            return;
        }
        KafkaStreams streams = new KafkaStreams(Jobs.build(options), options.streamsConfig());
        CountDownLatch stopped = new CountDownLatch(1);
        boolean[] failed = {false};
        streams.setStateListener((now, before) -> {
            System.out.println("state " + now + " at " + System.currentTimeMillis());
            System.out.flush();
            if (now == KafkaStreams.State.ERROR) {
                failed[0] = true;
            }
            if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kafka-streams-jobs: a stream thread failed: " + e);
            failed[0] = true;
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Thread closer = new Thread(() -> streams.close(Duration.ofSeconds(30)));
        Runtime.getRuntime().addShutdownHook(closer);
        System.out.println("pid " + ManagementFactory.getRuntimeMXBean().getPid());
        streams.start();
        stopped.await();
        if (failed[0]) {
            System.exit(1);
        }
    }
}
