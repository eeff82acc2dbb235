#!/bin/sh
# kafka-run-class.sh CLASS ARGS...: java over /opt/kafka/libs/*, as the distribution's script of
# the same name does. The broker (kafka.Kafka) gets KAFKA_HEAP_OPTS (default -Xmx512m, as the
# tests' broker) and logs at INFO; the short-lived tools a small heap, the quick JIT and WARN.
set -e
class=$1
shift
home=$(dirname "$(dirname "$(readlink -f "$0")")")
if [ "$class" = kafka.Kafka ]; then
    # shellcheck disable=SC2086  # the options are words
    exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$home/config/log4j2.properties" \
        ${KAFKA_OPTS:-} -cp "$home/libs/*" "$class" "$@"
fi
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$home/config/tools-log4j2.properties" \
    ${KAFKA_OPTS:-} -cp "$home/libs/*" "$class" "$@"
