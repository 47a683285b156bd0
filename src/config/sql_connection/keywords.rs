//! The keyword tables of the three .NET drivers whose connection strings the SQL stores
//! accept: each keyword and its aliases, and what it means to us. [`super::parse`] reads a
//! string through the table of its dialect; nothing here parses.

use super::SqlDialect;

/// What a keyword means to us.
#[derive(Clone, Copy)]
pub(super) enum Meaning {
    Host,
    Port,
    Database,
    User,
    Password,
    TlsMode,
    /// SqlClient `Encrypt`.
    Encrypt,
    TrustServerCertificate,
    RootCertificate,
    ClientCertificate,
    ClientKey,
    ConnectTimeout,
    CommandTimeout,
    Pooling,
    MaxPoolSize,
    MinPoolSize,
    ApplicationName,
    /// MySqlConnector `Protocol` (`Socket`/`Tcp`, `Unix`).
    Protocol,
    /// MySqlConnector `GuidFormat`: only the char(36) form upstream's schema uses.
    GuidFormat,
    /// Accepted; tunes the .NET driver only.
    Ignored,
    /// Cannot be honoured; the reason is the message.
    Refused(&'static str),
}

/// Keyword table entry: the keyword and its aliases with spaces removed, lower case.
pub(super) struct Keyword {
    pub(super) names: &'static [&'static str],
    pub(super) meaning: Meaning,
}

const fn kw(names: &'static [&'static str], meaning: Meaning) -> Keyword {
    Keyword { names, meaning }
}

const INTEGRATED: &str = "integrated (Kerberos/Windows) authentication is not supported; use a database user and password";

/// Npgsql's keywords (NpgsqlConnectionStringBuilder).
const NPGSQL: &[Keyword] = &[
    kw(&["host", "server"], Meaning::Host),
    kw(&["port"], Meaning::Port),
    kw(&["database", "db"], Meaning::Database),
    kw(&["username", "userid", "uid", "user"], Meaning::User),
    kw(&["password", "psw", "pwd"], Meaning::Password),
    kw(&["sslmode"], Meaning::TlsMode),
    kw(&["trustservercertificate"], Meaning::TrustServerCertificate),
    kw(&["rootcertificate"], Meaning::RootCertificate),
    kw(&["sslcertificate"], Meaning::ClientCertificate),
    kw(&["sslkey"], Meaning::ClientKey),
    kw(&["timeout"], Meaning::ConnectTimeout),
    kw(&["commandtimeout"], Meaning::CommandTimeout),
    kw(&["pooling"], Meaning::Pooling),
    kw(&["maximumpoolsize", "maxpoolsize"], Meaning::MaxPoolSize),
    kw(&["minimumpoolsize", "minpoolsize"], Meaning::MinPoolSize),
    kw(&["applicationname"], Meaning::ApplicationName),
    kw(&["integratedsecurity"], Meaning::Refused(INTEGRATED)),
    kw(
        &["kerberosservicename", "krbsrvname"],
        Meaning::Refused(INTEGRATED),
    ),
    kw(&["includerealm"], Meaning::Refused(INTEGRATED)),
    kw(
        &["passfile"],
        Meaning::Refused("a pgpass file is not read; put the password in the connection string"),
    ),
    kw(
        &["sslpassword"],
        Meaning::Refused("an encrypted client key is not supported; give an unencrypted PEM key"),
    ),
    kw(
        &["targetsessionattributes"],
        Meaning::Refused("only one host is supported; point `Host` at the primary"),
    ),
    kw(
        &["searchpath"],
        Meaning::Refused(
            "a search path is not supported: the tables must be in the user's default schema, as upstream creates them",
        ),
    ),
    kw(
        &[
            "connectionidlelifetime",
            "connectionpruninginterval",
            "connectionlifetime",
            "loadbalancetimeout",
            "keepalive",
            "tcpkeepalive",
            "tcpkeepalivetime",
            "tcpkeepaliveinterval",
            "includeerrordetail",
            "includeerrordetails",
            "enlist",
            "multiplexing",
            "writecoalescingbuffersize",
            "maxautoprepare",
            "autoprepareminusages",
            "readbuffersize",
            "writebuffersize",
            "socketreceivebuffersize",
            "socketsendbuffersize",
            "noresetonclose",
            "servercompatibilitymode",
            "checkcertificaterevocation",
            "logparameters",
            "internalcommandtimeout",
            "cancellationtimeout",
            "hostrecheckseconds",
            "loadbalancehosts",
            "encoding",
            "clientencoding",
            "timezone",
            "options",
            "persistsecurityinfo",
            "arraynullabilitymode",
            "sslnegotiation",
            "gsssencmode",
            "requireauth",
            "channelbinding",
        ],
        Meaning::Ignored,
    ),
];

