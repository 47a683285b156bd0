#!/usr/bin/env bash
# End to end with a real Bitwarden client: the official CLI (`bw`) logs in through
# Vaultwarden's SSO with Key Connector support (dani-garcia/vaultwarden#7419), and this Key
# Connector holds the user's key. For each store (SQLite, then PostgreSQL) it shows that:
#   1. a new SSO user is enrolled: the CLI POSTs the key here and completes the login;
#   2. an item created by `bw` survives a logout: the next SSO login GETs the key here and
#      `bw list items` decrypts the item;
#   3. with this Key Connector stopped the login fails with the CLI's Key Connector error,
#      and once it is back the same user logs in and finds the item.
# Three local servers stand around the CLI: a one-user OpenID Connect provider
# (oidc-provider.mjs) as the company's identity provider, Vaultwarden, and this Key Connector.
# The browser step of `bw login --sso` is done by curl: a stand-in `xdg-open` hands over the
# URL the CLI would open, and curl follows the redirects the web vault would start, through
# Vaultwarden and the identity provider, to the CLI's callback on localhost. The released CLI
# calls only https:// URLs, so Vaultwarden and this service serve HTTPS under a CA of the run's.
#
# Inputs (environment); without the first four it prints "SKIPPED: ..." and exits 0:
#   VAULTWARDEN_BIN    Vaultwarden built from that pull request (`--features sqlite`)
#   BW_CLI             the CLI: node_modules/.bin/bw of `npm install @bitwarden/cli@2026.6.0`
#                      (later ones fail against that Vaultwarden: see tests/e2e/README.md)
#   NODE22             Node.js 22 or later to run the CLI and the provider with
#                      (default: `node` on PATH, if it is 22 or later)
#   OIDC_PROVIDER_DIR  a directory where `npm install oidc-provider` was run
#   KEY_CONNECTOR_BIN  this service (default: target/release/key-connector, else
#                      target/debug/key-connector, of this repository)
#   E2E_STORES         stores to run, default "sqlite postgresql"
#   E2E_POSTGRES       server for the PostgreSQL run, in the service's Npgsql form without
#                      Database (default "Host=127.0.0.1;Port=5432;Username=postgres"); a
#                      database is created for the run and dropped after it. A server that
#                      cannot be reached skips that store with a printed reason.
# The CLI's callback listens on localhost:8065, which must be free.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)

skip() {
    echo "SKIPPED: Vaultwarden + Bitwarden CLI end-to-end run because $*"
    exit 0
}
say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

# ---- inputs -------------------------------------------------------------------------------
[ -n "${VAULTWARDEN_BIN:-}" ] || skip "VAULTWARDEN_BIN is not set (a Vaultwarden binary with Key Connector support, dani-garcia/vaultwarden#7419)"
[ -x "$VAULTWARDEN_BIN" ] || skip "VAULTWARDEN_BIN=$VAULTWARDEN_BIN is not an executable file"
[ -n "${BW_CLI:-}" ] || skip "BW_CLI is not set (the Bitwarden CLI: node_modules/.bin/bw of @bitwarden/cli)"
[ -e "$BW_CLI" ] || skip "BW_CLI=$BW_CLI does not exist"
[ -n "${OIDC_PROVIDER_DIR:-}" ] || skip "OIDC_PROVIDER_DIR is not set (where 'npm install oidc-provider' was run)"
[ -d "$OIDC_PROVIDER_DIR/node_modules/oidc-provider" ] || skip "OIDC_PROVIDER_DIR=$OIDC_PROVIDER_DIR has no node_modules/oidc-provider"
node_bin=${NODE22:-$(command -v node || true)}
[ -n "$node_bin" ] && [ -x "$node_bin" ] || skip "no Node.js: set NODE22 to a Node.js 22 binary"
node_major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 22 ] || skip "$node_bin is Node.js $node_major; the Bitwarden CLI needs 22 or later (set NODE22)"
kc_bin=${KEY_CONNECTOR_BIN:-}
if [ -z "$kc_bin" ]; then
    for candidate in "$repo_root/target/release/key-connector" "$repo_root/target/debug/key-connector"; do
        if [ -x "$candidate" ]; then kc_bin=$candidate; break; fi
    done
