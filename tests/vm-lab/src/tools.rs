//! Finding and running the host programs the lab depends on.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::Error;

/// Finds `name` on PATH, then in the sbin directories, which a non-root PATH often lacks but
/// which hold depmod and modprobe.
pub(crate) fn find(name: &str) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::ToolNotFound {
            tool: name.to_owned(),
            detail: "not on PATH nor in /usr/sbin, /sbin".to_owned(),
        })
}

/// Like [`find`], but an environment variable naming the program wins.
pub(crate) fn find_overridable(name: &str, env: &str) -> Result<PathBuf, Error> {
    match std::env::var_os(env) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if is_executable(&path) {
                Ok(path)
            } else {
                Err(Error::ToolNotFound {
                    tool: name.to_owned(),
                    detail: format!("{env}={} is not an executable file", path.display()),
                })
            }
        }
        _ => find(name),
    }
}

pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a preparation command to completion and returns its output, turning a failure into an
/// error that carries stderr (the tools' own explanation).
pub(crate) fn run(program: &Path, args: &[&OsStr]) -> Result<Output, Error> {
    let rendered = || {
        let mut s = program.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running `{}`", rendered()), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: rendered(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
