//! Credentials the runner generates for itself on first start, kept in the data dir (mode 0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kalla_core::ClusterKey;
use rand::distributions::{Alphanumeric, DistString};

/// File holding the generated API token; the `kalla` CLI reads it to talk to a local runner.
pub const TOKEN_FILE: &str = "api-token";
/// File holding the generated cluster key (embedded mode only).
pub const KEY_FILE: &str = "secret.key";

/// Where a credential came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Generated(PathBuf),
    Stored(PathBuf),
}

/// The configured value, or the one stored in `data_dir/name`, or a freshly generated one stored there.
pub fn load_or_generate(
    data_dir: &Path,
    name: &str,
    configured: Option<&str>,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<(String, Origin)> {
    if let Some(value) = configured {
        return Ok((value.to_string(), Origin::Configured));
    }
    let path = data_dir.join(name);
    if path.exists() {
        check_private(&path)?;
        let value = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((value.trim().to_string(), Origin::Stored(path)));
    }
    let value = generate();
    fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{value}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok((value, Origin::Generated(path)))
}

pub fn generate_token() -> String {
    format!("kalla_{}", Alphanumeric.sample_string(&mut rand::rngs::OsRng, 40))
}

pub fn generate_key() -> String {
    ClusterKey::generate_base64()
}

/// Refuses to use a credential file others can read.
fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_permissions_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = load_or_generate(dir.path(), TOKEN_FILE, None, generate_token).unwrap();
        assert!(matches!(origin, Origin::Generated(_)));
        let mode = fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, origin) = load_or_generate(dir.path(), TOKEN_FILE, None, generate_token).unwrap();
        assert_eq!(first, second);
        assert!(matches!(origin, Origin::Stored(_)));
        let (configured, _) = load_or_generate(dir.path(), TOKEN_FILE, Some("mine"), generate_token).unwrap();
        assert_eq!(configured, "mine");
    }

    #[test]
    fn world_readable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_generate(dir.path(), KEY_FILE, None, generate_key).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