fi
[ -n "$kc_bin" ] && [ -x "$kc_bin" ] || skip "no Key Connector binary: build it (cargo build --release) or set KEY_CONNECTOR_BIN"
command -v curl > /dev/null || skip "curl is not installed"
command -v openssl > /dev/null || skip "openssl is not installed"
stores=${E2E_STORES:-sqlite postgresql}
postgres_server=${E2E_POSTGRES:-Host=127.0.0.1;Port=5432;Username=postgres}

# ---- scratch space and cleanup ------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kc-vaultwarden-e2e.XXXXXX")
pids=()
postgres_db=
stop_servers() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2> /dev/null || true
    done
    pids=()
}
cleanup() {
    stop_servers
    if [ -n "$postgres_db" ]; then
        psql_server -q -c "DROP DATABASE IF EXISTS \"$postgres_db\"" > /dev/null 2>&1 || true
    fi
    if [ -n "${E2E_KEEP:-}" ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$node_bin" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

wait_for_url() { # url, what, log
    local i
    for i in $(seq 1 300); do
        if curl -fsS --cacert "$work/ca.pem" -o /dev/null "$1" 2> /dev/null; then return 0; fi
        sleep 0.2
    done
    tail -n 30 "$3" >&2 || true
    fail "$2 did not answer at $1"
}

"$node_bin" -e 'require("net").createServer().on("error",()=>process.exit(1)).listen(8065,"localhost",function(){this.close()})' \
    || fail "localhost:8065 is in use; the Bitwarden CLI's SSO callback needs it"

# The CLI opens the SSO page with xdg-open: this stand-in writes the URL for the script.
mkdir -p "$work/bin"
cat > "$work/bin/xdg-open" << 'EOF'
#!/bin/sh
printf '%s\n' "$1" > "$SSO_URL_FILE.tmp" && mv "$SSO_URL_FILE.tmp" "$SSO_URL_FILE"
EOF
chmod +x "$work/bin/xdg-open"
export SSO_URL_FILE="$work/sso-url"

# The Key Connector's RSA key: a PFX made by OpenSSL, as the installer's would be.
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 2 -subj "/CN=Bitwarden Key Connector" \
    -keyout "$work/bwkc.key" -out "$work/bwkc.crt" 2> /dev/null
pfx_password=e2e-pfx-password
openssl pkcs12 -export -out "$work/bwkc.pfx" -inkey "$work/bwkc.key" -in "$work/bwkc.crt" \
    -passout "pass:$pfx_password"

# The release CLI refuses any URL but https:// ("Insecure URL not allowed"), for the server and
# for the Key Connector alike: both serve HTTPS with a certificate from a CA of the run's own,
# which the CLI (NODE_EXTRA_CA_CERTS), this service (SSL_CERT_FILE) and curl trust.
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 2 -subj "/CN=kc e2e test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2> /dev/null
openssl req -newkey rsa:2048 -sha256 -nodes -subj "/CN=localhost" \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2> /dev/null
printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 > "$work/tls.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$work/tls.ext" -out "$work/tls.pem" 2> /dev/null
export NODE_EXTRA_CA_CERTS="$work/ca.pem"

# PostgreSQL by its Npgsql connection string: Host, Port, Username, Password.
psql_server() {
    local host=127.0.0.1 port=5432 user=postgres password= pair key value
    local IFS=';'
    for pair in $postgres_server; do
        key=$(printf '%s' "${pair%%=*}" | tr '[:upper:]' '[:lower:]' | tr -d ' ')
        value=${pair#*=}
        case $key in
            host | server) host=$value ;;
            port) port=$value ;;
            username | user | userid | "user id") user=$value ;;
            password) password=$value ;;
        esac
    done
    unset IFS
    PGPASSWORD=$password psql -h "$host" -p "$port" -U "$user" -d postgres -v ON_ERROR_STOP=1 "$@"
}

