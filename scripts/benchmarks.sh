#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md on this machine: builds release binaries, prepares
# Postgres databases with 10^3..10^6 users and Redis with 10^6 live revocations, starts authd in
# each configuration and drives it with examples/loadgen.rs. Needs psql, redis-cli and the local
# Postgres/Redis of the test suite. Takes about 15 minutes. Leaves the bench databases and Redis
# keys (prefix bench*:) behind unless CLEANUP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG=${PG:-postgres://postgres@127.0.0.1:5432}
DURATION=${DURATION:-10s}
AUTHD=target/release/authd
LOADGEN=target/release/examples/loadgen
DUMMY_HASH='$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'

cargo build --release --bin authd --example loadgen

# A database with $2 filler users (the loadgen registers its own users on top).
prepare_users() {
    local db=$1 users=$2
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    # Start once to run the migrations.
    AUTHD_DATA_DIR=$(mktemp -d) AUTHD_DATABASE_URL="$PG/$db" AUTHD_LISTEN_ADDR=127.0.0.1:0 AUTHD_HTTP_LISTEN_ADDR=off \
        RUST_LOG=error timeout 5 "$AUTHD" || true
    psql -q "$PG/$db" -c "INSERT INTO users (id, email, email_normalized, password_hash)
        SELECT gen_random_uuid(), 'filler'||i||'@example.com', 'filler'||i||'@example.com', '$DUMMY_HASH'
        FROM generate_series(1, $users) i" -c "ANALYZE users"
}

# $1 live revocations under the Redis prefix $2 (keys and the cached-mode index).
prepare_revocations() {
    python3 - "$1" "$2" <<'PY' | redis-cli --pipe
import sys, time, uuid
count, prefix = int(sys.argv[1]), sys.argv[2]
until = int(time.time()) + 6 * 3600
out = sys.stdout
def cmd(*args):
    out.write('*%d\r\n' % len(args))
    for a in map(str, args):
        out.write('$%d\r\n%s\r\n' % (len(a.encode()), a))
for _ in range(count):
    jti = str(uuid.uuid4())
    cmd('SET', f'{prefix}revoked:{jti}', 1, 'EXAT', until)
    cmd('ZADD', f'{prefix}revoked-index', until, jti)
PY
}

SERVER_PID=
start_server() {
    stop_server
    # The load generator registers its users from one address: no per-source registration limit.
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

for n in 1000 10000 100000 1000000; do prepare_users "authd_bench_$n" "$n"; done
redis-cli --scan --pattern 'bench*' | xargs -r -n 1000 redis-cli del > /dev/null
prepare_revocations 1000000 'bench1m:'

echo "== P1, P2, P5: strict mode, Postgres (10^3 users) + Redis (no revocations)"
start_server --database-url "$PG/authd_bench_1000" --redis-url redis://127.0.0.1:6379 --redis-key-prefix bench0:
loadgen --rpc verify --concurrency 64 --users 1000
loadgen --rpc login --concurrency 16 --users 200 --argon2-ceiling
echo "== P3: Verify p99 under a Login flood"
loadgen --rpc verify --concurrency 8 --users 200 --flood-logins 64 --no-baseline
loadgen --rpc verify --concurrency 64 --users 200 --flood-logins 64 --no-baseline

echo "== P1c: cached mode"
start_server --database-url "$PG/authd_bench_1000" --redis-url redis://127.0.0.1:6379 --redis-key-prefix bench0: --revocation-mode cached
loadgen --rpc verify --concurrency 64 --users 1000

echo "== P4: Login p50 with 10^3..10^6 users"
for n in 1000 10000 100000 1000000; do
    start_server --database-url "$PG/authd_bench_$n" --redis-url redis://127.0.0.1:6379 --redis-key-prefix "bench$n:"
    loadgen --rpc login --concurrency 16 --users 200 --no-baseline
done

echo "== P4: Verify p50 with 10^6 live revocations (strict, then cached)"
start_server --database-url "$PG/authd_bench_1000" --redis-url redis://127.0.0.1:6379 --redis-key-prefix bench1m:
loadgen --rpc verify --concurrency 64 --users 1000
start_server --database-url "$PG/authd_bench_1000" --redis-url redis://127.0.0.1:6379 --redis-key-prefix bench1m: --revocation-mode cached
loadgen --rpc verify --concurrency 64 --users 1000

echo "== embedded default (SQLite), for comparison"
start_server
loadgen --rpc verify --concurrency 64 --users 1000
stop_server

echo "== cached-mode propagation delay (Logout on A -> Verify on B)"
cargo test --release --test quiet -- --nocapture propagation 2>&1 | grep -E "propagation|test result"

if [ "${CLEANUP:-0}" = 1 ]; then
    for n in 1000 10000 100000 1000000; do psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_$n"; done
    redis-cli --scan --pattern 'bench*' | xargs -r -n 1000 redis-cli del > /dev/null
fi
