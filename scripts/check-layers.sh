#!/usr/bin/env bash
# Keeps the layers honest (ARCHITECTURE.md): tonic is named only at the gRPC edge (src/api/,
# src/server/, the generated `pb` module in src/lib.rs, and the client in src/bin/), and sqlx and
# redis only in the stores (src/store/). Exits non-zero naming each offending line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0
# `tonic::…`, `tonic_health::…`, `use tonic…`: a path into one of the tonic crates.
if offenders=$(grep -rnE '\btonic(_[a-z]+)?::|\buse tonic' src --include='*.rs' |
    grep -vE '^src/(api/|server/|lib\.rs:|bin/)'); then
    echo "error: tonic named outside src/api/ and src/server/:" >&2
    echo "$offenders" >&2
    status=1
fi
# `sqlx::…` or `redis::…` as a path (the store module `store::redis` is re-exported as
# `store::RedisStore`, so outside src/store/ no path starts with `redis::`).
if offenders=$(grep -rnE '(^|[^:[:alnum:]_])(sqlx|redis)::' src --include='*.rs' |
    grep -vE '^src/store/'); then
    echo "error: sqlx or redis named outside src/store/:" >&2
    echo "$offenders" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "layers ok: tonic only at the edge, sqlx and redis only in the stores"
fi
exit "$status"
