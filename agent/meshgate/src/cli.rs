//! The command line. Flags follow `wg`, `ip` and `tailscale` where the meaning is the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use meshgate_wg::BackendChoice;

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A router appliance for WireGuard mesh networks"
)]
pub struct Cli {
    /// Log filter, as RUST_LOG (e.g. `info`, `meshgate_wg=debug`).
    #[arg(long, global = true, env = "MESHGATE_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: apply the configuration, keep the kernel in line with it, adopt what a
    /// previous run left. Stopping it leaves the interface forwarding.
    Daemon(DaemonArgs),
    /// Inspect and program WireGuard interfaces directly.
    #[command(subcommand)]
    Wg(WgCommand),
    /// Build a throw-away lab of network namespaces, show what meshgate does in it, clean up.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// The kernel module where present, else wireguard-go.
    Auto,
    Kernel,
    Userspace,
}

impl From<BackendArg> for BackendChoice {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Kernel => BackendChoice::Kernel,
            BackendArg::Userspace => BackendChoice::Userspace,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Interface configuration in wg-quick format (see configs/meshgate0.conf).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value = "meshgate0")]
    pub iface: String,
    /// Where the node's private key lives when the configuration names none.
    #[arg(long, default_value = "/var/lib/meshgate")]
    pub state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// How often to compare the kernel with the configuration and mend drift.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub reconcile_every: Duration,
}

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Make IFACE match FILE, creating it if needed; only differences are written.
    Apply {
        iface: String,
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
    },
    /// Show an interface as the kernel (or wireguard-go) has it.
    Show {
        iface: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete an interface and meshgate's ip rules.
    Delete { iface: String },
    /// Print a new private key (base64), as `wg genkey`.
    Genkey,
    /// Read a private key on stdin, print its public key, as `wg pubkey`.
    Pubkey,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if duration.is_zero() {
        return Err("the interval must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
