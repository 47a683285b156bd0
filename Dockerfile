# The Key Connector image: a drop-in for `bitwarden/key-connector`. Every store and key
# provider, the official image's files and defaults (port 5000, data and logs under
# /etc/bitwarden, /app/appsettings.json, OpenSC and YubiHSM 2 PKCS#11 modules at their
# usual paths), run as a non-root user.
#
#   docker build -t key-connector .                                # from source
#   docker build --build-arg YUBIHSM_PKCS11=0 -t key-connector .   # without the YubiHSM module
#
# An already built release binary can be packaged without compiling again: put it in a
# build context next to `docker/` and this file, as `key-connector`, and build the
# `prebuilt` target (`docker build --target prebuilt ...`). Both targets share every other
# layer.

# ---- runtime: what the service needs at run time, shared by both targets ----
FROM debian:bookworm-slim AS runtime

# 1 installs Yubico's PKCS#11 module (yubihsm-shell 2.6, Debian's build from
# bookworm-backports, verified by apt's signed indexes) at upstream's default path
# /usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so; 0 leaves it out.
ARG YUBIHSM_PKCS11=1

# One layer: packages in (without manuals and documentation but their copyright files, as
# Docker's slim image installs them), then everything apt downloaded or indexed out again,
# whatever the base (Docker's slim image cleans up by itself, a debootstrap-made base does
# not). The backports source uses the base's own mirror and is removed again afterwards.
RUN set -eu; \
    . /etc/os-release; \
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/excludes; \
    packages="ca-certificates curl opensc"; \
    if [ "$YUBIHSM_PKCS11" = 1 ]; then \
        mirror=$(sed -n -e 's/^URIs: *\([^ ]*\).*/\1/p' \
            -e "s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) $VERSION_CODENAME .*/\2/p" \
            /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | head -n 1); \
        echo "deb $mirror $VERSION_CODENAME-backports main" > /etc/apt/sources.list.d/backports.list; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    if [ "$YUBIHSM_PKCS11" = 1 ]; then \
        apt-get install -y --no-install-recommends -t "$VERSION_CODENAME-backports" \
            yubihsm-pkcs11 libyubihsm-http2; \
        test -f "/usr/lib/$(uname -m)-linux-gnu/pkcs11/yubihsm_pkcs11.so"; \
        rm /etc/apt/sources.list.d/backports.list; \
    fi; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
        /var/cache/debconf/*-old /var/lib/dpkg/*-old; \
    groupadd --system --non-unique --gid 65534 bitwarden; \
    useradd --system --no-log-init --non-unique --uid 65534 --gid bitwarden \
        --home-dir /home/bitwarden --shell /usr/sbin/nologin bitwarden; \
    mkdir -p /home/bitwarden /etc/bitwarden/logs /etc/bitwarden/ca-certificates; \
    chown 65534:65534 /home/bitwarden

LABEL org.opencontainers.image.title="key-connector" \
      org.opencontainers.image.description="A drop-in, self-hosted Bitwarden Key Connector"
COPY docker/appsettings.json /app/appsettings.json
COPY --chmod=0755 docker/entrypoint.sh /entrypoint.sh

ENV ASPNETCORE_URLS=http://+:5000
WORKDIR /app
EXPOSE 5000
VOLUME ["/etc/bitwarden"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["/usr/local/bin/key-connector", "healthcheck"]
# The entrypoint starts as root only to take the LOCAL_UID/LOCAL_GID identity (as the official
# image does for Bitwarden's installer), give it what it writes under /etc/bitwarden, trust
# extra CA certificates, and then runs the service as that non-root user with no way to gain
# privileges. Started with --user, it runs as given.
ENTRYPOINT ["/entrypoint.sh"]

# ---- prebuilt: the runtime plus a release binary from the build context ----
FROM runtime AS prebuilt
COPY --chmod=0755 key-connector /usr/local/bin/key-connector

# ---- build: the release binary from source ----
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY examples ./examples
RUN cargo build --profile dist --locked --bin key-connector \
    && cp target/dist/key-connector /key-connector

# ---- the default target: the runtime plus the binary built above ----
FROM runtime AS image
COPY --from=build --chmod=0755 /key-connector /usr/local/bin/key-connector