/// MySqlConnector's keywords (MySqlConnectionStringBuilder).
const MYSQLCONNECTOR: &[Keyword] = &[
    kw(
        &[
            "server",
            "host",
            "datasource",
            "address",
            "addr",
            "networkaddress",
        ],
        Meaning::Host,
    ),
    kw(&["port"], Meaning::Port),
    kw(&["database", "initialcatalog"], Meaning::Database),
    kw(&["userid", "uid", "username", "user"], Meaning::User),
    kw(&["password", "pwd"], Meaning::Password),
    kw(&["sslmode", "ssl-mode"], Meaning::TlsMode),
    kw(
        &["sslca", "ssl-ca", "cacertificatefile"],
        Meaning::RootCertificate,
    ),
    kw(
        &["sslcert", "ssl-cert", "certificatefile"],
        Meaning::ClientCertificate,
    ),
    kw(&["sslkey", "ssl-key"], Meaning::ClientKey),
    kw(
        &["connectiontimeout", "connecttimeout"],
        Meaning::ConnectTimeout,
    ),
    kw(
        &["defaultcommandtimeout", "commandtimeout"],
        Meaning::CommandTimeout,
    ),
    kw(&["pooling"], Meaning::Pooling),
    kw(&["maximumpoolsize", "maxpoolsize"], Meaning::MaxPoolSize),
    kw(&["minimumpoolsize", "minpoolsize"], Meaning::MinPoolSize),
    kw(&["applicationname"], Meaning::ApplicationName),
    kw(
        &["protocol", "connectionprotocol", "transport"],
        Meaning::Protocol,
    ),
    kw(&["guidformat"], Meaning::GuidFormat),
    kw(&["integratedsecurity"], Meaning::Refused(INTEGRATED)),
    kw(
        &["certificatepassword"],
        Meaning::Refused(
            "a PKCS#12 client certificate is not supported; give `SslCert` and `SslKey` as PEM files",
        ),
    ),
    kw(
        &[
            "allowpublickeyretrieval",
            "allowuservariables",
            "allowzerodatetime",
            "convertzerodatetime",
            "characterset",
            "charset",
            "connectionreset",
            "connectionlifetime",
            "connectionidletimeout",
            "connectionidleping",
            "keepalive",
            "treattinyasboolean",
            "oldguids",
            "persistsecurityinfo",
            "usecompression",
            "compress",
            "useaffectedrows",
            "tlsversion",
            "tlscipersuites",
            "sslcipher",
            "dnscheckinterval",
            "deferconnectionreset",
            "ignorecommandtransaction",
            "ignorepreparecommand",
            "interactivesession",
            "nobackslashescapes",
            "serverredirectionmode",
            "serverrsapublickeyfile",
            "serverspn",
            "cancellationtimeout",
            "loadbalance",
            "allowloadlocalinfile",
            "autoenlist",
            "pipelining",
            "usexacomtransactions",
            "datetimekind",
            "functionsreturnstring",
            "allowbatch",
            "certificatestorelocation",
            "certificatethumbprint",
        ],
        Meaning::Ignored,
    ),
];

/// Microsoft.Data.SqlClient's keywords (SqlConnectionStringBuilder).
const SQLCLIENT: &[Keyword] = &[
    kw(
        &["server", "datasource", "address", "addr", "networkaddress"],
        Meaning::Host,
    ),
    kw(&["database", "initialcatalog"], Meaning::Database),
    kw(&["userid", "uid", "user"], Meaning::User),
    kw(&["password", "pwd"], Meaning::Password),
    kw(&["encrypt"], Meaning::Encrypt),
    kw(&["trustservercertificate"], Meaning::TrustServerCertificate),
    kw(
        &["connecttimeout", "connectiontimeout", "timeout"],
        Meaning::ConnectTimeout,
    ),
    kw(&["commandtimeout"], Meaning::CommandTimeout),
    kw(&["pooling"], Meaning::Pooling),
    kw(&["maxpoolsize"], Meaning::MaxPoolSize),
    kw(&["minpoolsize"], Meaning::MinPoolSize),
    kw(&["applicationname", "app"], Meaning::ApplicationName),
    kw(
        &[
            "integratedsecurity",
            "trusted_connection",
            "trustedconnection",
        ],
        Meaning::Refused(INTEGRATED),
    ),
    kw(
        &["authentication"],
        Meaning::Refused("only SQL Server authentication (`User Id` and `Password`) is supported"),
    ),
    kw(
        &["attachdbfilename", "extendedproperties", "initialfilename"],
        Meaning::Refused(
            "attaching a database file needs a local SQL Server; name the database with `Database`",
        ),
    ),
    kw(
        &["failoverpartner"],
        Meaning::Refused(
            "database mirroring failover is not supported; use an availability group listener as `Server`",
        ),
    ),
    kw(
        &[
            "multipleactiveresultsets",
            "multisubnetfailover",
            "persistsecurityinfo",
            "applicationintent",
            "connectretrycount",
            "connectretryinterval",
            "loadbalancetimeout",
            "connectionlifetime",
            "packetsize",
            "workstationid",
            "wsid",
            "enlist",
            "replication",
            "transactionbinding",
            "typesystemversion",
            "currentlanguage",
            "language",
            "hostnameincertificate",
            "servercertificate",
            "poolblockingperiod",
            "columnencryptionsetting",
            "enclaveattestationurl",
            "attestationprotocol",
            "ipaddresspreference",
            "contextconnection",
            "asynchronousprocessing",
            "async",
            "transparentnetworkipresolution",
            "serverspn",
            "failoverpartnerspn",
        ],
        Meaning::Ignored,
    ),
];

pub(super) fn table(dialect: SqlDialect) -> &'static [Keyword] {
    match dialect {
        SqlDialect::PostgreSql => NPGSQL,
        SqlDialect::MySql => MYSQLCONNECTOR,
        SqlDialect::SqlServer => SQLCLIENT,
    }
}
