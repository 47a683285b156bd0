//! The three dialects read as operators write them, and every refusal path.

use super::*;
use secrecy::ExposeSecret;

fn tcp(host: &str, port: Option<u16>, instance: Option<&str>) -> SqlEndpoint {
    SqlEndpoint::Tcp {
        host: host.into(),
        port,
        instance: instance.map(Into::into),
    }
}

#[test]
fn npgsql_strings_as_operators_write_them() {
    let c = parse(
            SqlDialect::PostgreSql,
            "Host=db.internal;Port=6432;Database=keyconnector;Username=kc;Password='p;w''d';SSL Mode=VerifyFull;Root Certificate=/etc/ssl/ca.pem;Timeout=7;Command Timeout=9;Maximum Pool Size=25;Minimum Pool Size=2;Application Name=kc",
        )
        .unwrap();
    assert_eq!(c.endpoint, tcp("db.internal", Some(6432), None));
    assert_eq!(c.database, "keyconnector");
    assert_eq!(c.user.as_deref(), Some("kc"));
    assert_eq!(c.password.unwrap().expose_secret(), "p;w'd");
    assert_eq!(c.tls.mode, SqlTlsMode::VerifyFull);
    assert_eq!(
        c.tls.root_certificate,
        Some(PathBuf::from("/etc/ssl/ca.pem"))
    );
    assert_eq!(
        c.pool,
        SqlPool {
            max_connections: 25,
            min_connections: 2,
            connect_timeout: Duration::from_secs(7),
            command_timeout: Duration::from_secs(9),
        }
    );
    assert_eq!(c.application_name.as_deref(), Some("kc"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn npgsql_aliases_defaults_sockets_and_inline_ports() {
    let c = parse(
        SqlDialect::PostgreSql,
        "server=pg:5433;DB=kc;User ID=u;PWD=x",
    )
    .unwrap();
    assert_eq!(c.endpoint, tcp("pg", Some(5433), None));
    assert_eq!(c.tls.mode, SqlTlsMode::Prefer, "Npgsql's default");
    assert_eq!(c.pool.max_connections, DEFAULT_MAX_POOL_SIZE);
    assert_eq!(c.pool.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    let c = parse(
        SqlDialect::PostgreSql,
        "Host=/var/run/postgresql;Database=kc",
    )
    .unwrap();
    assert_eq!(
        c.endpoint,
        SqlEndpoint::Socket("/var/run/postgresql".into())
    );
    let c = parse(
        SqlDialect::PostgreSql,
        "Host=[::1]:5432;Database=kc;Username=u",
    )
    .unwrap();
    assert_eq!(c.endpoint, tcp("::1", Some(5432), None));
    let c = parse(SqlDialect::PostgreSql, "Host=::1;Database=kc;Username=u").unwrap();
    assert_eq!(c.endpoint, tcp("::1", None, None));
}

#[test]
fn mysqlconnector_strings_as_operators_write_them() {
    let c = parse(
            SqlDialect::MySql,
            "Server=mariadb;Port=3307;Database=kc;Uid=kc;Pwd=secret;SslMode=Required;SslCa=/ca.pem;Connection Timeout=3;Default Command Timeout=4;MaxPoolSize=5;AllowPublicKeyRetrieval=true",
        )
        .unwrap();
    assert_eq!(c.endpoint, tcp("mariadb", Some(3307), None));
    assert_eq!(c.user.as_deref(), Some("kc"));
    assert_eq!(c.tls.mode, SqlTlsMode::Require);
    assert_eq!(c.tls.root_certificate, Some(PathBuf::from("/ca.pem")));
    assert_eq!(c.pool.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.pool.command_timeout, Duration::from_secs(4));
    assert_eq!(c.pool.max_connections, 5);
    assert_eq!(
        c.warnings.len(),
        1,
        "AllowPublicKeyRetrieval is reported as ignored"
    );
    assert!(c.warnings[0].contains("allowpublickeyretrieval"));
    for (mode, expected) in [
        ("None", SqlTlsMode::Disable),
        ("Preferred", SqlTlsMode::Prefer),
        ("VerifyCA", SqlTlsMode::VerifyCa),
        ("VerifyFull", SqlTlsMode::VerifyFull),
    ] {
        let c = parse(
            SqlDialect::MySql,
            &format!("Server=m;Database=d;User=u;SslMode={mode}"),
        )
        .unwrap();
        assert_eq!(c.tls.mode, expected, "{mode}");
    }
    let c = parse(
        SqlDialect::MySql,
        "Server=/run/mysqld/mysqld.sock;Protocol=Unix;Database=d;User=u",
    )
    .unwrap();
    assert_eq!(
        c.endpoint,
        SqlEndpoint::Socket("/run/mysqld/mysqld.sock".into())
    );
}

#[test]
fn sqlclient_server_forms() {
    let parse_server = |server: &str| {
        parse(
            SqlDialect::SqlServer,
            &format!("Server={server};Database=kc;User Id=sa;Password=x"),
        )
        .unwrap()
        .endpoint
    };
    assert_eq!(
        parse_server("tcp:sql.example.com,1444"),
        tcp("sql.example.com", Some(1444), None)
    );
    assert_eq!(
        parse_server("sql.example.com"),
        tcp("sql.example.com", None, None)
    );
    assert_eq!(parse_server("sql\\PROD"), tcp("sql", None, Some("PROD")));
    assert_eq!(parse_server("sql\\PROD,1500"), tcp("sql", Some(1500), None));
    assert_eq!(parse_server("."), tcp("localhost", None, None));
    assert_eq!(parse_server("(local)"), tcp("localhost", None, None));
    let c = parse(
            SqlDialect::SqlServer,
            "Data Source=tcp:db,1433;Initial Catalog=kc;UID=kc;PWD=x;MultipleActiveResultSets=true;Max Pool Size=7;Connect Timeout=8",
        )
        .unwrap();
    assert_eq!(c.database, "kc");
    assert_eq!(c.pool.max_connections, 7);
    assert_eq!(c.pool.connect_timeout, Duration::from_secs(8));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}

#[test]
fn sqlclient_encryption_follows_microsoft_data_sqlclient() {
    let mode = |extra: &str| {
        parse(
            SqlDialect::SqlServer,
            &format!("Server=s;Database=d;User Id=u;Password=p;{extra}"),
        )
        .unwrap()
        .tls
        .mode
    };
    assert_eq!(
        mode(""),
        SqlTlsMode::VerifyFull,
        "encrypted and verified by default"
    );
    assert_eq!(mode("TrustServerCertificate=True"), SqlTlsMode::Require);
    assert_eq!(mode("Encrypt=false"), SqlTlsMode::Prefer);
    assert_eq!(
        mode("Encrypt=Mandatory;TrustServerCertificate=false"),
        SqlTlsMode::VerifyFull
    );
    let error = parse(
        SqlDialect::SqlServer,
        "Server=s;Database=d;User Id=u;Encrypt=Strict",
    )
    .unwrap_err();
    assert!(error.contains("Strict"), "{error}");
}

#[test]
fn what_cannot_be_honoured_is_refused_by_name() {
    for (dialect, text, named) in [
        (
            SqlDialect::SqlServer,
            "Server=s;Database=d;Integrated Security=true",
            "integrated security",
        ),
        (
            SqlDialect::SqlServer,
            "Server=s;Database=d;Trusted_Connection=yes",
            "trusted_connection",
        ),
        (
            SqlDialect::SqlServer,
            "Server=s;Database=d;User Id=u;Authentication=ActiveDirectoryMSI",
            "authentication",
        ),
        (
            SqlDialect::SqlServer,
            "Server=np:\\\\.\\pipe\\sql;Database=d;User Id=u",
            "server",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Integrated Security=true",
            "integrated security",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=a,b;Database=d;Username=u",
            "host",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;Search Path=kc",
            "search path",
        ),
        (
            SqlDialect::MySql,
            "Server=h;Database=d;User=u;GuidFormat=Binary16",
            "guidformat",
        ),
        (
            SqlDialect::MySql,
            "Server=h;Database=d;User=u;Protocol=Pipe",
            "protocol",
        ),
    ] {
        let error = parse(dialect, text).unwrap_err();
        assert!(
            error.to_ascii_lowercase().contains(named),
            "{text}: {error}"
        );
    }
    // Saying "no" to a refused feature is fine.
    parse(
        SqlDialect::SqlServer,
        "Server=s;Database=d;User Id=u;Integrated Security=False",
    )
    .unwrap();
}

#[test]
fn missing_and_malformed_values_are_explained_without_echoing_secrets() {
    for (dialect, text, expected) in [
        (SqlDialect::PostgreSql, "Database=d;Username=u", "no server"),
        (SqlDialect::PostgreSql, "Host=h;Username=u", "no database"),
        (SqlDialect::PostgreSql, "Host=h;Database=d", "no user"),
        (SqlDialect::MySql, "Server=h;Database=d", "no user"),
        (
            SqlDialect::PostgreSql,
            "Host=h;Port=99999;Database=d;Username=u",
            "port",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;SSL Mode=Sometimes",
            "ssl mode",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;Timeout=0",
            "timeout",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;Maximum Pool Size=0",
            "maximum pool size",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;Minimum Pool Size=20",
            "minimum pool size",
        ),
        (
            SqlDialect::PostgreSql,
            "Host=h;Database=d;Username=u;Pooling=maybe",
            "pooling",
        ),
    ] {
        let error = parse(dialect, &format!("{text};Password=hunter2")).unwrap_err();
        assert!(
            error.to_ascii_lowercase().contains(expected),
            "{text}: {error}"
        );
        assert!(!error.contains("hunter2"));
    }
    let c = parse(
        SqlDialect::PostgreSql,
        "Host=h;Database=d;Username=u;Password=hunter2;Frobnicate=1",
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    // The unknown keyword is named by its position: it may be a piece of a value.
    assert!(c.warnings[0].contains("part 5") && c.warnings[0].contains("not known"));
    assert!(!c.warnings[0].to_ascii_lowercase().contains("frobnicate"));
}

#[test]
fn a_password_with_an_unquoted_semicolon_never_comes_back_in_errors_or_warnings() {
    // The password `S3cr;Et=9z;Qw` split at its `;`: parts that look like keywords, or not.
    let texts = [
        "Host=db;Database=kc;Username=kc;Password=S3cr;Et=9z;Qw",
        "Host=db;Database=kc;Username=kc;Password=S3cr;Et=9z",
        "Host=db;Database=kc;Username=kc;Password=S3cr;Qw'x",
        "Host=db;Database=kc;Username=kc;Password=S3cr;'Et=9z",
        "Host=db;Database=kc;Username=kc;Password=S3cr;Et='9z",
        "Host=db;Database=kc;Username=kc;Password=S3cr;Et='9z'Qw",
    ];
    for dialect in [
        SqlDialect::PostgreSql,
        SqlDialect::MySql,
        SqlDialect::SqlServer,
    ] {
        for text in texts {
            let said = match parse(dialect, text) {
                Ok(connection) => connection.warnings.join("\n"),
                Err(error) => error,
            };
            for piece in ["S3cr", "Et", "9z", "Qw", "et"] {
                assert!(
                    !said.contains(piece),
                    "{dialect:?} `{text}` says {said:?}, which holds `{piece}`"
                );
            }
        }
    }
    // The position is named instead, with how to quote.
    let said = parse(SqlDialect::PostgreSql, texts[0]).unwrap_err();
    assert!(said.contains("part 6"), "{said}");
    assert!(said.contains("quoted"), "{said}");
}
