//! Control mode's preferences on disk (`prefs.json` in the state directory): what `up` set and
//! whether the node should be running, so that `down` and `logout` survive a daemon restart
//! as they do with `tailscaled`. The auth key is never written: it is a secret, and a
//! registered node does not need it again.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const PREFS_FILE: &str = "prefs.json";

/// Whether the session should run: `up` sets Running, `down` Stopped, `logout` LoggedOut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wanted {
    #[default]
    Running,
    Stopped,
    LoggedOut,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prefs {
    pub login_server: Option<String>,
    pub hostname: Option<String>,
    pub advertise_routes: Vec<IpNet>,
    pub advertise_exit_node: bool,
    pub accept_routes: bool,
    /// `None`: the default (masquerade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_subnet_routes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_node: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exit_node_allow_lan_access: bool,
    pub wanted: Wanted,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(PREFS_FILE)
}

/// The stored preferences, `None` when there are none yet. A file we cannot read or parse is
/// an error naming it: guessing could bring up a node the user took down.
pub fn load(state_dir: &Path) -> Result<Option<Prefs>, String> {
    let path = path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{}: {e} (fix or delete the file; it holds the settings of `meshgate up`)",
            path.display()
        )
    })
}

/// Writes `prefs` atomically (temporary file, fsync, rename), mode 0600.
pub fn save(state_dir: &Path, prefs: &Prefs) -> Result<(), String> {
    let path = path(state_dir);
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    fs::create_dir_all(state_dir).map_err(fail)?;
    let text = serde_json::to_string_pretty(prefs).map_err(|e| e.to_string())?;
    let temporary = path.with_extension("json.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.write_all(b"\n").map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&temporary, &path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshgate-prefs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saved_prefs_load_back_with_mode_0600() {
        let dir = temp_dir("roundtrip");
        assert_eq!(load(&dir).unwrap(), None);
        let prefs = Prefs {
            login_server: Some("https://c.example".into()),
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: true,
            wanted: Wanted::Stopped,
            ..Prefs::default()
        };
        save(&dir, &prefs).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(prefs));
        let mode = fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = temp_dir("damaged");
        fs::create_dir_all(&dir).unwrap();
        fs::write(path(&dir), "{\"wanted\": \"sideways\"}").unwrap();
        let err = load(&dir).unwrap_err();
        assert!(
            err.contains(PREFS_FILE) && err.contains("sideways"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
