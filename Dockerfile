# EchoChat server image.
#   docker build -t echochat .
#   docker run --rm -p 7007:7007 echochat --mode chat
# Build stage: the official Swift image, release, Swift runtime linked in.
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --static-swift-stdlib --product echochat-server \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/echochat-server" /out/echochat-server

# Runtime stage: slim Debian, non-root, config in /etc/echochat/.
FROM debian:bookworm-slim
RUN useradd --system --uid 7007 --no-create-home --shell /usr/sbin/nologin echochat
COPY --from=build /out/echochat-server /usr/local/bin/echochat-server
COPY Configs/echochat.conf /etc/echochat/echochat.conf
USER echochat
EXPOSE 7007
# A plain TCP probe with bash's /dev/tcp: no extra package needed.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7007"]
# Inside the container only, listen on every interface so -p can reach it.
ENTRYPOINT ["/usr/local/bin/echochat-server", "--config", "/etc/echochat/echochat.conf", "--host", "0.0.0.0"]
