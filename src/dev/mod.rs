//! `key-connector dev`: the newcomer's first minute. **Not for production.**
//!
//! Starts the real service on localhost with a SQLite database and a generated PKCS#12
//! certificate in a local data directory, next to a built-in development token issuer
//! (OIDC discovery + JWKS), and prints `curl` commands with a valid token that show the whole
//! flow: GET 404, POST, GET 200. Everything binds to 127.0.0.1 only. The issuer signs any
//! token it is asked to, which is exactly why this mode must never face a network.

pub mod issuer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use crate::config::{DatabaseSettings, ListenHost, ListenUrl, SqliteConnection};
use crate::dev::issuer::DevIssuer;
use crate::keys::RsaKeySettings;
use crate::keys::certificate::CertificateSettings;
use crate::pkcs12::generate_self_signed_pfx;
use crate::private_file::owner_only;
use crate::settings::Settings;
use crate::startup::Application;

/// Lifetime of the printed token: a working day.
const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Options of the `dev` subcommand.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the database, certificate and issuer key are kept between runs.
    pub data_dir: PathBuf,
    /// Port of the Key Connector on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Origin allowed by CORS (a local web vault).
    pub web_vault_origin: String,
}

/// Files of the development data directory.
struct DevFiles {
    certificate: PathBuf,
    database: PathBuf,
    issuer_key: PathBuf,
}

impl DevFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            certificate: dir.join("key.pfx"),
            database: dir.join("keys.db"),
            issuer_key: dir.join("dev-issuer.pk8"),
        }
    }
}

/// Runs the development service until `shutdown` resolves.
pub async fn run(
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let files = prepare_data_dir(&options.data_dir)?;
    let issuer = Arc::new(load_or_create_issuer(&files.issuer_key)?);

    let issuer_listener =
        tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .context("cannot bind the development token issuer on 127.0.0.1")?;
    let issuer_url = format!("http://{}", issuer_listener.local_addr()?);
    let _issuer_task = Arc::clone(&issuer).spawn(issuer_listener, issuer_url.clone());

    let settings = Settings {
        web_vault_origin: options.web_vault_origin.trim_end_matches('/').to_owned(),
        identity_server_uri: issuer_url.clone(),
        database: DatabaseSettings::Sqlite {
            connection: SqliteConnection {
                path: files.database.clone(),
                read_only: false,
            },
        },
        rsa_key: RsaKeySettings::Certificate(CertificateSettings::Filesystem {
            path: files.certificate.clone(),
            password: None,
        }),
        transfer_to: None,
        rotate_to: None,
        recovery_key: None,
        https_certificate: None,
        user_key_binding: Default::default(),
        intervals: Default::default(),
    };
    let listen = [ListenUrl {
        tls: false,
        host: ListenHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port: options.port,
    }];
    let app = Application::build(&settings, &listen)
        .await
        .with_context(|| {
            format!(
                "cannot start on 127.0.0.1:{} (use --port to pick another)",
                options.port
            )
        })?;
    let address = app
        .local_addrs()
        .into_iter()
        .next()
        .context("no listener was bound")?;

    let user_id = Uuid::new_v4();
    let token = issuer.mint_user_token(&issuer_url, user_id, TOKEN_LIFETIME);
    let banner = quickstart_text(&QuickstartText {
        base_url: &format!("http://{address}"),
        issuer_url: &issuer_url,
        data_dir: &options.data_dir,
        user_id,
        token: &token,
        sample_key: &STANDARD.encode(rand_bytes::<32>()),
    });
    {
        // A closed stdout (piped into `head`, say) must not stop the service.
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(banner.as_bytes());
        let _ = stdout.flush();
    }
    app.run_until_stopped(shutdown).await;
    Ok(())
}

struct QuickstartText<'a> {
    base_url: &'a str,
    issuer_url: &'a str,
    data_dir: &'a Path,
    user_id: Uuid,
    token: &'a str,
    sample_key: &'a str,
}

