//! Files: bounded reads of the config and the command line, and the last good config saved
//! atomically (it holds the auth key: mode 0600 from its creation on).

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Larger than any sane config or /proc/cmdline; a bound so a wrong path (a disk device, say)
/// is refused rather than read whole.
const MAX_SIZE: u64 = 64 * 1024;

/// The saved last good config in `state_dir`.
pub fn good_path(state_dir: &Path) -> PathBuf {
    state_dir.join("appliance.conf.good")
}

/// The file's text; `Ok(None)` when it does not exist.
pub fn read_text(path: &Path) -> Result<Option<String>, String> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(format!("larger than {} KiB", MAX_SIZE / 1024));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Writes `text` to `path` by way of a temporary file in the same directory (created 0600)
/// and a rename, so a power cut leaves the old file or the new one, never half of one. Makes
/// the directory (0700) if missing. An unchanged file is not rewritten (flash wears), only
/// set back to 0600.
pub fn save(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshgate-appliance-store-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn save_is_0600_and_replaces() {
        let dir = temp_dir("save");
        let path = good_path(&dir.join("state"));
        save(&path, "one\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\n");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("state")), 0o700);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, "one\n").unwrap();
        assert_eq!(
            mode(&path),
            0o600,
            "an unchanged file is still made private"
        );
        save(&path, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.join("state")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_are_bounded() {
        let dir = temp_dir("read");
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_text(&dir.join("absent")), Ok(None));
        let big = dir.join("big");
        fs::write(&big, vec![b'a'; MAX_SIZE as usize + 1]).unwrap();
        assert!(read_text(&big).unwrap_err().contains("larger than"));
        let binary = dir.join("bin");
        fs::write(&binary, b"ok\xff").unwrap();
        assert!(read_text(&binary).unwrap_err().contains("not UTF-8"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
