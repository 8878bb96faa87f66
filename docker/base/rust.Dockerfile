# The `rust:1-bookworm` builder image, made by scripts/container-engine where
# no registry can be reached: the local Debian base plus the host's own Rust
# toolchain (its sysroot, as a tar in the build context). It holds what
# building this project needs: a C compiler and make (jemalloc, ring), the
# CA certificates cargo needs to reach crates.io (or a local mirror named in
# cargo-config.toml).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*

# The layout of the official image: cargo's home (registry cache, installed
# binaries) under /usr/local/cargo; the toolchain itself in /usr/local/rust.
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ADD sysroot.tar /usr/local/rust/
COPY cargo-config.toml /usr/local/cargo/config.toml
RUN rustc --version && cargo --version
