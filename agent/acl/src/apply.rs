//! Handing a ruleset to `nft`. The nftables crate's helper drops nft's stderr (its issue #209),
//! which is the only place nft says what it refused, so we run `nft -j -f -` ourselves.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::nft::{FAMILY_NAME, FILTER_CHAIN, TABLE};

/// Applies one nftables JSON document (as [`crate::nft::compile`] makes) in one transaction:
/// either all of it takes effect or none of it, and nft's complaint comes back in the error.
pub fn apply(ruleset_json: &str) -> Result<(), Error> {
    run_nft(&["-j", "-f", "-"], Some(ruleset_json)).map(drop)
}

/// Deletes our table (and with it our chains and sets); other tables are not touched.
/// Succeeds when the table is already gone.
pub fn remove() -> Result<(), Error> {
    // `destroy` would do this in one go but needs nft 1.0.8; ours is 1.0.6, so add-then-delete
    // in one transaction, which cannot fail on a missing table.
    let doc = format!(
        r#"{{"nftables":[{{"add":{{"table":{{"family":"{FAMILY_NAME}","name":"{TABLE}"}}}}}},{{"delete":{{"table":{{"family":"{FAMILY_NAME}","name":"{TABLE}"}}}}}}]}}"#
    );
    apply(&doc)
}

/// Packets our filter chain passed and dropped since the table was last replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub passed: u64,
    pub dropped: u64,
}

/// Reads the counters of our filter chain's rules.
pub fn counters() -> Result<Counters, Error> {
    let listing = run_nft(
        &["-j", "list", "chain", FAMILY_NAME, TABLE, FILTER_CHAIN],
        None,
    )?;
    let doc: serde_json::Value = serde_json::from_str(&listing)?;
    let mut counters = Counters::default();
    let rules = doc["nftables"].as_array().into_iter().flatten();
    for expr in rules.filter_map(|o| o["rule"]["expr"].as_array()) {
        let packets = expr
            .iter()
            .find_map(|e| e["counter"]["packets"].as_u64())
            .unwrap_or(0);
        if expr.iter().any(|e| e.get("drop").is_some()) {
            counters.dropped += packets;
        } else {
            counters.passed += packets;
        }
    }
    Ok(counters)
}

fn run_nft(args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means nft exited early; its status and stderr say why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(Error::Spawn)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Nft {
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
