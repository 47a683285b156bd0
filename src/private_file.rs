//! The permissions of the files the service creates: owner-only (`0600`), because what it
//! writes (databases, key documents, logs, lock files, backups) is nobody else's business.
//!
//! Owns only the mode new files get; it never changes the permissions of an existing file.

use std::fs::OpenOptions;

/// Makes `options` create any new file readable and writable by its owner only (`0600`,
/// before the umask). A file that already exists keeps its permissions. Elsewhere than on
/// Unix the platform's default applies.
pub fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        owner_only(OpenOptions::new().write(true).create_new(true))
            .open(&path)
            .unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn an_existing_file_keeps_its_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("existing");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        owner_only(OpenOptions::new().write(true).create(true))
            .open(&path)
            .unwrap();
        assert_eq!(mode_of(&path), 0o640);
    }
}
