#!/usr/bin/env bash
# Idempotently fetch the jars of a real Apache Kafka broker (KRaft mode) from Maven Central into
# build/kafka/libs/ (under $OPENLFR_BUILD_DIR when set), for openlfr.testing.kafka_broker.
# The version lives in deploy/kafka/pom.xml; a stamp in the libs directory names it and the pom's
# hash, so a re-run with the same pom does nothing and a changed pom replaces the jars whole.
# Needs Java 17+ (Kafka 4 brokers) and Maven.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=deploy/kafka/pom.xml
dest=${OPENLFR_BUILD_DIR:-build}/kafka/libs
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac  # Maven resolves relative paths from the pom
stamp=$dest/.openlfr-kafka

version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
if [ -z "$version" ]; then
    echo "kafka-fetch: no <kafka.version> in $pom" >&2
    exit 1
fi
want="kafka=$version pom=$(sha256sum "$pom" | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "kafka-fetch: Kafka $version already in $dest ($(find "$dest" -name '*.jar' | wc -l) jars)"
    exit 0
fi

for tool in java mvn; do
    if ! command -v "$tool" >/dev/null; then
        echo "kafka-fetch: '$tool' is not on PATH; Kafka $version needs Java 17+ and Maven" >&2
        exit 1
    fi
done

# Into a fresh directory first, so an interrupted download never leaves a stamped, partial set.
staging=$dest.partial
rm -rf "$staging"
mkdir -p "$(dirname "$dest")"
echo "kafka-fetch: downloading Kafka $version jars from Maven Central into $dest"
log=$(dirname "$dest")/kafka-fetch.log
if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging" >"$log" 2>&1; then
    cat "$log" >&2
    echo "kafka-fetch: Maven failed (log above, also in $log)" >&2
    exit 1
fi
echo "$want" > "$staging/.openlfr-kafka"
rm -rf "$dest"
mv "$staging" "$dest"
echo "kafka-fetch: Kafka $version ready in $dest ($(find "$dest" -name '*.jar' | wc -l) jars," \
    "$(du -sh "$dest" | cut -f1))"
