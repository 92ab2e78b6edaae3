//! The agent's persistent identity: machine key (ts2021 Noise static key) and node key
//! (WireGuard key), generated once and kept in the state directory.
//!
//! Files (text form `privkey:<64 hex>` and a newline, as Tailscale's key files):
//! - `<state-dir>/machine.key`
//! - `<state-dir>/node.key`
//!
//! Written with mode 0600 through a temporary file and a rename, so a crash never leaves half a
//! key. A key file that group or others can read (or write) is refused, not silently fixed:
//! the key may already have leaked.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use meshgate_tailcfg::{MachinePrivate, NodePrivate};

pub const MACHINE_KEY_FILE: &str = "machine.key";
pub const NODE_KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}: a key file must not be readable or writable by group or others; check whether it leaked, then `chmod 600` it or delete it to get a new key"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: not a key file ({source})")]
    BadKey {
        path: PathBuf,
        source: meshgate_tailcfg::Error,
    },
}

/// What the agent keeps across restarts.
#[derive(Debug)]
pub struct Persisted {
    pub dir: PathBuf,
    pub machine_key: MachinePrivate,
    pub node_key: NodePrivate,
}

impl Persisted {
    /// Loads both keys from `dir`, generating and saving any that are missing (the directory is
    /// created with mode 0700 if needed).
    pub fn load_or_create(dir: &Path) -> Result<Persisted, StateError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, e))?;
        }
        let machine_key = match read_key(&dir.join(MACHINE_KEY_FILE))? {
            Some(text) => parse(&dir.join(MACHINE_KEY_FILE), &text, |t| {
                MachinePrivate::from_text_secret(t)
            })?,
            None => {
                let key = MachinePrivate::generate();
                write_key(&dir.join(MACHINE_KEY_FILE), &key.to_text_secret())?;
                key
            }
        };
        let node_key = match read_key(&dir.join(NODE_KEY_FILE))? {
            Some(text) => parse(&dir.join(NODE_KEY_FILE), &text, |t| {
                NodePrivate::from_text_secret(t)
            })?,
            None => {
                let key = NodePrivate::generate();
                write_key(&dir.join(NODE_KEY_FILE), &key.to_text_secret())?;
                key
            }
        };
        Ok(Persisted {
            dir: dir.to_owned(),
            machine_key,
            node_key,
        })
    }

    /// Replaces the node key (renewal before expiry, or after `NodeKeyExpired`) on disk first,
    /// then in memory. Returns the old key, which the next register sends as `OldNodeKey`.
    pub fn replace_node_key(&mut self, new: NodePrivate) -> Result<NodePrivate, StateError> {
        write_key(&self.dir.join(NODE_KEY_FILE), &new.to_text_secret())?;
        Ok(std::mem::replace(&mut self.node_key, new))
    }
}

impl Persisted {
    /// Whether `dir` holds a node key (false after a logout, or before the first start).
    pub fn has_node_key(dir: &Path) -> bool {
        dir.join(NODE_KEY_FILE).exists()
    }

    /// Deletes the node key file (logout): the next [`Persisted::load_or_create`] makes a new
    /// key, which needs an auth key to register. The machine key stays.
    pub fn forget_node_key(&self) -> Result<(), StateError> {
        let path = self.dir.join(NODE_KEY_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn parse<T>(
    path: &Path,
    text: &str,
    f: impl FnOnce(&str) -> Result<T, meshgate_tailcfg::Error>,
) -> Result<T, StateError> {
    f(text.trim()).map_err(|source| StateError::BadKey {
        path: path.to_owned(),
        source,
    })
}

/// The file's text, `None` if it does not exist; refuses loose permissions and non-files.
fn read_key(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>, StateError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    if !meta.file_type().is_file() {
        return Err(StateError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|e| io(path, e))?;
    Ok(Some(zeroize::Zeroizing::new(text)))
}

/// Writes `text` and a newline to `path` with mode 0600, atomically (temporary file, fsync,
/// rename).
fn write_key(path: &Path, text: &str) -> Result<(), StateError> {
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    // The umask cannot widen 0600, but make the mode exact anyway.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io(&tmp, e))?;
    let result = file
        .write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshgate-control-state-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_once_then_loaded() {
        let dir = temp_dir("once").join("state");
        let first = Persisted::load_or_create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [MACHINE_KEY_FILE, NODE_KEY_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600);
            let text = fs::read_to_string(dir.join(f)).unwrap();
            assert!(text.starts_with("privkey:") && text.ends_with('\n'), "{f}");
            assert_eq!(text.len(), "privkey:".len() + 64 + 1);
        }
        let second = Persisted::load_or_create(&dir).unwrap();
        assert_eq!(first.machine_key.public(), second.machine_key.public());
        assert_eq!(first.node_key.public(), second.node_key.public());
        assert_ne!(
            first.machine_key.public().as_bytes(),
            first.node_key.public().as_bytes()
        );
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = temp_dir("perm");
        Persisted::load_or_create(&dir).unwrap();
        let path = dir.join(NODE_KEY_FILE);
        for bad in [0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = Persisted::load_or_create(&dir).unwrap_err();
            assert!(
                matches!(&err, StateError::Permissions { mode, .. } if *mode == bad),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        Persisted::load_or_create(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_and_non_files_are_refused_without_echo() {
        let dir = temp_dir("garbage");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(MACHINE_KEY_FILE);
        fs::write(&path, "privkey:secretsecret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Persisted::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, StateError::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("secretsecret"), "{err}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let err = Persisted::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, StateError::NotAFile { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_key_replacement_persists() {
        let dir = temp_dir("rotate");
        let mut p = Persisted::load_or_create(&dir).unwrap();
        let old_public = p.node_key.public();
        let machine = p.machine_key.public();
        let new = NodePrivate::generate();
        let new_public = new.public();
        let old = p.replace_node_key(new).unwrap();
        assert_eq!(old.public(), old_public);
        let again = Persisted::load_or_create(&dir).unwrap();
        assert_eq!(again.node_key.public(), new_public);
        assert_eq!(again.machine_key.public(), machine);
        assert_eq!(mode(&dir.join(NODE_KEY_FILE)), 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}
