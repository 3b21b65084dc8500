#!/usr/bin/env bash
# The gateway target of BENCHMARKS.md: Envoy ext_authz Check throughput ÷ Verify throughput on the
# same server in the same run (strict mode on Postgres + Redis, then the embedded default), each
# beside the grpc.health.v1 baseline. Needs the local Postgres/Redis of the test suite. About two
# minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG=${PG:-postgres://postgres@127.0.0.1:5432}
DURATION=${DURATION:-10s}
AUTHD=target/release/authd
LOADGEN=target/release/examples/loadgen

cargo build --release --bin authd --example loadgen

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=
}
trap stop_server EXIT
start_server() {
    stop_server
    AUTHD_DATA_DIR=$(mktemp -d) AUTHD_SOURCE_MAX_REGISTRATIONS=0 AUTHD_HTTP_LISTEN_ADDR=off \
        RUST_LOG=warn "$AUTHD" "$@" > /tmp/authd-bench-gateways.log 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 50); do
        grep -q "serving gRPC\|ERROR" /tmp/authd-bench-gateways.log 2>/dev/null && break
        sleep 0.2
    done
    kill -0 "$SERVER_PID" 2>/dev/null || { cat /tmp/authd-bench-gateways.log >&2; exit 1; }
}
rps() { grep -E "^$1 " | awk '{for (i = 1; i <= NF; i++) if ($i == "rps") print $(i-1)}'; }
measure() {
    local verify check
    verify=$("$LOADGEN" --duration "$DURATION" --server-pid "$SERVER_PID" --rpc verify --concurrency 64 --users 1000 | tee /dev/stderr | rps Verify)
    check=$("$LOADGEN" --duration "$DURATION" --server-pid "$SERVER_PID" --rpc check --concurrency 64 --users 1000 --no-baseline | tee /dev/stderr | rps Check)
    echo "ratio Check ÷ Verify throughput = $(awk -v c="$check" -v v="$verify" 'BEGIN { printf "%.3f", c / v }')"
    echo
}

psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_gateways" -c "CREATE DATABASE authd_bench_gateways"
echo "== strict (Postgres + Redis)"
start_server --database-url "$PG/authd_bench_gateways" --redis-url redis://127.0.0.1:6379 --redis-key-prefix benchgw:
measure
echo "== embedded default"
start_server
measure
stop_server
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_gateways"
redis-cli --scan --pattern 'benchgw:*' | xargs -r -n 1000 redis-cli del > /dev/null
