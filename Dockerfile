# syntax=docker/dockerfile:1
#
# One image for all of Agora: auth-service, posts-service, votes-service and the
# gateway, each in /usr/local/bin. Pick one with the command (the default is the
# gateway), e.g. `docker run agora:latest auth-service`. docker-compose.yml runs
# them all. Build with BuildKit (the default of current Docker):
#
#   docker build -t agora:latest .

# --- build ---------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder

# tonic-prost-build compiles proto/ with protoc. The well-known types the contracts
# import (google/protobuf/timestamp.proto, field_mask.proto) are in libprotobuf-dev,
# which protobuf-compiler only recommends.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*

# Queries are checked against the shipped `.sqlx/` data: no database at build time.
ENV SQLX_OFFLINE=true

WORKDIR /src
COPY . .

# The registry and target directories live in cache mounts, so the binaries are
# copied out of them within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p auth-service -p posts-service -p votes-service -p gateway \
    && mkdir -p /out \
    && cp target/release/auth-service target/release/posts-service \
          target/release/votes-service target/release/gateway /out/

# --- run -----------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agora \
    && useradd --system --uid 10001 --gid agora --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin agora

COPY --from=builder /out/ /usr/local/bin/

USER agora:agora

# gateway: gRPC (and gRPC-Web) on 50051, HTTP/JSON on 8080. The services use
# 50052 (auth), 50053 (posts) and 50054 (votes) inside the compose network.
EXPOSE 50051 8080

CMD ["gateway"]
