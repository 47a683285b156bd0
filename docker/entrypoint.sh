#!/bin/sh
# Container entrypoint: take the identity the official image's installer expects
# (LOCAL_UID/LOCAL_GID, default nobody/nogroup), own the data directory, trust extra CA
# certificates, then run the service as that user. Never runs the service as root.
set -eu

APP_DIR="${KC_APP_DIR:-/app}"
DATA_DIR="${KC_DATA_DIR:-/etc/bitwarden}"
BINARY="${KC_BINARY:-/usr/local/bin/key-connector}"

if [ "$(id -u)" != "0" ]; then
    # Started with --user: nothing to change hands; run as given.
    cd "$APP_DIR"
    exec "$BINARY" "$@"
fi

uid="${LOCAL_UID:-0}"
gid="${LOCAL_GID:-0}"
# Step down from root to nobody/nogroup unless told which user owns the data.
[ "$uid" = "0" ] && uid=65534
[ "$gid" = "0" ] && gid=65534

mkdir -p "$DATA_DIR/logs" "$DATA_DIR/ca-certificates"
chown -R "$uid:$gid" "$DATA_DIR"

# Extra roots (a private CA for the identity server or the database), as upstream.
if ls "$DATA_DIR"/ca-certificates/*.crt >/dev/null 2>&1 && command -v update-ca-certificates >/dev/null; then
    cp "$DATA_DIR"/ca-certificates/*.crt /usr/local/share/ca-certificates/ \
        && update-ca-certificates >/dev/null 2>&1 || echo "entrypoint: could not add the CA certificates" >&2
fi

cd "$APP_DIR"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all \
    "$BINARY" "$@"
