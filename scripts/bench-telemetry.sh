#!/usr/bin/env bash
# Issue 11's "no cost when unset": Verify ÷ health on the embedded default and in strict mode
# (Postgres + Redis), for a baseline binary (BASE_AUTHD, e.g. a release build of the commit before
# tracing and the audit log) and for this tree's, alternating A B A B so that drift in the machine
# falls on both. With OTEL=1, a third column exports traces to a collector that accepts nothing
# (a closed port). About 4 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG=${PG:-postgres://postgres@127.0.0.1:5432}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
NEW=target/release/authd
LOADGEN=target/release/examples/loadgen
BASE=${BASE_AUTHD:?set BASE_AUTHD to the baseline authd binary}

cargo build --release --bin authd --example loadgen
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_telemetry" -c "CREATE DATABASE authd_bench_telemetry"

SERVER_PID=
start_server() {
    stop_server
    local binary=$1
    shift
    env AUTHD_DATA_DIR="$(mktemp -d)" AUTHD_SOURCE_MAX_REGISTRATIONS=0 RUST_LOG=warn "$binary" "$@" \
        > /tmp/authd-bench-telemetry.log 2>&1 &
    SERVER_PID=$!
    sleep 2
    kill -0 "$SERVER_PID" 2>/dev/null || { cat /tmp/authd-bench-telemetry.log >&2; exit 1; }
}
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=
}
trap stop_server EXIT

run() {
    local label=$1 binary=$2
    shift 2
    start_server "$binary" "$@"
    echo "-- $label"
    "$LOADGEN" --duration "$DURATION" --server-pid "$SERVER_PID" --rpc verify --concurrency 64 --users 1000 |
        grep -iE "health|verify|ratio"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: embedded"
    run "base" "$BASE"
    run "this tree, OTEL unset" "$NEW"
    if [ "${OTEL:-0}" = 1 ]; then
        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9 run "this tree, exporting to a closed port" "$NEW"
    fi
    echo "== round $round: strict (Postgres + Redis)"
    strict=(--database-url "$PG/authd_bench_telemetry" --redis-url redis://127.0.0.1:6379 --redis-key-prefix "benchtel$round:")
    run "base" "$BASE" "${strict[@]}"
    run "this tree, OTEL unset" "$NEW" "${strict[@]}"
done
stop_server
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_telemetry"
redis-cli --scan --pattern 'benchtel*' | xargs -r -n 1000 redis-cli del > /dev/null
