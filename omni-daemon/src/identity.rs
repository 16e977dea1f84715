//! Keys on disk: our static private key (created on first start, mode 0600,
//! in a 0700 directory) and the Nucleus keys an edge pinned on first contact.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use omni_core::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The Nucleus's key file in the identity directory.
pub const NUCLEUS_KEY_FILE: &str = "nucleus.key";
/// An edge's key file in the identity directory.
pub const EDGE_KEY_FILE: &str = "edge.key";

fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the identity directory {}", dir.display()))
}

/// Loads the private key in `dir/name`, or creates one there (0600).
/// Returns the key and whether it was created now.
pub fn load_or_create(dir: &Path, name: &str) -> anyhow::Result<(StaticSecret, bool)> {
    ensure_dir(dir)?;
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "the key file {} is accessible by other users (mode {:04o}): chmod 600 it (or remove it for a new key)",
                    path.display(),
                    mode & 0o7777
                );
            }
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the key file {}", path.display()))?,
            );
            let key = StaticSecret::from_base64(text.trim())
                .or_else(|_| StaticSecret::from_hex(text.trim()))
                .map_err(|e| anyhow::anyhow!("the key file {} does not hold a key: {e}", path.display()))?;
            if key.is_zero() {
                bail!("the key file {} holds the all-zero key", path.display());
            }
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StaticSecret::random(&mut rand_core::OsRng);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create the key file {}", path.display()))?;
            let b64 = key.to_base64();
            let mut line = Zeroizing::new(String::with_capacity(45));
            line.push_str(b64.as_str());
            line.push('\n');
            f.write_all(line.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the key file {}", path.display())),
    }
}

/// Where the key of the Nucleus at `host:port` is pinned.
pub fn pinned_path(dir: &Path, nucleus: &str) -> PathBuf {
    let safe: String =
        nucleus.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    dir.join(format!("nucleus-{safe}.pub"))
}

/// The pinned key of the Nucleus at `nucleus`, if any.
pub fn load_pinned(dir: &Path, nucleus: &str) -> anyhow::Result<Option<PublicKey>> {
    let path = pinned_path(dir, nucleus);
    match std::fs::read_to_string(&path) {
        Ok(t) => PublicKey::from_base64(t.trim()).map(Some).map_err(|e| {
            anyhow::anyhow!("{} does not hold a key ({e}): remove it to learn the key again", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Pins the key of the Nucleus at `nucleus` (trust on first use).
pub fn save_pinned(dir: &Path, nucleus: &str, key: &PublicKey) -> anyhow::Result<PathBuf> {
    ensure_dir(dir)?;
    let path = pinned_path(dir, nucleus);
    let tmp = path.with_extension("pub.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{}", key.to_base64().as_str()).and_then(|()| f.sync_all())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("omni-identity-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (k1, created) = load_or_create(&dir, "edge.key").unwrap();
        assert!(created);
        let meta = std::fs::metadata(dir.join("edge.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (k2, created) = load_or_create(&dir, "edge.key").unwrap();
        assert!(!created);
        assert_eq!(k1.to_base64().as_str(), k2.to_base64().as_str());
        // A key others can read is refused.
        std::fs::set_permissions(dir.join("edge.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&dir, "edge.key").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Garbage is refused.
        std::fs::write(dir.join("bad.key"), "not a key\n").unwrap();
        std::fs::set_permissions(dir.join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(&dir, "bad.key").unwrap_err().to_string().contains("does not hold a key"));
        // Pinned Nucleus keys.
        assert_eq!(load_pinned(&dir, "n.example:51820").unwrap(), None);
        let p = k1.public_key::<omni_core::crypto::DefaultProvider>();
        let path = save_pinned(&dir, "n.example:51820", &p).unwrap();
        assert!(path.ends_with("nucleus-n.example_51820.pub"));
        assert_eq!(load_pinned(&dir, "n.example:51820").unwrap(), Some(p));
        assert_eq!(pinned_path(&dir, "[::1]:5"), dir.join("nucleus-___1__5.pub"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
