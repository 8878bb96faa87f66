# syntax=docker/dockerfile:1

# backoffice-worker: build in the official Rust image, run in a slim Debian
# with CA certificates (the gateways are HTTPS) and curl for the health check,
# as an unprivileged user. Where no registry can be reached, both base images
# are built locally under these names by scripts/container-engine.
#
#   docker build -t backoffice-worker .
#   docker run -v $PWD/prod.toml:/etc/backoffice/backoffice.toml:ro -p 9090:9090 backoffice-worker
#   docker compose up          # with RabbitMQ, PostgreSQL and the gateway simulator

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. Empty stand-ins for the crate's
# targets let cargo compile every dependency now.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself. `sqlx::migrate!` embeds migrations/ at compile time.
# COPY keeps the sources' old modification times, older than the stand-ins'
# build, so touch them or cargo would keep the empty binary.
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/backoffice-worker /out/backoffice-worker

FROM debian:bookworm-slim AS runtime
# Unpinned on purpose: Debian replaces these versions with each security update,
# so a pinned version would stop the build; the base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 backoffice \
    && useradd --system --uid 10001 --gid backoffice --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin backoffice

COPY --from=builder /out/backoffice-worker /usr/local/bin/backoffice-worker

USER 10001:10001
# The configuration: mount it as /etc/backoffice/backoffice.toml (the worker
# reads ./backoffice.toml when neither --config nor $BACKOFFICE_CONFIG is
# given). None is baked in: without one, `run` stops at once saying so, and
# `run --sandbox` uses its built-in sandbox configuration. $AMQP_URL and
# $DATABASE_URL override the connection URLs, $RUST_LOG the log filter.
WORKDIR /etc/backoffice

# The admin listener: /healthz (alive) and /readyz (broker and database up).
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/healthz"]

# SIGTERM stops the worker gracefully: in-flight commands finish, or are left
# for recovery after its shutdown_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["backoffice-worker"]
# The worker against the gateways of the mounted configuration. The admin
# listener is part of the default command so that the HEALTHCHECK above holds
# for a plain `docker run`. Other commands of the same image:
#   IMAGE run --sandbox --admin-listen 0.0.0.0:9090     # built-in simulator, demo payments
#   IMAGE simulate --listen 0.0.0.0:8099 --config F     # the gateway simulator
#   IMAGE enqueue|show|list|dead-letters|migrate ...    # operator commands
CMD ["run", "--admin-listen", "0.0.0.0:9090"]
