#!/usr/bin/env bash
# The session targets of BENCHMARKS.md: Verify ÷ health in strict, cached and embedded mode;
# Refresh on Postgres ÷ a single-row primary-key UPDATE measured with pgbench in the same run;
# Refresh and Verify p50 with 10^3 and 10^6 sessions in the database. Needs psql, pgbench,
# redis-cli and the local Postgres/Redis of the test suite. About 12 minutes. Leaves the bench
# databases behind unless CLEANUP=1. Each figure is the median of ROUNDS (default 3) rounds, the
# baseline and the measured phase alternating, so that one noisy phase does not decide it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG=${PG:-postgres://postgres@127.0.0.1:5432}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
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
# The middle value of the numbers on stdin (the upper middle of an even count).
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'; }
# The median ratio loadgen printed over its rounds (its one ratio when it ran one round).
median_ratio() {
    grep -oP '^median ratio .* = \K[0-9.]+' "$1" || grep -oP '^ratio .* = \K[0-9.]+' "$1"
}

prepare_sessions authd_bench_sessions_1k 1000
prepare_sessions authd_bench_sessions_1m 1000000
redis-cli --scan --pattern 'benchs*' | xargs -r -n 1000 redis-cli del > /dev/null

# Every figure is the median of $ROUNDS: on a shared machine one phase alone can be 40 % off.
echo "== S1 Verify ÷ health: strict (Postgres + Redis)"
start_server --database-url "$PG/authd_bench_sessions_1k" --redis-url redis://127.0.0.1:6379 --redis-key-prefix benchs1:
loadgen --rpc verify --concurrency 64 --users 1000 --rounds "$ROUNDS" | tee /tmp/authd-bench-s1.txt
S1=$(median_ratio /tmp/authd-bench-s1.txt)

echo "== S4 Refresh on Postgres, alternating with pgbench's single-row primary-key UPDATE on the same server"
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS authd_bench_pgbench" -c "CREATE DATABASE authd_bench_pgbench"
"$PGBENCH" -q -i -s 10 "$PG/authd_bench_pgbench" > /dev/null 2>&1
cat > /tmp/authd-bench-update.sql <<'SQL'
\set aid random(1, 1000000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL
S4_RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
    loadgen --rpc refresh --concurrency 64 --users 64 --no-baseline > /tmp/authd-bench-s4.txt
    cat /tmp/authd-bench-s4.txt
    refresh=$(awk '$1 == "Refresh" && $3 == "ok" { print $4 }' /tmp/authd-bench-s4.txt)
    # 16 clients: as many connections as authd's pool (AUTHD_DATABASE_MAX_CONNECTIONS).
    echo "\$ pgbench -n -c 16 -j 2 -T ${DURATION%s} -f update.sql"
    "$PGBENCH" -n -c 16 -j 2 -T "${DURATION%s}" -f /tmp/authd-bench-update.sql "$PG/authd_bench_pgbench" \
        | grep -E "^tps|latency average" > /tmp/authd-bench-pgbench.txt
    cat /tmp/authd-bench-pgbench.txt
    tps=$(awk '$1 == "tps" { print $3 }' /tmp/authd-bench-pgbench.txt)
    ratio=$(awk -v r="$refresh" -v t="$tps" 'BEGIN { printf "%.3f", r / t }')
    echo "round $round: Refresh $refresh rps ÷ pgbench $tps tps = $ratio"
    S4_RATIOS+=("$ratio")
done
S4=$(printf '%s\n' "${S4_RATIOS[@]}" | median)
echo

echo "== S2 Verify ÷ health: cached"
start_server --database-url "$PG/authd_bench_sessions_1k" --redis-url redis://127.0.0.1:6379 --redis-key-prefix benchs1: --revocation-mode cached
loadgen --rpc verify --concurrency 64 --users 1000 --rounds "$ROUNDS" | tee /tmp/authd-bench-s2.txt
S2=$(median_ratio /tmp/authd-bench-s2.txt)

echo "== S3 Verify ÷ health: embedded default (SQLite, revocations in memory)"
start_server
loadgen --rpc verify --concurrency 64 --users 1000 --rounds "$ROUNDS" | tee /tmp/authd-bench-s3.txt
S3=$(median_ratio /tmp/authd-bench-s3.txt)

echo "== S5 Refresh and Verify p50 with 10^3, then 10^6 sessions (strict), alternating"
declare -A P50
for round in $(seq 1 "$ROUNDS"); do
    for n in 1k 1m; do
        start_server --database-url "$PG/authd_bench_sessions_$n" --redis-url redis://127.0.0.1:6379 --redis-key-prefix "benchs$n:"
        for rpc in refresh verify; do
            users=16
            [ $rpc = verify ] && users=200
            loadgen --rpc $rpc --concurrency 16 --users $users --no-baseline > /tmp/authd-bench-s5.txt
            cat /tmp/authd-bench-s5.txt
            p50=$(awk '($1 == "Refresh" || $1 == "Verify") && $3 == "ok" { print $7 }' /tmp/authd-bench-s5.txt)
            echo "round $round, $n sessions: $rpc p50 $p50 ms"
            P50[$rpc-$n]="${P50[$rpc-$n]:-} $p50"
        done
    done
done
stop_server
echo
for rpc in refresh verify; do
    for n in 1k 1m; do
        P50[$rpc-$n]=$(printf '%s\n' ${P50[$rpc-$n]} | median)
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== Summary: medians of $ROUNDS rounds"
echo "S1 strict Verify ÷ health        $S1   (target ≥ 0.6)"
echo "S2 cached Verify ÷ health        $S2   (target ≥ 0.85)"
echo "S3 embedded Verify ÷ health      $S3   (target ≥ 0.85)"
echo "S4 Refresh ÷ pgbench UPDATE      $S4   (target ≥ 0.5; each round: ${S4_RATIOS[*]})"
echo "S5 p50 10^6 ÷ 10^3 sessions      Refresh ${P50[refresh-1m]} ÷ ${P50[refresh-1k]} ms = $(ratio "${P50[refresh-1m]}" "${P50[refresh-1k]}"), Verify ${P50[verify-1m]} ÷ ${P50[verify-1k]} ms = $(ratio "${P50[verify-1m]}" "${P50[verify-1k]}")   (target ≤ 1.2)"

if [ "${CLEANUP:-0}" = 1 ]; then
    for db in authd_bench_sessions_1k authd_bench_sessions_1m authd_bench_pgbench; do
        psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db"
    done
    redis-cli --scan --pattern 'benchs*' | xargs -r -n 1000 redis-cli del > /dev/null
fi