# ---- the three servers ---------------------------------------------------------------------
oidc_client_id=vaultwarden
oidc_client_secret=e2e-oidc-client-secret
user_email=kc-user@example.com

start_oidc() { # dir
    oidc_port=$(free_port)
    OIDC_PROVIDER_DIR="$OIDC_PROVIDER_DIR" OIDC_PORT=$oidc_port \
        OIDC_CLIENT_ID=$oidc_client_id OIDC_CLIENT_SECRET=$oidc_client_secret \
        OIDC_REDIRECT_URI="$vw_url/identity/connect/oidc-signin" \
        OIDC_USER_EMAIL=$user_email \
        "$node_bin" "$script_dir/oidc-provider.mjs" > "$1/oidc.log" 2>&1 &
    pids+=($!)
    wait_for_url "http://127.0.0.1:$oidc_port/.well-known/openid-configuration" "the OIDC provider" "$1/oidc.log"
}

start_vaultwarden() { # dir
    mkdir -p "$1/vaultwarden"
    (
        cd "$1/vaultwarden"
        exec env DATA_FOLDER="$1/vaultwarden" ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT="$vw_port" \
            ROCKET_TLS="{certs=\"$work/tls.pem\",key=\"$work/tls.key\"}" \
            DOMAIN="$vw_url" WEB_VAULT_ENABLED=false \
            SSO_ENABLED=true SSO_AUTHORITY="http://127.0.0.1:$oidc_port" \
            SSO_CLIENT_ID=$oidc_client_id SSO_CLIENT_SECRET=$oidc_client_secret \
            KEY_CONNECTOR_ENABLED=true KEY_CONNECTOR_URL="$kc_url" \
            "$VAULTWARDEN_BIN"
    ) > "$1/vaultwarden.log" 2>&1 &
    pids+=($!)
    wait_for_url "$vw_url/alive" "Vaultwarden" "$1/vaultwarden.log"
}

start_key_connector() { # dir, store
    local database
    case $2 in
        sqlite) database=(keyConnectorSettings__database__provider=sqlite
            "keyConnectorSettings__database__sqliteConnectionString=Data Source=$1/key-connector.db") ;;
        postgresql) database=(keyConnectorSettings__database__provider=postgresql
            "keyConnectorSettings__database__postgreSqlConnectionString=$postgres_server;Database=$postgres_db") ;;
    esac
    # Per-request lines (tower_http at debug, with the request span) show every call the CLI made.
    env RUST_LOG=info,tower_http=debug,key_connector=debug ASPNETCORE_URLS="$kc_url" \
        Kestrel__Certificates__Default__Path="$work/tls.pem" \
        Kestrel__Certificates__Default__KeyPath="$work/tls.key" \
        SSL_CERT_FILE="$work/ca.pem" \
        keyConnectorSettings__webVaultUri="$vw_url" \
        keyConnectorSettings__identityServerUri="$vw_url/identity" \
        "${database[@]}" \
        keyConnectorSettings__rsaKey__provider=certificate \
        keyConnectorSettings__certificate__provider=filesystem \
        keyConnectorSettings__certificate__filesystemPath="$work/bwkc.pfx" \
        keyConnectorSettings__certificate__filesystemPassword="$pfx_password" \
        "$kc_bin" >> "$1/key-connector.log" 2>&1 &
    kc_pid=$!
    pids+=("$kc_pid")
    wait_for_url "$kc_url/health" "the Key Connector" "$1/key-connector.log"
}

stop_key_connector() {
    kill -TERM "$kc_pid"
    wait "$kc_pid" || fail "the Key Connector did not exit 0 on SIGTERM"
}

