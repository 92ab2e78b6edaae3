//! `meshgate demo`: the whole system so far, in throw-away labs of network namespaces.
//!
//! Act 1 (`wireguard`): meshgate's engine programs WireGuard between an office router and a
//! laptop behind a home NAT, writing only differences. Act 2 (`tailnet`): the `meshgate`
//! binary itself runs a coordinator, a DERP relay and two agents behind NATs whose UDP to each
//! other is dropped, so they reach each other through the relay. Every process, namespace and
//! file is removed at the end, also on error or Ctrl-C.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use meshgate_netns_lab::Host;
use meshgate_wg::BackendChoice;

use crate::cli::DemoArgs;

mod processes;
mod scratch;
mod steps;
mod tailnet;
mod wireguard;

use steps::Steps;

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Set by Ctrl-C. The demo runs on a blocking thread that cannot be cancelled from outside, so
/// its waits poll this and return an error, and the error's unwinding runs the Drop guards.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let backend: BackendChoice = args.backend.into();
    // The lab and the engine work from their own threads (namespaces are per thread).
    let mut demo = tokio::task::spawn_blocking(move || demo(backend));
    let result = tokio::select! {
        result = &mut demo => result,
        _ = tokio::signal::ctrl_c() => {
            INTERRUPTED.store(true, Ordering::Relaxed);
            println!("\n(interrupted: cleaning up)");
            demo.await
        }
    };
    result?.map_err(|e| e as Box<dyn std::error::Error>)?;
    Ok(())
}

fn demo(backend: BackendChoice) -> DemoResult<()> {
    let started = Instant::now();
    let mut steps = Steps::default();
    steps.act("Act 1: WireGuard programmed by meshgate, office and laptop");
    wireguard::act(&mut steps, backend)?;
    steps.act("Act 2: a tailnet, coordinator and DERP relay, two agents that UDP cannot join");
    tailnet::act(&mut steps, backend)?;
    steps.finish();
    println!(
        "\nThe demo took {:.1} s; nothing of it is left.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fails once Ctrl-C was pressed, so that bounded waits end early and clean up.
fn check_interrupted() -> DemoResult<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Three pings from `host` to `target`, printing ping's summary lines.
fn ping(host: &Host, target: IpAddr) -> DemoResult<()> {
    check_interrupted()?;
    let output = host.exec(
        ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2"]
            .into_iter()
            .chain([target.to_string().as_str()]),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text
        .lines()
        .filter(|l| l.contains("packets") || l.contains("rtt"))
    {
        println!("   {line}");
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("no answer from {target}").into())
    }
}
