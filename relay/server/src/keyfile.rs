//! The server's node key in a `privkey:<hex>` file (mode 0600).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use meshgate_tailcfg::NodePrivate;

use crate::Error;

/// Reads the key file, or creates it with a fresh key (mode 0600; parent directory created).
/// A file readable by group or others is refused.
pub fn load_or_create_key(path: &Path) -> Result<NodePrivate, Error> {
    let bad = |reason: String| Error::KeyFile {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "mode {:o} lets others read it; chmod 600",
                    mode & 0o777
                )));
            }
            NodePrivate::from_text_secret(text.trim()).map_err(|e| bad(e.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let key = NodePrivate::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(key.to_text_secret().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reads_and_refuses_open_modes() {
        let dir = std::env::temp_dir().join(format!("meshgate-relay-key-{}", std::process::id()));
        let path = dir.join("sub/derp.key");
        let k1 = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = load_or_create_key(&path).unwrap();
        assert_eq!(k1.public(), k2.public());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_key(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
