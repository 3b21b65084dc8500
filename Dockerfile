# ---- Build stage -------------------------------------------------------------
# protoc comes from the protoc-bin-vendored crate, so no system protoc is needed.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The build context is filtered by .dockerignore (no target/, .git/, local data).
COPY . .
RUN cargo build --release --locked --bin authd --bin authd-healthcheck

# ---- Runtime stage -----------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 authd \
    && useradd --system --uid 10001 --gid authd --home-dir /var/lib/authd \
        --no-create-home --shell /usr/sbin/nologin authd \
    && mkdir -p /var/lib/authd \
    && chown authd:authd /var/lib/authd \
    && chmod 0700 /var/lib/authd

COPY --from=builder /src/target/release/authd /src/target/release/authd-healthcheck /usr/local/bin/

ENV AUTHD_LISTEN_ADDR=0.0.0.0:50051 \
    AUTHD_HTTP_LISTEN_ADDR=0.0.0.0:8080 \
    AUTHD_DATA_DIR=/var/lib/authd
# Holds the signing keys (keys/) and any local data: keep it on a volume so it persists.
VOLUME /var/lib/authd
EXPOSE 50051 8080
USER authd

# authd-healthcheck calls grpc.health.v1 Check on 127.0.0.1:<port of AUTHD_LISTEN_ADDR>
# and exits 0 only when the server reports SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/authd-healthcheck"]

ENTRYPOINT ["/usr/local/bin/authd"]
