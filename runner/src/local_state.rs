//! The runner's data dir (mode 0700) and the credentials the runner generates for itself there on
//! first start (mode 0600).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kalla_core::SecretsKey;
use rand::distributions::{Alphanumeric, DistString};

/// File holding the generated API token; the `kalla` CLI reads it to talk to a local runner.
pub const TOKEN_FILE: &str = "api-token";
/// File holding the generated key that signs job callbacks.
pub const CALLBACK_KEY_FILE: &str = "callback-signing-key";
/// File holding the generated secrets key (the runner's alone; see `kalla_core::seal`).
pub const KEY_FILE: &str = "secret.key";

/// Where a credential came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Generated(PathBuf),
    Stored(PathBuf),
}

/// Creates the data dir (and its parents) readable by this user only, unless it exists.
pub fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    let what_to_do = "set --data-dir / KALLA_DATA_DIR to a directory this user can create and write";
    match fs::metadata(data_dir) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => bail!(
            "the data dir {} is not a directory; {what_to_do}",
            data_dir.display()
        ),
        Err(_) => {}
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}; {what_to_do}", data_dir.display()))
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
    prepare_data_dir(data_dir)?;
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
    SecretsKey::generate_base64()
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
    fn the_data_dir_is_created_private_and_a_file_in_its_place_is_named() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b");
        prepare_data_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        prepare_data_dir(&dir).unwrap();

        let file = parent.path().join("file");
        fs::write(&file, "x").unwrap();
        let error = format!("{:#}", prepare_data_dir(&file).unwrap_err());
        assert!(
            error.contains("is not a directory") && error.contains("--data-dir"),
            "{error}"
        );
        let error = format!("{:#}", prepare_data_dir(&file.join("below")).unwrap_err());
        assert!(
            error.contains("cannot create the data dir") && error.contains("KALLA_DATA_DIR"),
            "{error}"
        );
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