# ---- the client ------------------------------------------------------------------------------
bw_dir="$work/bw"
login_count=0
bw() {
    PATH="$work/bin:$(dirname "$node_bin"):$PATH" BITWARDENCLI_APPDATA_DIR="$bw_dir" "$BW_CLI" "$@"
}

# The requests for /user-keys that reached the Key Connector: "METHOD status", one a line.
user_key_requests() { # dir
    sed -n 's/.*request{method=\([A-Z]*\) path=\/user-keys [^}]*}: tower_http::trace::on_response: .* status=\([0-9]*\).*/\1 \2/p' \
        "$1/key-connector.log"
}

# Counts the Key Connector's audit lines for one action and outcome.
audits() { # dir, action, outcome
    grep -c "action=\"\?$2\"\?.*outcome=\"\?$3\"\?" "$1/key-connector.log" || true
}

# `bw login --sso`, with the browser's part done by curl. Leaves the CLI's output in
# $1/login.out and $1/login.err and returns its exit code.
sso_login() { # dir
    local dir=$1 url query authorize rc i
    rm -f "$SSO_URL_FILE"
    # The first login asks to confirm the Key Connector's domain (a list prompt whose first
    # choice is "Confirm"): one newline answers it. The FIFO keeps the CLI's input open.
    rm -f "$dir/login.in"
    mkfifo "$dir/login.in"
    bw login --sso --raw < "$dir/login.in" > "$dir/login.out" 2> "$dir/login.err" &
    local bw_pid=$!
    exec 3> "$dir/login.in"
    printf '\n' >&3
    for i in $(seq 1 300); do
        [ -s "$SSO_URL_FILE" ] && break
        kill -0 "$bw_pid" 2> /dev/null || break
        sleep 0.2
    done
    [ -s "$SSO_URL_FILE" ] || {
        exec 3>&-
        cat "$dir/login.err" >&2
        fail "the CLI did not open an SSO page"
    }
    url=$(cat "$SSO_URL_FILE")
    # What the web vault's SSO page does with that URL: ask Vaultwarden for an SSO token,
    # add the organization identifier to the state, and send the browser to /connect/authorize.
    local sso_token
    sso_token=$(curl -fsS --cacert "$work/ca.pem" "$vw_url/identity/sso/prevalidate?domainHint=e2e" \
        | "$node_bin" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
    authorize=$("$node_bin" -e '
        const [url, base, token] = process.argv.slice(1);
        const q = new URLSearchParams(new URL(url).hash.replace(/^#\/sso\?/, ""));
        const a = new URL(base + "/identity/connect/authorize");
        a.search = new URLSearchParams({
            client_id: q.get("clientId"), redirect_uri: q.get("redirectUri"),
            response_type: "code", scope: "api offline_access",
            state: q.get("state") + "_identifier=e2e", code_challenge: q.get("codeChallenge"),
            code_challenge_method: "S256", response_mode: "query", domain_hint: "e2e",
            ssoToken: token,
        }).toString();
        console.log(a.href);' "$url" "$vw_url" "$sso_token")
    curl -sS --cacert "$work/ca.pem" -L --max-redirs 10 -c "$dir/cookies" -b "$dir/cookies" -o "$dir/sso-callback.html" \
        -w '%{http_code} %{url_effective}\n' "$authorize" > "$dir/sso-browser.txt" || true
    rc=0
    wait "$bw_pid" || rc=$?
    exec 3>&-
    rm -f "$dir/login.in"
    login_count=$((login_count + 1))
    cp "$dir/login.out" "$dir/login-$login_count.out"
    cp "$dir/login.err" "$dir/login-$login_count.err"
    grep -q "Successfully authenticated" "$dir/sso-callback.html" || {
        cat "$dir/sso-browser.txt" "$dir/sso-callback.html" >&2
        fail "the SSO round trip did not reach the CLI's callback"
    }
    return "$rc"
}

# sso_login, tried again when the CLI failed on its own before calling the Key Connector.
# CLI 2026.6.0 sometimes loses its fresh access token during a login ("Failed to decode access
# token: Access token not found", then "Key Connector error" or nothing more) before it sends
# anything here: about one login in five on a busy machine, first logins included. Only that
# case, with no request reaching this service, is tried again, twice at most.
sso_login_retried() { # dir
    local before attempt rc
    for attempt in 1 2 3; do
        before=$(user_key_requests "$1" | wc -l)
        rc=0
        sso_login "$1" || rc=$?
        [ "$rc" != 0 ] && grep -q "Access token not found" "$1/login.err" \
            && [ "$(user_key_requests "$1" | wc -l)" = "$before" ] && [ "$attempt" != 3 ] || return "$rc"
        echo "    (the CLI lost its access token before calling the Key Connector; logging in again)"
        bw logout > /dev/null 2>&1 || true
    done
}

login_or_fail() { # dir, message
    sso_login_retried "$1" && return 0
    cat "$1/login.err" >&2
    if grep -q KeyIdBackfillError "$1/login.err"; then
        echo "(this CLI records a user key id with POST /api/accounts/key-management/user-key-id" \
            "after every login, which this Vaultwarden answers 404: use @bitwarden/cli 2026.6.0)" >&2
    fi
    fail "$2"
}

# ---- one run per store ---------------------------------------------------------------------
run_store() { # store
    local store=$1 dir="$work/$1" session out item_name rc
    mkdir -p "$dir"
    bw_dir="$dir/bw"
    mkdir -p "$bw_dir"
    vw_port=$(free_port)
    kc_port=$(free_port)
    vw_url="https://127.0.0.1:$vw_port"
    kc_url="https://127.0.0.1:$kc_port"
    say "$store: OIDC provider, Vaultwarden on $vw_port, Key Connector on $kc_port"
    start_oidc "$dir"
    start_vaultwarden "$dir"
    start_key_connector "$dir" "$store"

    bw config server "$vw_url" > /dev/null

    say "$store: a new SSO user enrolls"
    login_or_fail "$dir" "$store: the first SSO login failed"
    session=$(tail -n 1 "$dir/login.out")
    [ -n "$session" ] || fail "$store: the first login printed no session key"
    [ "$(audits "$dir" create ok)" = 1 ] || {
        cat "$dir/key-connector.log" >&2
        fail "$store: the Key Connector logged no successful POST /user-keys"
    }
    if command -v sqlite3 > /dev/null; then
        local vw_user
        vw_user=$(sqlite3 "$dir/vaultwarden/db.sqlite3" "SELECT uuid FROM users WHERE email = '$user_email' AND uses_key_connector")
        [ -n "$vw_user" ] || fail "$store: Vaultwarden does not mark the user as a Key Connector user"
        grep -qi "user_id=\"\?$vw_user" "$dir/key-connector.log" \
            || fail "$store: the key stored is not for Vaultwarden's user $vw_user"
        case $store in
            sqlite) [ "$(sqlite3 "$dir/key-connector.db" "SELECT count(*) FROM UserKeys WHERE upper(Id) = upper('$vw_user')")" = 1 ] ;;
            postgresql) [ "$(psql_server -d "$postgres_db" -tAc "SELECT count(*) FROM \"UserKeys\" WHERE \"Id\" = '$vw_user'")" = 1 ] ;;
        esac || fail "$store: no UserKeys row for $vw_user"
        echo "    user $vw_user enrolled; its key is in the Key Connector's $store database"
    else
        echo "    (sqlite3 is not installed: the database checks are skipped)"
    fi

    say "$store: bw creates an item, logs out, logs in again and decrypts it"
    item_name="e2e item $store $RANDOM"
    bw get template item --session "$session" \
        | "$node_bin" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const i=JSON.parse(s);i.name=process.argv[1];i.notes="kept by the Key Connector";i.login=null;i.type=2;i.secureNote={type:0};console.log(JSON.stringify(i))})' "$item_name" \
        | bw encode | bw create item --session "$session" > /dev/null
    bw logout > /dev/null
    login_or_fail "$dir" "$store: the second SSO login failed"
    session=$(tail -n 1 "$dir/login.out")
    [ "$(audits "$dir" read ok)" = 1 ] || fail "$store: the Key Connector logged no successful GET /user-keys"
    bw list items --session "$session" | grep -qF "\"name\":\"$item_name\"" \
        || fail "$store: bw list items does not show '$item_name'"
    echo "    read back: $item_name"

    say "$store: with the Key Connector stopped the login fails"
    bw logout > /dev/null
    stop_key_connector
    rc=0
    sso_login_retried "$dir" || rc=$?
    [ "$rc" != 0 ] || fail "$store: the login succeeded without the Key Connector"
    out=$(cat "$dir/login.out" "$dir/login.err")
    printf '%s\n' "$out" | grep -q "Key Connector error" \
        && printf '%s\n' "$out" | grep -qF "request to $kc_url/user-keys failed" || {
        printf '%s\n' "$out" >&2
        fail "$store: the failed login did not report the Key Connector"
    }
    echo "    the CLI said: $(printf '%s\n' "$out" | grep -F "request to $kc_url/user-keys failed" | head -n 1)"
    echo "                  $(printf '%s\n' "$out" | grep "Key Connector error" | tail -n 1)"
    echo "    bw status: $(bw status | "$node_bin" -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).status')"

    say "$store: the Key Connector is back; the same user logs in with nothing lost"
    start_key_connector "$dir" "$store"
    bw logout > /dev/null 2>&1 || true
    login_or_fail "$dir" "$store: the login after the restart failed"
    session=$(tail -n 1 "$dir/login.out")
    bw list items --session "$session" | grep -qF "\"name\":\"$item_name\"" \
        || fail "$store: the item is gone after the Key Connector's restart"
    [ "$(audits "$dir" create ok)" = 1 ] || fail "$store: the user was enrolled again"
    echo "    read back: $item_name"
    bw logout > /dev/null
    stop_key_connector
    echo "    requests for /user-keys the Key Connector answered:" $(user_key_requests "$dir" | paste -sd, -)
    ! user_key_requests "$dir" | grep -qv ' 200$' || fail "$store: the Key Connector answered a /user-keys request with an error"
    stop_servers
    say "$store: passed"
}

