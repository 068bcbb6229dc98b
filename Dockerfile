# docker-filter: a static binary in an otherwise empty image.
#
# Two ways to build it, giving the same image:
#
#   docker build -t docker-filter .
#       compiles inside the build (needs to pull the rust:alpine image).
#
#   cargo build --release --locked --target x86_64-unknown-linux-musl
#   docker build --target from-host -t docker-filter .
#       packages the static musl binary built on the host; pulls nothing.
#       Build the binary first: without it the image has no /docker-filter
#       (the build does not fail, for the reason below).
#
# Stage order matters. The legacy builder (what `docker build` uses when
# buildx is not installed) runs every stage up to the target, in file
# order, whether the target needs it or not. So the stages that `from-host`
# needs come first and pull nothing, and the compiling stage comes after
# them. For the same reason `from-host` must not fail when no host binary
# exists, as in a default build of a fresh clone: its COPY names the binary
# with a wildcard next to a folder that is always there, and a wildcard
# that matches nothing is not an error then.
#
# Running it: the process runs as uid 65534 and needs the group that owns
# the Docker socket to reach it, for example
#
#   docker run -d --name docker-filter --network none \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -v /var/run/docker.sock:/var/run/docker.sock:ro \
#       -v safe-socket:/safe-socket \
#       docker-filter
#
# and clients mount the same volume and use the docker.sock in it (see
# example.compose). The safe socket is created with mode 0660, owned by
# 65534:65534: a client running as another non-root user needs that group,
# or `--socket-mode 0666` added to the command. A host folder bind-mounted
# at /safe-socket must be writable by uid 65534. The health check asks for
# GET /_ping on /safe-socket/docker.sock: a command with another --listen
# needs a matching `--health-cmd`.

ARG RUST_IMAGE=rust:1-alpine

# An empty /safe-socket folder, to be copied with its owner set. A named
# volume mounted there starts as a copy of it, owner included, which is
# what lets uid 65534 create the socket in a fresh volume.
FROM scratch AS safe-socket-dir
WORKDIR /safe-socket

# Everything but the binary.
FROM scratch AS base
COPY docker/rootfs/ /
COPY --from=safe-socket-dir --chown=65534:65534 /safe-socket /safe-socket
USER 65534:65534
WORKDIR /
ENTRYPOINT ["/docker-filter"]
CMD ["--listen", "/safe-socket/docker.sock", "--upstream", "/var/run/docker.sock"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/docker-filter", "healthcheck", "--listen", "/safe-socket/docker.sock"]

# The binary built on the host. docker/rootfs/ is always there, so the
# wildcard may match nothing without failing the build (see above).
FROM base AS from-host
COPY docker/rootfs/ target/x86_64-unknown-linux-musl/release/docker-filte[r] /

# The binary built here: on Alpine the native target is musl, and Rust
# links it statically by default.
FROM ${RUST_IMAGE} AS builder
RUN apk add --no-cache musl-dev
WORKDIR /build
COPY Cargo.toml Cargo.lock whitelist.lst ./
COPY src ./src
RUN cargo build --release --locked \
    && cp target/release/docker-filter /docker-filter \
    && /docker-filter --version

# The default: the binary compiled above.
FROM base AS default
COPY --from=builder /docker-filter /docker-filter
