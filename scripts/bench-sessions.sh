#!/usr/bin/env bash
# The session targets of BENCHMARKS.md: Verify ÷ health in strict, cached and embedded mode;
# Refresh on Postgres ÷ a single-row primary-key UPDATE measured with pgbench in the same run;
# Refresh and Verify p50 with 10^3 and 10^6 sessions in the database. Needs psql, pgbench,
# redis-cli and the local Postgres/Redis of the test suite. About 6 minutes. Leaves the bench
# databases behind unless CLEANUP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG=${PG:-postgres://postgres@127.0.0.1:5432}
DURATION=${DURATION:-10s}
AUTHD=target/release/authd
LOADGEN=target/release/examples/loadgen
PGBENCH=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
DUMMY_HASH='$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'

cargo build --release --bin authd --example loadgen

# A database with 1000 filler users and $2 live sessions spread over them.
prepare_sessions() {
    local db=$1 sessions=$2
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    AUTHD_DATA_DIR=$(mktemp -d) AUTHD_DATABASE_URL="$PG/$db" AUTHD_LISTEN_ADDR=127.0.0.1:0 AUTHD_HTTP_LISTEN_ADDR=off \
        RUST_LOG=error timeout 5 "$AUTHD" || true
    psql -q "$PG/$db" -c "INSERT INTO users (id, email, email_normalized, password_hash)
        SELECT gen_random_uuid(), 'filler'||i||'@example.com', 'filler'||i||'@example.com', '$DUMMY_HASH'
        FROM generate_series(1, 1000) i" \
        -c "WITH u AS (SELECT array_agg(id) AS ids FROM users),
                 t AS (SELECT (extract(epoch FROM now()) * 1000)::bigint AS ms)
            INSERT INTO sessions (id, user_id, refresh_hash, created_at_ms, last_used_at_ms,
                                  idle_expires_at_ms, expires_at_ms)
            SELECT gen_random_uuid(), u.ids[1 + i % 1000], sha256(('s' || i)::bytea), t.ms, t.ms,
                   t.ms + 2592000000, t.ms + 7776000000
            FROM generate_series(1, $sessions) i, u, t" \
        -c "ANALYZE users" -c "ANALYZE sessions"
}

SERVER_PID=
start_server() {
    stop_server
    AUTHD_DATA_DIR=$(mktemp -d) AUTHD_SOURCE_MAX_REGISTRATIONS=0 RUST_LOG=warn "$AUTHD" "$@" \
        > /tmp/authd-bench-server.log 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 50); do
        grep -q "serving\|ERROR" /tmp/authd-bench-server.log 2>/dev/null && break
        sleep 0.2
    done
    sleep 1
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "authd did not start:" >&2
        cat /tmp/authd-bench-server.log >&2
        exit 1
    fi
}
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=
}
trap stop_server EXIT

loadgen() { echo "\$ loadgen $*"; "$LOADGEN" --duration "$DURATION" --server-pid "$SERVER_PID" "$@"; echo; }

prepare_sessions authd_bench_sessions_1k 1000
prepare_sessions authd_bench_sessions_1m 1000000
redis-cli --scan --pattern 'benchs*' | xargs -r -n 1000 redis-cli del > /dev/null

echo "== Verify ÷ health: strict (Postgres + Redis)"
start_server --database-url "$PG/authd_bench_sessions_1k" --redis-url redis://127.0.0.1:6379 --redis-key-prefix benchs1:
loadgen --rpc verify --concurrency 64 --users 1000
echo "== Refresh on Postgres, then pgbench's single-row primary-key UPDATE on the same server"
loadgen --rpc refresh --concurrency 64 --users 64 --no-baseline
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_pgbench" -c "CREATE DATABASE authd_bench_pgbench"
"$PGBENCH" -q -i -s 10 "$PG/authd_bench_pgbench" > /dev/null 2>&1
cat > /tmp/authd-bench-update.sql <<'SQL'
\set aid random(1, 1000000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL
# 16 clients: as many connections as authd's pool (AUTHD_DATABASE_MAX_CONNECTIONS).
echo "\$ pgbench -n -c 16 -j 2 -T ${DURATION%s} -f update.sql"
"$PGBENCH" -n -c 16 -j 2 -T "${DURATION%s}" -f /tmp/authd-bench-update.sql "$PG/authd_bench_pgbench" | grep -E "^tps|latency average"
echo

echo "== Verify ÷ health: cached"
start_server --database-url "$PG/authd_bench_sessions_1k" --redis-url redis://127.0.0.1:6379 --redis-key-prefix benchs1: --revocation-mode cached
loadgen --rpc verify --concurrency 64 --users 1000

echo "== Verify ÷ health: embedded default (SQLite, revocations in memory)"
start_server
loadgen --rpc verify --concurrency 64 --users 1000

echo "== P4: Refresh and Verify p50 with 10^3, then 10^6 sessions (strict)"
for n in 1k 1m; do
    start_server --database-url "$PG/authd_bench_sessions_$n" --redis-url redis://127.0.0.1:6379 --redis-key-prefix "benchs$n:"
    loadgen --rpc refresh --concurrency 16 --users 16 --no-baseline
    loadgen --rpc verify --concurrency 16 --users 200 --no-baseline
done
stop_server

if [ "${CLEANUP:-0}" = 1 ]; then
    for db in authd_bench_sessions_1k authd_bench_sessions_1m authd_bench_pgbench; do
        psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db"
    done
    redis-cli --scan --pattern 'benchs*' | xargs -r -n 1000 redis-cli del > /dev/null
fi
