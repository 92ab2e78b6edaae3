//! meshgate: one binary for the agent daemon, its command line, the coordinator and the DERP
//! relay (the last two, the demo and the bench are cargo features; see README.md).

mod api;
mod appliance;
mod cli;
#[cfg(feature = "coordinator")]
mod coordinator;
mod daemon;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "relay")]
mod derp;
mod diag;
mod show;
mod wg;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("meshgate: ignoring bad --log filter {:?}: {e}", cli.log);
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Synchronous, and run at every boot of the appliance: no runtime.
    if let cli::Command::ApplianceConfig(args) = &cli.command {
        return appliance::run(args);
    }
    // Synchronous too: its own threads, each in the namespace it measures.
    #[cfg(feature = "bench")]
    if let cli::Command::Bench(args) = &cli.command {
        return match meshgate_bench::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshgate bench: {e}");
                ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
            }
        };
    }

    // The relay forwards between many connections at once: one worker per core. Everything
    // else is light and keeps to one thread.
    let mut builder = match cli.command {
        #[cfg(feature = "relay")]
        cli::Command::Derp(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meshgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Daemon(args) => daemon::run(args).await,
            cli::Command::Wg(command) => wg::run(command).await,
            #[cfg(feature = "demo")]
            cli::Command::Demo(args) => demo::run(args).await,
            cli::Command::Status(args) => api::status(args).await,
            cli::Command::Ip(args) => api::ip(args).await,
            cli::Command::Up(args) => api::up(args).await,
            cli::Command::Down(args) => api::down(args).await,
            cli::Command::Logout(args) => api::logout(args).await,
            #[cfg(feature = "coordinator")]
            cli::Command::Coordinator(command) => coordinator::run(command).await,
            #[cfg(feature = "relay")]
            cli::Command::Derp(args) => derp::run(args).await,
            cli::Command::Netcheck(args) => diag::netcheck(args).await,
            cli::Command::Ping(args) => diag::ping(args).await,
            cli::Command::ApplianceConfig(_) => unreachable!("handled before the runtime"),
            #[cfg(feature = "bench")]
            cli::Command::Bench(_) => unreachable!("handled before the runtime"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate: error: {e}");
            ExitCode::FAILURE
        }
    }
}