fn quickstart_text(t: &QuickstartText<'_>) -> String {
    format!(
        r#"
================================================================================
 Key Connector DEVELOPMENT MODE - NOT FOR PRODUCTION
 Its built-in token issuer signs tokens for anyone; it listens on 127.0.0.1 only.
================================================================================
 Key Connector : {base}
 Token issuer  : {issuer}
 Data          : {data} (SQLite database, generated certificate, issuer key)
 Test user     : {user}

Try it (copy and paste into another shell):

TOKEN='{token}'

# 1. No key yet: 404
curl -i -H "Authorization: Bearer $TOKEN" {base}/user-keys

# 2. Store a key: 200
curl -i -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
     -d '{{"key":"{key}"}}' {base}/user-keys

# 3. Read it back: 200 {{"key":"..."}}
curl -i -H "Authorization: Bearer $TOKEN" {base}/user-keys

# Health and time
curl -i {base}/health
curl -i {base}/alive
================================================================================
"#,
        base = t.base_url,
        issuer = t.issuer_url,
        data = t.data_dir.display(),
        user = t.user_id,
        token = t.token,
        key = t.sample_key,
    )
}

/// The file that marks a data directory as made by `dev`. Its presence is the only thing
/// that lets `dev` use an existing directory: pointed by mistake at a directory of real data
/// (`--data-dir /etc/bitwarden`), it must refuse rather than write keys and files there.
const MARKER_FILE: &str = ".key-connector-dev";

const MARKER_TEXT: &str = "This directory was made by `key-connector dev` (development only).\n\
    It holds a development database, certificate and token issuer key.\n";

/// Makes the data directory (owner-only) and marks it, or opens one that carries the mark.
/// An existing directory without the mark is refused, and its mode is never changed.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<DevFiles> {
    let marker = dir.join(MARKER_FILE);
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {
            let marked = std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file());
            if !marked {
                bail!(
                    "{} already exists and was not made by `key-connector dev` (it has no {} \
                     file); name a new directory with --data-dir, or, if it is a development \
                     directory of an earlier version, create that file in it",
                    dir.display(),
                    MARKER_FILE
                );
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_marked_dir(dir)?,
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect {}", dir.display()));
        }
    }
    let files = DevFiles::in_dir(dir);
    if !files.certificate.exists() {
        let pfx = generate_self_signed_pfx(2048, "Key Connector development", None)
            .context("cannot generate the development certificate")?;
        write_private_file(&files.certificate, &pfx)?;
        tracing::info!(path = %files.certificate.display(), "generated a development certificate");
    }
    Ok(files)
}

/// Creates `dir` (its parents as the umask makes them, `dir` itself owner-only) and marks
/// it. A directory that appeared meanwhile is not taken over.
fn create_marked_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    write_private_file(&dir.join(MARKER_FILE), MARKER_TEXT.as_bytes())
}

fn load_or_create_issuer(path: &Path) -> anyhow::Result<DevIssuer> {
    if path.exists() {
        let der = zeroize::Zeroizing::new(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        return DevIssuer::from_pkcs8(&der)
            .with_context(|| format!("{} is not a usable issuer key; delete it", path.display()));
    }
    let issuer = DevIssuer::generate().context("cannot generate the issuer key")?;
    write_private_file(path, &issuer.pkcs8_der())?;
    Ok(issuer)
}

fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = owner_only(std::fs::OpenOptions::new().write(true).create_new(true))
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if file.metadata()?.len() == 0 {
        bail!("{} was written empty", path.display());
    }
    Ok(())
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; N];
    // A sample key for the printed example only; a failure here leaves zeros, harmless.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_existing_directory_without_the_marker_is_refused_and_left_as_it_was() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("real-data");
        std::fs::create_dir(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let message = prepare_data_dir(&dir).err().unwrap().to_string();
        assert!(message.contains(MARKER_FILE), "{message}");
        assert!(message.contains("--data-dir"), "{message}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
        #[cfg(unix)]
        assert_eq!(mode_of(&dir), 0o755);
    }

    #[test]
    fn a_directory_dev_made_is_owner_only_marked_and_reused_without_changing_its_mode() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nested").join("dev-data");
        let files = prepare_data_dir(&dir).unwrap();
        assert!(dir.join(MARKER_FILE).is_file());
        assert!(files.certificate.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(mode_of(&dir), 0o700);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
            prepare_data_dir(&dir).unwrap();
            assert_eq!(mode_of(&dir), 0o750, "an existing directory keeps its mode");
        }
        #[cfg(not(unix))]
        prepare_data_dir(&dir).unwrap();
    }

    #[test]
    fn a_marker_that_is_not_a_file_does_not_count() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join(MARKER_FILE)).unwrap();
        assert!(prepare_data_dir(&dir).is_err());
        assert!(!dir.join("key.pfx").exists());
    }
}
