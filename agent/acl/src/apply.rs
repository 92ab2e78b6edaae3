//! Handing a ruleset to `nft`. The nftables crate's helper drops nft's stderr (its issue #209),
//! which is the only place nft says what it refused, so we run `nft -j -f -` ourselves.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::nft::{FAMILY_NAME, TABLE};

/// Applies one nftables JSON document (as [`crate::nft::compile`] makes) in one transaction:
/// either all of it takes effect or none of it, and nft's complaint comes back in the error.
pub fn apply(ruleset_json: &str) -> Result<(), Error> {
    run_nft(&["-j", "-f", "-"], Some(ruleset_json))
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

fn run_nft(args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means nft exited early; its status and stderr say why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(Error::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Nft {
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
