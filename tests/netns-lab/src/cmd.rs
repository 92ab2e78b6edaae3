//! Running the external tools (`ip`, `nft`) and turning failures into [`Error::Command`] with the
//! command line and its stderr, because "exit status 2" alone never explains a broken lab.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// Renders a command as it would be typed, for error messages.
pub(crate) fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, capturing its output, whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("cannot run `{}`", render(cmd)), e))
}

/// Runs `cmd`, optionally feeding `stdin`, and fails unless it exits 0. Returns stdout.
pub(crate) fn checked(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let out = match stdin {
        None => output(cmd)?,
        Some(input) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::io(format!("cannot run `{}`", render(cmd)), e))?;
            // Dropping the handle after writing closes the pipe, which ends the tool's input.
            let written = child
                .stdin
                .take()
                .map(|mut s| s.write_all(input.as_bytes()));
            let out = child
                .wait_with_output()
                .map_err(|e| Error::io(format!("waiting for `{}`", render(cmd)), e))?;
            if let Some(Err(e)) = written {
                return Err(Error::io(format!("writing to `{}`", render(cmd)), e));
            }
            out
        }
    };
    ensure_success(cmd, out)
}

/// Turns a finished command's output into its stdout, or into an error carrying its stderr.
pub(crate) fn ensure_success(cmd: &Command, out: Output) -> Result<String> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        command: render(cmd),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// `ip <args>`, checked.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    checked(Command::new("ip").args(args), None)
}

/// Runs several `ip` commands inside one namespace with a single process (`ip -batch`), since
/// building a lab is mostly a long list of small `ip` calls.
pub(crate) fn ip_batch(netns: &str, lines: &[String]) -> Result<()> {
    let script = lines.join("\n") + "\n";
    checked(
        Command::new("ip").args(["-n", netns, "-batch", "-"]),
        Some(&script),
    )
    .map_err(|e| match e {
        // The batch's own error names only a line number: add the script to make it readable.
        Error::Command {
            command,
            status,
            stderr,
        } => Error::Command {
            command: format!("{command} <<< {script:?}"),
            status,
            stderr,
        },
        other => other,
    })?;
    Ok(())
}
