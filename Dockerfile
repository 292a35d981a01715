# EchoChat server image.
#
#   docker build -t echochat .                      # builds the server in the Swift image
#   docker run --rm -p 7007:7007 echochat --mode chat
#
# Without the Swift image (or any registry but Debian's), build the binary on
# the host and use the `prebuilt` stage:
#   swift build -c release --static-swift-stdlib --product echochat-server
#   docker build --target prebuilt -t echochat .
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Build: release, with the Swift runtime linked in (glibc stays dynamic).
FROM ${SWIFT_IMAGE} AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
# The manifest names the test targets too, so their folders must exist.
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product echochat-server \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/echochat-server" /out/echochat-server

# Runtime: slim Debian, a non-root user, the config in /etc/echochat/.
FROM ${RUNTIME_IMAGE} AS runtime-base
RUN useradd --uid 7007 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin echochat
COPY Configs/echochat.conf /etc/echochat/echochat.conf
USER 7007:7007
EXPOSE 7007
# A plain TCP probe with bash's /dev/tcp: no extra package needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7007"]
# Inside the container only, listen on every interface so -p can reach it.
# SIGTERM (docker stop) is the graceful shutdown; it exits 0.
ENTRYPOINT ["/usr/local/bin/echochat-server", "--config", "/etc/echochat/echochat.conf", "--host", "0.0.0.0"]

# The runtime stage around a binary built on the host (see the top).
FROM runtime-base AS prebuilt
ARG BINARY=.build/x86_64-unknown-linux-gnu/release/echochat-server
COPY ${BINARY} /usr/local/bin/echochat-server

# The default image: the runtime stage around the binary built above.
FROM runtime-base AS runtime
COPY --from=build /out/echochat-server /usr/local/bin/echochat-server
