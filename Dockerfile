# The Key Connector image: every store and key provider, running as a non-root user, with
# its data under /etc/bitwarden like the official image, listening on port 5000.
#
#   docker build -t key-connector .
#
# Build stage: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin key-connector \
    && cp target/release/key-connector /key-connector

# Run stage: Debian slim (glibc, as the binary and PKCS#11 modules need), CA roots for
# TLS to databases and key services, OpenSC's PKCS#11 module as upstream ships.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="key-connector" \
      org.opencontainers.image.description="A drop-in, self-hosted Bitwarden Key Connector"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates opensc \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /key-connector /usr/local/bin/key-connector
COPY docker/appsettings.json /app/appsettings.json
COPY docker/entrypoint.sh /entrypoint.sh
RUN chmod 0755 /entrypoint.sh /usr/local/bin/key-connector \
    && mkdir -p /etc/bitwarden

ENV ASPNETCORE_URLS=http://+:5000
WORKDIR /app
EXPOSE 5000
VOLUME ["/etc/bitwarden"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["/usr/local/bin/key-connector", "healthcheck"]
# The entrypoint starts as root only to take the LOCAL_UID/LOCAL_GID identity (as the official
# image does for Bitwarden's installer), give it /etc/bitwarden, trust extra CA certificates,
# and then runs the service as that non-root user. Started with --user, it runs as given.
ENTRYPOINT ["/entrypoint.sh"]
