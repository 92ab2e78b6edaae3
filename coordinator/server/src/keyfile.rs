//! The server's Noise (control) key, kept in the state directory.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use meshgate_tailcfg::MachinePrivate;

use crate::Error;

/// The key file's name inside the state directory.
pub const KEY_FILE_NAME: &str = "control.key";

/// Reads `<state_dir>/control.key` (`privkey:<hex>`), or creates it (mode 0600, and the
/// directory if missing) with a fresh key. A file readable by group or others is refused.
///
/// # Errors
/// I/O errors, and [`Error::KeyFile`] for a malformed or too open file.
pub fn load_or_create_key(state_dir: &Path) -> Result<MachinePrivate, Error> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join(KEY_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::KeyFile {
                    path,
                    reason: format!("mode {:o} lets others read it; chmod 600", mode & 0o777),
                });
            }
            MachinePrivate::from_text_secret(text.trim()).map_err(|e| Error::KeyFile {
                path,
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = MachinePrivate::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(key.to_text_secret().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}
