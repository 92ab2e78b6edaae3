//! `meshgate bench --suite`: the other benchmarks of the project, each measured against its
//! own baseline in the same run, listed with the command that runs it, or run one after
//! another from the workspace root (`--suite-run`). They are cargo bench targets and tests of
//! the workspace, so they need its source tree, not just the `meshgate` binary.

use std::path::Path;
use std::process::Command;

use crate::error::Error;
use crate::stop::Stop;

/// One benchmark of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    /// What it prints its ratio against.
    pub baseline: &'static str,
    /// cargo arguments, from the workspace root.
    pub cargo: &'static [&'static str],
}

/// The suite, cheapest first.
pub const SUITE: &[Entry] = &[
    Entry {
        name: "derp_relay",
        baseline: "a plain TCP forwarder on loopback, same clients, same run",
        cargo: &["bench", "-p", "meshgate-benches", "--bench", "derp_relay"],
    },
    Entry {
        name: "coordinator_scale",
        baseline: "the same changes at 65 nodes (vs 650)",
        cargo: &[
            "bench",
            "-p",
            "meshgate-benches",
            "--bench",
            "coordinator_scale",
        ],
    },
    Entry {
        name: "time_to_direct",
        baseline: "the no-NAT case of the same run (needs `cargo build -p meshgate` first)",
        cargo: &[
            "bench",
            "--profile",
            "dev",
            "-p",
            "meshgate-benches",
            "--bench",
            "time_to_direct",
        ],
    },
    Entry {
        name: "acl_forwarding",
        baseline: "no filter, nftables sets and linear nftables in the same rounds",
        cargo: &[
            "bench",
            "-p",
            "meshgate-benches",
            "--bench",
            "acl_forwarding",
        ],
    },
    Entry {
        name: "router_throughput",
        baseline: "hand-configured kernel WireGuard (ip/wg/nft), VM lab, same run \
                   (needs `cargo build --release -p meshgate` first: a debug agent's CPU \
                   under the VM's emulation skews the ratio; quiet host)",
        cargo: &[
            "bench",
            "-p",
            "meshgate-benches",
            "--bench",
            "router_throughput",
        ],
    },
    Entry {
        name: "footprint",
        baseline: "tailscaled's smallest build (16.6 MB binary, ~32 MB RSS; needs `cargo build \
                   -p meshgate` first, for the coordinator)",
        cargo: &[
            "test",
            "-p",
            "meshgate-appliance-image",
            "--test",
            "footprint",
            "--",
            "--nocapture",
        ],
    },
    Entry {
        name: "netlink_apply",
        baseline: "`wg syncconf` on the same kernel WireGuard device (VM lab, ~20 min)",
        cargo: &[
            "bench",
            "-p",
            "meshgate-benches",
            "--bench",
            "netlink_apply",
        ],
    },
];

/// The list, one benchmark a line, with its command.
pub fn listing() -> String {
    let mut s = String::from(
        "Other benchmarks (each prints its ratio against its baseline; run from the workspace root, as root):\n",
    );
    for e in SUITE {
        s.push_str(&format!(
            "  {:<18} vs {}\n  {:<18} cargo {}\n",
            e.name,
            e.baseline,
            "",
            e.cargo.join(" ")
        ));
    }
    s
}

/// The entries named in `only` (all without it), refusing names the suite does not have.
pub fn select(only: Option<&[String]>) -> Result<Vec<&'static Entry>, Error> {
    let Some(names) = only else {
        return Ok(SUITE.iter().collect());
    };
    names
        .iter()
        .map(|name| {
            SUITE.iter().find(|e| e.name == name).ok_or_else(|| {
                let known: Vec<&str> = SUITE.iter().map(|e| e.name).collect();
                Error::Invalid(format!(
                    "--only {name}: no such benchmark (the suite has {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Runs `entries` in turn from `root` (a workspace checkout); stops at Ctrl-C. Returns the
/// names that failed.
pub fn run_all(
    root: &Path,
    entries: &[&'static Entry],
    stop: &Stop,
) -> Result<Vec<&'static str>, Error> {
    if !root.join("benches/Cargo.toml").exists() {
        return Err(Error::Invalid(format!(
            "--suite-run needs the meshgate workspace: {} has no benches/Cargo.toml \
             (run it from the checkout's root)",
            root.display()
        )));
    }
    let mut failed = Vec::new();
    for e in entries {
        stop.check()?;
        eprintln!("== {} (cargo {})", e.name, e.cargo.join(" "));
        let status = Command::new("cargo")
            .args(e.cargo)
            .current_dir(root)
            .status()
            .map_err(|err| Error::io("starting cargo", err))?;
        if !status.success() {
            failed.push(e.name);
        }
    }
    stop.check()?;
    Ok(failed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_selects_known_names() {
        let picked = super::select(Some(&["footprint".to_owned()])).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].name, "footprint");
        assert_eq!(super::select(None).unwrap().len(), super::SUITE.len());
        let e = super::select(Some(&["nope".to_owned()])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn lists_every_entry_with_its_command() {
        let l = super::listing();
        for e in super::SUITE {
            assert!(l.contains(&e.cargo.join(" ")), "{}", e.name);
        }
    }
}
