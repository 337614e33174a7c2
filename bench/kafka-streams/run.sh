#!/usr/bin/env bash
# Runs one reference Kafka Streams job (src/main/java/dev/eddy/streams):
#   bench/kafka-streams/run.sh JOB --bootstrap HOST:PORT --input T --output T --application-id ID [...]
# Compiles the project first if its classes are missing or older than its
# sources (Maven fetches kafka-streams into ~/.m2 once). JAVA_OPTS passes
# JVM flags (the benchmark gives -Xmx1g). See Options.java for the flags.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
classes="$here/target/classes"
classpath="$here/target/classpath.txt"
if [ ! -f "$classpath" ] || [ -n "$(find "$here/src" "$here/pom.xml" -newer "$classpath" -print -quit)" ]; then
    log=$(mktemp)
    if ! mvn -q -B -f "$here/pom.xml" compile dependency:build-classpath \
        -Dmdep.outputFile="$classpath.tmp" >"$log" 2>&1; then
        cat "$log" >&2
        echo "run.sh: could not build the Kafka Streams jobs (above: Maven's output)" >&2
        exit 1
    fi
    rm -f "$log"
    mv "$classpath.tmp" "$classpath"
fi
# shellcheck disable=SC2086
exec java ${JAVA_OPTS:-} -cp "$classes:$(cat "$classpath")" dev.eddy.streams.Main "$@"
