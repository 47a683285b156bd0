//! Throw-away databases on the machine's PostgreSQL, MySQL/MariaDB and (when configured)
//! SQL Server, one per test, dropped when the test ends.
//!
//! Where the servers are comes from the environment, as connection strings without a
//! database: `KC_TEST_POSTGRESQL` (default `Host=127.0.0.1;Port=5432;Username=postgres`),
//! `KC_TEST_MYSQL` (default `Server=127.0.0.1;Port=3306;Uid=root;Pwd=`) and
//! `KC_TEST_SQLSERVER` (no default: no SQL Server runs here unless one is configured).
//! The database itself is left for the service to create, as upstream's migration does.

use key_connector::config::{DatabaseSettings, SqlDialect, sql_connection};
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    PostgreSql,
    MySql,
    SqlServer,
}

impl Engine {
    fn env_var(self) -> &'static str {
        match self {
            Engine::PostgreSql => "KC_TEST_POSTGRESQL",
            Engine::MySql => "KC_TEST_MYSQL",
            Engine::SqlServer => "KC_TEST_SQLSERVER",
        }
    }

    /// Whether tests may expect the server: PostgreSQL and MySQL have defaults, SQL Server
    /// only a configured `KC_TEST_SQLSERVER` (CI has none).
    pub fn is_configured(self) -> bool {
        self.base_connection_string().is_some()
    }

    /// The server's connection string without a database, if one is configured.
    pub fn base_connection_string(self) -> Option<String> {
        if let Ok(value) = std::env::var(self.env_var()) {
            return Some(value);
        }
        match self {
            Engine::PostgreSql => Some("Host=127.0.0.1;Port=5432;Username=postgres".into()),
            Engine::MySql => Some("Server=127.0.0.1;Port=3306;Uid=root;Pwd=".into()),
            Engine::SqlServer => None,
        }
    }

    /// `database:provider`'s value for this server.
    pub fn provider(self) -> &'static str {
        match self {
            Engine::PostgreSql => "postgresql",
            Engine::MySql => "mysql",
            Engine::SqlServer => "sqlserver",
        }
    }

    /// The environment variable of this server's connection string setting.
    pub fn connection_string_variable(self) -> &'static str {
        match self {
            Engine::PostgreSql => "keyConnectorSettings__database__postgreSqlConnectionString",
            Engine::MySql => "keyConnectorSettings__database__mySqlConnectionString",
            Engine::SqlServer => "keyConnectorSettings__database__sqlServerConnectionString",
        }
    }

    /// `identifier` quoted as this server's SQL quotes names.
    pub fn quoted(self, identifier: &str) -> String {
        match self {
            Engine::PostgreSql => format!("\"{identifier}\""),
            Engine::MySql => format!("`{identifier}`"),
            Engine::SqlServer => format!("[{identifier}]"),
        }
    }

    pub fn dialect(self) -> SqlDialect {
        match self {
            Engine::PostgreSql => SqlDialect::PostgreSql,
            Engine::MySql => SqlDialect::MySql,
            Engine::SqlServer => SqlDialect::SqlServer,
        }
    }
}

/// A database name reserved for one test; dropped (if it was created) on drop.
pub struct TestDatabase {
    pub server: Engine,
    pub name: String,
    base: String,
    /// The SQL Server is Babelfish for PostgreSQL (`@@VERSION` says so), which differs from
    /// SQL Server where a test must say so: see [`TestDatabase::is_babelfish`].
    babelfish: bool,
}

impl TestDatabase {
    /// Reserves a fresh database name on `server`, or says why the server cannot be used.
    pub async fn reserve(server: Engine) -> Result<Self, String> {
        let base = server.base_connection_string().ok_or_else(|| {
            format!(
                "no {server:?} server configured (set {} to a connection string without a database)",
                server.env_var()
            )
        })?;
        let mut database = Self {
            server,
            name: format!("kc_test_{}", Uuid::new_v4().simple()),
            base,
            babelfish: false,
        };
        database.admin(|_| None).await.map_err(|e| {
            format!(
                "{server:?} at `{}` is not reachable: {e}",
                database.redacted_base()
            )
        })?;
        if server == Engine::SqlServer {
            let version = database.admin_column("SELECT @@VERSION").await?;
            database.babelfish = version
                .iter()
                .flatten()
                .any(|v| v.starts_with("Babelfish for PostgreSQL"));
        }
        Ok(database)
    }

