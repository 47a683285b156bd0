# What bench/run, bench/soak and bench/instructions share; sourced by them, not run.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_service_settings WORK ISSUER_PORT: makes a PFX certificate in WORK and exports the
# settings of a service that wraps its keys with it, trusts the token issuer on ISSUER_PORT
# and keeps a SQLite database (WORK/keys.db) or a JSON file (WORK/data.json) in WORK.
bench_service_settings() {
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1/key.pem" -out "$1/cert.pem" \
        -subj "/CN=bench" -days 2 2>/dev/null
    openssl pkcs12 -export -inkey "$1/key.pem" -in "$1/cert.pem" -out "$1/key.pfx" -passout pass:bench
    export keyConnectorSettings__webVaultUri="https://vault.example.test"
    export keyConnectorSettings__identityServerUri="http://127.0.0.1:$2"
    export keyConnectorSettings__rsaKey__provider=certificate
    export keyConnectorSettings__certificate__provider=filesystem
    export keyConnectorSettings__certificate__filesystemPath="$1/key.pfx"
    export keyConnectorSettings__certificate__filesystemPassword=bench
    export keyConnectorSettings__database__provider=sqlite
    export keyConnectorSettings__database__sqliteConnectionString="Data Source=$1/keys.db"
    export keyConnectorSettings__database__jsonFilePath="$1/data.json"
}
