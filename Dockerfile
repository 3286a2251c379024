# syntax=docker/dockerfile:1
# One image for the three binaries: `api`, `worker` and `scheduler` (the command chooses).
# Multi-stage: the Rust toolchain builds in the first stage; the second holds only the
# binaries on Debian slim (same Debian as the builder, so the same glibc).
#
#   docker build --build-arg INSTAINSTRU_COMMIT=$(git rev-parse --short HEAD) -t instainstru .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... instainstru api
#
# No database is needed to build: every SQL statement is checked at compile time against the
# committed .sqlx/ (SQLX_OFFLINE). Email templates and migrations are compiled in, and no
# crate links OpenSSL (Postgres, Redis and SMTP are spoken in plain TCP here: put TLS in the
# network layer, or enable the crates' rustls features first).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
# the commit in instainstru_build_info (read at compile time by shared::telemetry)
ARG INSTAINSTRU_COMMIT=unknown
ENV INSTAINSTRU_COMMIT=${INSTAINSTRU_COMMIT}
COPY . .
# the registry and target caches survive between builds (BuildKit); the binaries are copied
# out of the cached target dir, which is not part of the layer
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api -p worker -p scheduler \
 && mkdir -p /out \
 && cp target/release/api target/release/worker target/release/scheduler /out/

FROM debian:${DEBIAN}-slim AS runtime
# tini: PID 1 that forwards SIGTERM, so that each binary drains (requests, in-flight jobs,
# the scheduler's lease) instead of being killed
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent instainstru
COPY --from=build /out/ /usr/local/bin/
USER 10001
# listen on every interface of the container; LOG_FORMAT=json for log collectors.
# MAIL_DIR is only used without SMTP_URL (emails as .eml files).
ENV HOST=0.0.0.0 LOG_FORMAT=json MAIL_DIR=/tmp/mail
# api (PORT), worker /metrics (WORKER_PORT), scheduler /metrics (SCHEDULER_PORT)
EXPOSE 8080 9101 9102
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["api"]
