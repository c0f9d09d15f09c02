# The replication worker's and the database endpoint's image (ECS Fargate; the SAM template's
# WorkerImage parameter): ferry-worker is the entry point, the endpoint's task definition runs
# ferry-endpoint, which starts PgBouncer (Debian trixie's 1.24: prepared statements in
# transaction pooling need 1.21 or newer) and writes its files under /tmp as the image's user.
#   docker build -t ferry-worker .            # --platform linux/arm64 for the arm64 default
# The runtime carries pg_dump and psql of PostgreSQL 17 (Debian trixie's client): pg_dump must be
# at least as new as the source (Heroku Postgres runs 14-17), and psql 17 also restores into
# RDS 18. Keep PG_MAJOR in step with FERRY_PG_BIN below and with tests/tests/infra.rs.
ARG RUST_VERSION=1.95
ARG PG_MAJOR=17

FROM rust:${RUST_VERSION}-slim-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-worker -p ferry-endpoint \
 && cp target/release/ferry-worker target/release/ferry-endpoint /

FROM debian:trixie-slim
ARG PG_MAJOR
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" pgbouncer openssl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home ferry
COPY --from=build /ferry-worker /ferry-endpoint /usr/local/bin/
ENV FERRY_PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin \
    FERRY_PGBOUNCER=/usr/sbin/pgbouncer
USER 10001
# Health is the heartbeat the worker writes to the state table every few seconds: the replication
# status step restarts a worker whose heartbeat stops. A container health check adds nothing.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/ferry-worker"]
