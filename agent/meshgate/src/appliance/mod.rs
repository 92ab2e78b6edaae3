//! `meshgate appliance-config`: the appliance image's one config file (plus overrides from the
//! kernel command line) checked, turned into shell assignments for the init script, and kept
//! as the last good config so a later bad edit does not take the box off the tailnet.
//!
//! The core is sans-I/O: [`parse`] (text → config or every error), [`RawConfig::apply_cmdline`]
//! (the `meshgate.<key>=<value>` words), [`ApplianceConfig::to_shell`]. [`run`] is the thin
//! wrapper that reads and writes the files. See README.md beside this file for the contract
//! with the image's init script.

mod config;
mod error;
mod raw;
mod shell;
mod store;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub use config::ApplianceConfig;
pub use error::ConfigError;
pub use raw::RawConfig;

use crate::cli::ApplianceConfigArgs;

/// Parses a config file's text; `source` names it in errors (`source:LINE: ...`).
pub fn parse(text: &str, source: &str) -> Result<ApplianceConfig, Vec<ConfigError>> {
    load(text, source, None)
}

/// The file's text with the kernel command line's overrides applied, then checked: every
/// error of both, or the config.
pub fn load(
    text: &str,
    source: &str,
    cmdline: Option<&str>,
) -> Result<ApplianceConfig, Vec<ConfigError>> {
    let (mut raw, mut errors) = RawConfig::parse(text, source);
    if let Some(cmdline) = cmdline {
        errors.extend(raw.apply_cmdline(cmdline));
    }
    match ApplianceConfig::from_raw(&raw) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The subcommand: prints the assignments and exits 0 with a valid config, or with the last
/// good one after printing the errors; exits 1 when there is neither.
pub fn run(args: &ApplianceConfigArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let ok = run_with(args, &mut stdout.lock(), &mut stderr.lock());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// [`run`] on any output streams; true for exit 0. Output errors are ignored: there is no
/// better place to report them than the streams that failed.
fn run_with(args: &ApplianceConfigArgs, out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let source = args.config.display().to_string();
    let good = store::good_path(&args.state_dir);
    let errors = match read_and_load(&args.config, &source, args.cmdline.as_deref()) {
        Ok(config) => {
            if let Err(e) = store::save(&good, &config.to_conf()) {
                // The config is fine; only next boot's fallback is lost. Boot on.
                let _ = writeln!(err, "meshgate: cannot save {}: {e}", good.display());
            }
            let _ = write!(out, "{}", config.to_shell());
            let _ = writeln!(out, "{}", shell::assignment("config_error", ""));
            return true;
        }
        Err(errors) => errors,
    };
    for e in &errors {
        let _ = writeln!(err, "meshgate: {e}");
    }
    let previous = match store::read_text(&good) {
        Ok(Some(text)) => parse(&text, &good.display().to_string())
            .map_err(|e| e.first().map(ToString::to_string).unwrap_or_default()),
        Ok(None) => Err("none saved yet".to_owned()),
        Err(e) => Err(e),
    };
    match previous {
        Ok(config) => {
            let _ = writeln!(
                err,
                "meshgate: using the previous good config ({})",
                good.display()
            );
            let first = errors.first().map(ToString::to_string).unwrap_or_default();
            let _ = write!(out, "{}", config.to_shell());
            let _ = writeln!(out, "{}", shell::assignment("config_error", &first));
            true
        }
        Err(why) => {
            let _ = writeln!(
                err,
                "meshgate: no previous good config to fall back on ({}: {why})",
                good.display()
            );
            false
        }
    }
}

/// Reads the file and the command line and loads them. A missing config file counts as an
/// empty one: the kernel command line alone may configure the box (it is only reported if
/// the result is not valid).
fn read_and_load(
    path: &Path,
    source: &str,
    cmdline: Option<&Path>,
) -> Result<ApplianceConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let text = match store::read_text(path) {
        Ok(Some(text)) => text,
        Ok(None) => {
            errors.push(ConfigError::new(source, "no such file"));
            String::new()
        }
        Err(what) => {
            return Err(vec![ConfigError::new(source, what)]);
        }
    };
    let cmdline_text = match cmdline {
        None => None,
        Some(file) => match store::read_text(file) {
            Ok(text) => Some(text.unwrap_or_default()),
            Err(what) => {
                let at = format!("cmdline ({})", file.display());
                return Err(vec![ConfigError::new(at, what)]);
            }
        },
    };
    match load(&text, source, cmdline_text.as_deref()) {
        Ok(config) => Ok(config),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("meshgate-appliance-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn run_on(dir: &Dir, config: &str, cmdline: Option<&str>) -> (bool, String, String) {
        let conf = dir.0.join("meshgate.conf");
        fs::write(&conf, config).unwrap();
        let cmdline = cmdline.map(|text| {
            let path = dir.0.join("cmdline");
            fs::write(&path, text).unwrap();
            path
        });
        let args = ApplianceConfigArgs {
            config: conf,
            cmdline,
            state_dir: dir.0.join("state"),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = run_with(&args, &mut out, &mut err);
        (
            ok,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn valid_config_is_saved_and_printed() {
        let dir = Dir::new("valid");
        let (ok, out, err) = run_on(
            &dir,
            "login_server = h:1\nauth_key = mgkey-s3cret\nhostname = gw\n",
            Some("quiet meshgate.hostname=edge\n"),
        );
        assert!(ok && err.is_empty(), "{err}");
        assert!(out.contains("MG_HOSTNAME='edge'\n"), "{out}");
        assert!(out.ends_with("MG_CONFIG_ERROR=''\n"), "{out}");
        let good = store::good_path(&dir.0.join("state"));
        let saved = parse(&fs::read_to_string(&good).unwrap(), "good").unwrap();
        assert_eq!(
            saved.hostname.as_deref(),
            Some("edge"),
            "saved with overrides"
        );
        assert_eq!(saved.auth_key.as_deref(), Some("mgkey-s3cret"));
        assert_eq!(
            fs::metadata(&good).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bad_config_falls_back_to_the_previous_good_one() {
        let dir = Dir::new("fallback");
        let (ok, first, _) = run_on(&dir, "login_server = h:1\nhostname = gw\n", None);
        assert!(ok);
        let (ok, out, err) = run_on(
            &dir,
            "login_server = h:1\nauth_key = mgkey-s3cret\nhostname = new\nbogus = 1\naccept_routes = maybe\n",
            None,
        );
        assert!(ok, "falls back: exit 0");
        let conf = dir.0.join("meshgate.conf").display().to_string();
        let good = store::good_path(&dir.0.join("state")).display().to_string();
        assert_eq!(
            err,
            format!(
                "meshgate: {conf}:4: unknown key \"bogus\"\n\
                 meshgate: {conf}:5: accept_routes: \"maybe\" is not yes/no, true/false, on/off or 1/0\n\
                 meshgate: using the previous good config ({good})\n"
            )
        );
        assert!(!err.contains("s3cret"));
        let (values, error_line) = out.rsplit_once("MG_CONFIG_ERROR=").unwrap();
        assert_eq!(values, first.rsplit_once("MG_CONFIG_ERROR=").unwrap().0);
        assert!(
            values.contains("MG_HOSTNAME='gw'\n"),
            "the old values: {out}"
        );
        assert_eq!(error_line, format!("'{conf}:4: unknown key \"bogus\"'\n"));
    }

    #[test]
    fn bad_config_without_a_good_one_fails() {
        let dir = Dir::new("nogood");
        let (ok, out, err) = run_on(&dir, "hostname = gw\n", Some("meshgate.accept_routes=x"));
        assert!(!ok);
        assert!(out.is_empty(), "nothing for the init script to eval: {out}");
        assert!(
            err.contains("cmdline: meshgate.accept_routes: \"x\" is not"),
            "{err}"
        );
        assert!(err.contains("login_server is required"), "{err}");
        assert!(err.contains("no previous good config"), "{err}");
        assert!(!store::good_path(&dir.0.join("state")).exists());
    }

    #[test]
    fn a_missing_file_is_fine_when_the_cmdline_configures() {
        let dir = Dir::new("cmdonly");
        let args = ApplianceConfigArgs {
            config: dir.0.join("absent.conf"),
            cmdline: None,
            state_dir: dir.0.join("state"),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!run_with(&args, &mut out, &mut err));
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("absent.conf: no such file"), "{err}");
        let cmdline = dir.0.join("cmdline");
        fs::write(&cmdline, "ro meshgate.login_server=https://c.example\n").unwrap();
        let args = ApplianceConfigArgs {
            cmdline: Some(cmdline),
            ..args
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(run_with(&args, &mut out, &mut err));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("MG_LOGIN_SERVER='https://c.example'")
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../../configs/appliance.conf");
        let config = parse(text, "appliance.conf").unwrap();
        assert_eq!(config.login_server, "https://coordinator.example.net");
        assert_eq!(
            config.routes(),
            ["192.168.50.0/24".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn a_bad_override_does_not_leave_the_file_value() {
        let errors = load(
            "login_server = h:1\nhostname = gw\n",
            "m",
            Some("meshgate.hostname=\"a\tb\""),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].at, "cmdline: meshgate.hostname");
    }
}