say "Vaultwarden: $("$VAULTWARDEN_BIN" --version 2> /dev/null | head -n 1)"
say "Bitwarden CLI: $(bw --version) on Node.js $("$node_bin" --version)"
say "oidc-provider: $("$node_bin" -p 'require(process.argv[1]).version' "$(cd "$OIDC_PROVIDER_DIR" && pwd)/node_modules/oidc-provider/package.json")"
say "Key Connector: $kc_bin"

passed=0
skipped=0
for store in $stores; do
    case $store in
        sqlite) ;;
        postgresql)
            if ! command -v psql > /dev/null; then
                echo "SKIPPED: the PostgreSQL run because psql is not installed"
                skipped=$((skipped + 1))
                continue
            fi
            if ! psql_server -q -c 'SELECT 1' > /dev/null 2>&1; then
                echo "SKIPPED: the PostgreSQL run because no server answers at E2E_POSTGRES ($postgres_server)"
                skipped=$((skipped + 1))
                continue
            fi
            postgres_db="kc_e2e_$$"
            psql_server -q -c "CREATE DATABASE \"$postgres_db\"" > /dev/null
            ;;
        *) fail "unknown store '$store' in E2E_STORES (sqlite, postgresql)" ;;
    esac
    run_store "$store"
    passed=$((passed + 1))
done
echo "$passed passed, 0 failed, $skipped skipped"