    /// Whether the SQL Server is Babelfish for PostgreSQL rather than Microsoft's. Where it
    /// differs (it keeps `datetime2` to the microsecond, rounding the seventh digit), a test
    /// allows that only here, never for SQL Server itself.
    pub fn is_babelfish(&self) -> bool {
        self.babelfish
    }

    fn redacted_base(&self) -> String {
        self.base
            .split(';')
            .filter(|p| {
                !p.to_ascii_lowercase().starts_with("pwd")
                    && !p.to_ascii_lowercase().starts_with("password")
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The connection string the service is given.
    pub fn connection_string(&self) -> String {
        format!("{};Database={}", self.base.trim_end_matches(';'), self.name)
    }

    pub fn settings(&self) -> DatabaseSettings {
        self.settings_for(&self.connection_string())
    }

    pub fn settings_for(&self, connection_string: &str) -> DatabaseSettings {
        let connection = sql_connection::parse(self.server.dialect(), connection_string)
            .expect("test connection string parses");
        match self.server {
            Engine::PostgreSql => DatabaseSettings::PostgreSql { connection },
            Engine::MySql => DatabaseSettings::MySql { connection },
            Engine::SqlServer => DatabaseSettings::SqlServer { connection },
        }
    }

    /// The server's TCP address.
    pub async fn server_address(&self) -> std::net::SocketAddr {
        let args = self.script_args();
        let host = &args[3];
        let port: u16 = args[5].parse().unwrap();
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap()
    }

    /// Settings reaching the database through `address` (a proxy), with `extra` keywords.
    pub fn settings_via(&self, address: std::net::SocketAddr, extra: &str) -> DatabaseSettings {
        let args = self.script_args();
        let (user, password) = (&args[7], &args[9]);
        let text = match self.server {
            Engine::PostgreSql => format!(
                "Host={};Port={};Username={user};Password={password};Database={};{extra}",
                address.ip(),
                address.port(),
                self.name
            ),
            Engine::MySql => format!(
                "Server={};Port={};Uid={user};Pwd={password};Database={};{extra}",
                address.ip(),
                address.port(),
                self.name
            ),
            // The base's other keywords (encryption, trust) stay as they are.
            Engine::SqlServer => {
                let others: Vec<&str> = self
                    .base
                    .split(';')
                    .filter(|part| {
                        let keyword: String = part
                            .split('=')
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .filter(|c| !c.is_whitespace())
                            .collect();
                        !part.trim().is_empty()
                            && !["server", "datasource", "address", "addr", "networkaddress"]
                                .contains(&keyword.to_ascii_lowercase().as_str())
                    })
                    .collect();
                format!(
                    "Server=tcp:{},{};{};Database={};{extra}",
                    address.ip(),
                    address.port(),
                    others.join(";"),
                    self.name
                )
            }
        };
        self.settings_for(&text)
    }

    /// Where the database is, as `tests/compat/upstream_format.py` takes it.
    pub fn script_args(&self) -> Vec<String> {
        use key_connector::config::sql_connection::SqlEndpoint;
        let connection = self.connection();
        let SqlEndpoint::Tcp { host, port, .. } = &connection.endpoint else {
            panic!("the script connects over TCP")
        };
        let (engine, default_port) = match self.server {
            Engine::PostgreSql => ("postgresql", 5432),
            Engine::MySql => ("mysql", 3306),
            Engine::SqlServer => ("sqlserver", 1433),
        };
        let password = connection
            .password
            .as_ref()
            .map(|p| secrecy::ExposeSecret::expose_secret(p).to_owned())
            .unwrap_or_default();
        [
            "--engine",
            engine,
            "--host",
            host,
            "--port",
            &port.unwrap_or(default_port).to_string(),
            "--user",
            connection.user.as_deref().unwrap_or_default(),
            "--db-password",
            &password,
            "--database",
            &self.name,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs statements against the server's maintenance database (`sql` builds them from the
    /// test database's name; `None` only checks the server answers).
    async fn admin(&self, sql: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let connection = sql_connection::parse(
            self.server.dialect(),
            &format!(
                "{};Database={}",
                self.base.trim_end_matches(';'),
                match self.server {
                    Engine::PostgreSql => "postgres",
                    Engine::MySql => "mysql",
                    Engine::SqlServer => "master",
                }
            ),
        )
        .map_err(|e| e.to_string())?;
        match self.server {
            Engine::PostgreSql => {
                let options = postgres_options(&connection);
                let mut conn = timed(options.connect()).await?;
                if let Some(statement) = sql(&self.name) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let _ = conn.close().await;
            }
            Engine::MySql => {
                let options = mysql_options(&connection);
                let mut conn = timed(options.connect()).await?;
                if let Some(statement) = sql(&self.name) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let _ = conn.close().await;
            }
            Engine::SqlServer => {
                let mut client = sqlserver_client(&connection, "master").await?;
                if let Some(statement) = sql(&self.name) {
                    client
                        .simple_query(statement)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_results()
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let _ = client.close().await;
            }
        }
        Ok(())
    }

    /// Ends the sessions still in the test database (a store's pool lives until the test's
    /// runtime ends): SQL Server, and Babelfish, refuse to drop a database in use, and
    /// neither `WITH (FORCE)` nor (on Babelfish) `SET SINGLE_USER` is there to say otherwise.
    async fn end_sessions(&self) {
        let sessions = self
            .admin_column(&format!(
                "SELECT CAST(session_id AS nvarchar(10)) FROM sys.dm_exec_sessions \
                 WHERE database_id = DB_ID(N'{}') AND session_id <> @@SPID",
                self.name
            ))
            .await
            .unwrap_or_default();
        for session in sessions.into_iter().flatten() {
            // A session that ended meanwhile cannot be killed; that is as good.
            let _ = self.admin(|_| Some(format!("KILL {session}"))).await;
        }
    }

    /// First column of a query on SQL Server's `master`, as text.
    async fn admin_column(&self, query: &str) -> Result<Vec<Option<String>>, String> {
        let connection = sql_connection::parse(
            self.server.dialect(),
            &format!("{};Database=master", self.base.trim_end_matches(';')),
        )
        .map_err(|e| e.to_string())?;
        let mut client = sqlserver_client(&connection, "master").await?;
        let rows = client
            .simple_query(query)
            .await
            .map_err(|e| e.to_string())?
            .into_first_result()
            .await
            .map_err(|e| e.to_string())?;
        let _ = client.close().await;
        Ok(rows
            .iter()
            .map(|row| row.get::<&str, _>(0).map(str::to_owned))
            .collect())
    }

    /// Runs statements in the test database (which must exist).
    pub async fn execute(&self, statements: &[&str]) {
        let connection = self.connection();
        for statement in statements {
            let result = match self.server {
                Engine::PostgreSql => {
                    let mut conn = timed(postgres_options(&connection).connect())
                        .await
                        .unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(&mut conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Engine::MySql => {
                    let mut conn = timed(mysql_options(&connection).connect()).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(&mut conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Engine::SqlServer => {
                    let mut client = sqlserver_client(&connection, &self.name).await.unwrap();
                    let result = match client.simple_query(*statement).await {
                        Ok(stream) => stream.into_results().await.map(drop),
                        Err(e) => Err(e),
                    };
                    let _ = client.close().await;
                    result.map_err(|e| e.to_string())
                }
            };
            result.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Creates the (empty) database, for tests that build an upstream-made one by hand.
    pub async fn create_empty(&self) {
        let create: fn(&str) -> Option<String> = match self.server {
            Engine::PostgreSql => |name: &str| Some(format!("CREATE DATABASE \"{name}\"")),
            Engine::MySql => {
                |name: &str| Some(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            }
            Engine::SqlServer => |name: &str| Some(format!("CREATE DATABASE [{name}]")),
        };
        self.admin(create).await.expect("test database created");
    }

    /// First column of every row of a query, as text.
    pub async fn column(&self, query: &str) -> Vec<Option<String>> {
        let connection = self.connection();
        match self.server {
            Engine::PostgreSql => {
                let mut conn = timed(postgres_options(&connection).connect())
                    .await
                    .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Engine::MySql => {
                let mut conn = timed(mysql_options(&connection).connect()).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Engine::SqlServer => {
                let mut client = sqlserver_client(&connection, &self.name).await.unwrap();
                let rows = client
                    .simple_query(query)
                    .await
                    .unwrap()
                    .into_first_result()
                    .await
                    .unwrap();
                let _ = client.close().await;
                rows.iter()
                    .map(|row| row.get::<&str, _>(0).map(str::to_owned))
                    .collect()
            }
        }
    }

    /// The test database's parsed connection string.
    fn connection(&self) -> key_connector::config::SqlConnection {
        let (DatabaseSettings::PostgreSql { connection }
        | DatabaseSettings::MySql { connection }
        | DatabaseSettings::SqlServer { connection }) = self.settings()
        else {
            unreachable!("a test database is on a SQL server")
        };
        connection
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let drop_statement: fn(&str) -> Option<String> = match self.server {
            Engine::PostgreSql => {
                |name: &str| Some(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            }
            Engine::MySql => |name: &str| Some(format!("DROP DATABASE IF EXISTS `{name}`")),
            Engine::SqlServer => |name: &str| Some(format!("DROP DATABASE IF EXISTS [{name}]")),
        };
        let server = self.server;
        let name = self.name.clone();
        let base = self.base.clone();
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let database = TestDatabase {
                server,
                name,
                base,
                babelfish: false,
            };
            if server == Engine::SqlServer {
                runtime.block_on(database.end_sessions());
            }
            if let Err(error) = runtime.block_on(database.admin(drop_statement)) {
                eprintln!("could not drop test database {}: {error}", database.name);
            }
            std::mem::forget(database);
        })
        .join();
    }
}

/// A connection to `database` on the SQL Server of `connection`, as the store makes it.
async fn sqlserver_client(
    connection: &key_connector::config::SqlConnection,
    database: &str,
) -> Result<tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>, String> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let config = key_connector::store::sqlserver::tiberius_config(connection, database);
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(config.get_addr()),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_string())?
    .map_err(|e| e.to_string())?;
    tiberius::Client::connect(config, tcp.compat_write())
        .await
        .map_err(|e| e.to_string())
}

async fn timed<T>(future: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, String> {
    tokio::time::timeout(std::time::Duration::from_secs(5), future)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())
}

fn postgres_options(
    connection: &key_connector::config::SqlConnection,
) -> sqlx::postgres::PgConnectOptions {
    use key_connector::config::sql_connection::SqlEndpoint;
    let mut options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .database(&connection.database)
        .ssl_mode(sqlx::postgres::PgSslMode::Prefer);
    if let SqlEndpoint::Tcp { host, port, .. } = &connection.endpoint {
        options = options.host(host).port(port.unwrap_or(5432));
    }
    if let Some(user) = &connection.user {
        options = options.username(user);
    }
    if let Some(password) = &connection.password {
        options = options.password(secrecy::ExposeSecret::expose_secret(password));
    }
    options.disable_statement_logging()
}

fn mysql_options(
    connection: &key_connector::config::SqlConnection,
) -> sqlx::mysql::MySqlConnectOptions {
    use key_connector::config::sql_connection::SqlEndpoint;
    let mut options = sqlx::mysql::MySqlConnectOptions::new().database(&connection.database);
    if let SqlEndpoint::Tcp { host, port, .. } = &connection.endpoint {
        options = options.host(host).port(port.unwrap_or(3306));
    }
    if let Some(user) = &connection.user {
        options = options.username(user);
    }
    // An empty password is no password (a scrambled empty string matches no account).
    if let Some(password) = &connection.password
        && !secrecy::ExposeSecret::expose_secret(password).is_empty()
    {
        options = options.password(secrecy::ExposeSecret::expose_secret(password));
    }
    options.disable_statement_logging()
}
