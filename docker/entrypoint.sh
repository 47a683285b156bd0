#!/bin/sh
# Container entrypoint. As the official image's: take the identity Bitwarden's installer asks
# for (LOCAL_UID/LOCAL_GID, root stepping down to nobody/nogroup) under the user name
# `bitwarden` with its home directory, make /etc/bitwarden (its logs and ca-certificates
# directories included) that user's, trust extra CA certificates, then run the service as
# that user. Unlike it, nothing read-only stops start-up (Kubernetes Secrets and ConfigMaps,
# `:ro` binds, a `--read-only` root filesystem): what cannot be changed is left as it is and
# said in one line. The service never runs as root and cannot gain privileges.
set -eu

APP_DIR="${KC_APP_DIR:-/app}"
DATA_DIR="${KC_DATA_DIR:-/etc/bitwarden}"
SERVICE_HOME="${KC_HOME:-/home/bitwarden}"
BINARY="${KC_BINARY:-/usr/local/bin/key-connector}"
SYSTEM_ROOTS=/etc/ssl/certs/ca-certificates.crt

say() {
    echo "entrypoint: $*" >&2
}

if [ "$(id -u)" != "0" ]; then
    # Started with --user (or Kubernetes runAsUser): nothing changes hands; run as given.
    # Such an id gets the image user's home, unless HOME was set to something other than
    # what engines fill in for an id the image does not know (Docker `/`, podman the
    # working directory).
    case "${HOME:-/}" in
    / | "$APP_DIR" | "$APP_DIR/") export HOME="$SERVICE_HOME" ;;
    esac
    cd "$APP_DIR"
    exec "$BINARY" "$@"
fi

uid="${LOCAL_UID:-0}"
gid="${LOCAL_GID:-0}"
for id in "$uid" "$gid"; do
    case "$id" in
    '' | *[!0-9]*)
        say "LOCAL_UID and LOCAL_GID must be numbers (got '$uid' and '$gid')"
        exit 64
        ;;
    esac
done
# Step down from root to nobody/nogroup unless told which user owns the data.
[ "$uid" = "0" ] && uid=65534
[ "$gid" = "0" ] && gid=65534

# Name the ids `bitwarden`, as upstream does (tools that look the user up find it). The image
# has that user; a read-only /etc keeps the image's entry, and the ids work without a name.
if getent passwd bitwarden >/dev/null 2>&1; then
    if ! { groupmod --non-unique --gid "$gid" bitwarden && usermod --non-unique --uid "$uid" --gid "$gid" bitwarden; } >/dev/null 2>&1; then
        if [ "$(id -u bitwarden)" != "$uid" ] || [ "$(id -g bitwarden)" != "$gid" ]; then
            say "could not name $uid:$gid 'bitwarden' (read-only /etc?): the service runs as $uid:$gid unnamed"
        fi
    fi
fi

# Gives $uid:$gid every path under $1 that is not theirs yet; paths that cannot change hands
# (a read-only mount inside a writable volume) are counted and left as they are.
take_ownership() {
    [ -d "$1" ] || return 0
    refused=$(find "$1" \( ! -user "$uid" -o ! -group "$gid" \) -exec chown -h "$uid:$gid" {} + 2>&1 >/dev/null | grep -c . || true)
    if [ "$refused" -gt 0 ]; then
        say "left $refused path(s) under $1 to their owner (read-only): the service can read but not change them"
    fi
}

if mkdir -p "$DATA_DIR/logs" "$DATA_DIR/ca-certificates" 2>/dev/null; then
    take_ownership "$DATA_DIR"
else
    say "$DATA_DIR is read-only: nothing there changes hands, and no log file is written unless $DATA_DIR/logs is writable"
fi

if mkdir -p "$SERVICE_HOME" 2>/dev/null; then
    take_ownership "$SERVICE_HOME"
else
    say "could not create the home directory $SERVICE_HOME (read-only root filesystem?)"
fi
export HOME="$SERVICE_HOME"

# Extra roots (a private CA for the identity server, the database or a key service), as
# upstream. With a read-only root the system store cannot change: the service is given a
# bundle of the system's roots and these instead (SSL_CERT_FILE), written where it can be.
if ls "$DATA_DIR"/ca-certificates/*.crt >/dev/null 2>&1; then
    if ! { cp "$DATA_DIR"/ca-certificates/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; } >/dev/null 2>&1; then
        bundle=""
        for dir in "${TMPDIR:-/tmp}" "$SERVICE_HOME"; do
            if cat "$SYSTEM_ROOTS" "$DATA_DIR"/ca-certificates/*.crt >"$dir/key-connector-ca-bundle.crt" 2>/dev/null; then
                bundle="$dir/key-connector-ca-bundle.crt"
                chmod 0644 "$bundle"
                break
            fi
        done
        if [ -n "$bundle" ]; then
            export SSL_CERT_FILE="$bundle"
            say "the system's CA store is read-only: trusting $DATA_DIR/ca-certificates/*.crt through SSL_CERT_FILE=$bundle"
        else
            say "could not add $DATA_DIR/ca-certificates/*.crt: the system's CA store is read-only and no writable directory was found"
        fi
    fi
fi

cd "$APP_DIR"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --no-new-privs \
    "$BINARY" "$@"
