//! The configuration file, in wg-quick's format so that people coming from `wg-quick` can read
//! and write it:
//!
//! ```text
//! [Interface]
//! PrivateKeyFile = /var/lib/meshgate/private.key   # or PrivateKey = <base64>
//! ListenPort = 41641
//! FwMark = 0x80000
//! Address = 100.64.0.1/32, fd7a:115c:a1e0::1/128
//! MTU = 1280
//! Table = 52            # routes for every peer's allowed IPs go here (off, main or a number)
//! RulePriority = 5270   # with Table and FwMark: `not fwmark FwMark lookup Table` (IPv4 and IPv6)
//!
//! [Peer]
//! PublicKey = <base64>
//! PresharedKey = <base64>
//! Endpoint = 192.0.2.1:41641
//! AllowedIPs = 100.64.0.2/32, 10.1.0.0/16
//! PersistentKeepalive = 25
//! ```
//!
//! Unknown keys are errors, not silently ignored: a typo must not leave a peer unprotected.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ipnet::IpNet;

use crate::device::{DeviceConfig, PeerConfig};
use crate::engine::InterfaceConfig;
use crate::error::Error;
use crate::key::{PresharedKey, PrivateKey, PublicKey};
use crate::rtnl::types::{Family, Route, Rule};

const MAIN_TABLE: u32 = 254;

/// Reads and parses a configuration file for interface `name`.
pub fn load(path: &Path, name: &str) -> Result<InterfaceConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse(&text, &path.display().to_string(), name)
}

/// Reads a private key file, refusing one that others can read.
pub fn read_private_key_file(path: &Path) -> Result<PrivateKey, Error> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidConfig(format!(
            "key file {} is accessible by group or others (mode {mode:04o}); run chmod 600 on it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    text.trim().parse()
}

/// Writes a private key file readable by its owner only.
pub fn write_private_key_file(path: &Path, key: &PrivateKey) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let context = || format!("writing key file {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(context(), e))?;
    // The mode given to open() applies only to new files.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(context(), e))?;
    writeln!(file, "{}", key.to_base64()).map_err(|e| Error::io(context(), e))
}

#[derive(Default)]
struct InterfaceSection {
    table: Option<u32>,
    rule_priority: Option<u32>,
}

pub fn parse(text: &str, source: &str, name: &str) -> Result<InterfaceConfig, Error> {
    let mut config = InterfaceConfig {
        name: name.to_string(),
        ..InterfaceConfig::default()
    };
    let mut interface = InterfaceSection::default();
    let mut seen_interface = false;
    let mut peer: Option<(usize, Option<PublicKey>, PeerConfig)> = None;

    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let error = |reason: String| Error::ConfigSyntax {
            path: source.to_string(),
            line: number,
            reason,
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            finish_peer(&mut config.device, peer.take(), source)?;
            match line {
                "[Interface]" if seen_interface => {
                    return Err(error("a second [Interface] section".into()));
                }
                "[Interface]" => seen_interface = true,
                "[Peer]" => peer = Some((number, None, PeerConfig::default())),
                other => return Err(error(format!("unknown section {other}"))),
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| error(format!("expected `Key = value`, found {line:?}")))?;
        let result = match &mut peer {
            Some((_, public_key, peer)) => peer_key(public_key, peer, key, value),
            None if seen_interface => interface_key(&mut config, &mut interface, key, value),
            None => Err(format!("{key} outside any section")),
        };
        result.map_err(error)?;
    }
    finish_peer(&mut config.device, peer.take(), source)?;
    if !seen_interface {
        return Err(Error::ConfigSyntax {
            path: source.to_string(),
            line: 1,
            reason: "no [Interface] section".into(),
        });
    }
    derive_routes(&mut config, &interface);
    config.device.validate()?;
    Ok(config)
}

fn finish_peer(
    device: &mut DeviceConfig,
    peer: Option<(usize, Option<PublicKey>, PeerConfig)>,
    source: &str,
) -> Result<(), Error> {
    let Some((line, key, peer)) = peer else {
        return Ok(());
    };
    let error = |reason: &str| Error::ConfigSyntax {
        path: source.to_string(),
        line,
        reason: reason.into(),
    };
    let key = key.ok_or_else(|| error("[Peer] without PublicKey"))?;
    if device.peers.insert(key, peer).is_some() {
        return Err(error(&format!("peer {key} appears twice")));
    }
    Ok(())
}

fn interface_key(
    config: &mut InterfaceConfig,
    section: &mut InterfaceSection,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let device = &mut config.device;
    match key.to_ascii_lowercase().as_str() {
        "privatekey" => device.private_key = Some(value.parse().map_err(|e: Error| e.to_string())?),
        "privatekeyfile" => {
            device.private_key =
                Some(read_private_key_file(Path::new(value)).map_err(|e| e.to_string())?);
        }
        "listenport" => device.listen_port = parse_number(value, "ListenPort")?,
        "fwmark" => {
            device.fwmark = if value == "off" {
                0
            } else {
                parse_number(value, "FwMark")?
            };
        }
        "address" => {
            for item in list(value) {
                let net: IpNet = item.parse().map_err(|_| {
                    format!("Address {item:?} is not an address with a prefix length")
                })?;
                config.net.addresses.insert(net);
            }
        }
        "mtu" => config.net.mtu = Some(parse_number(value, "MTU")?),
        "table" => {
            section.table = match value {
                "off" => None,
                "main" | "auto" => Some(MAIN_TABLE),
                number => Some(parse_number(number, "Table")?),
            };
        }
        "rulepriority" => section.rule_priority = Some(parse_number(value, "RulePriority")?),
        other => return Err(format!("unknown key {other} in [Interface]")),
    }
    Ok(())
}

fn peer_key(
    public_key: &mut Option<PublicKey>,
    peer: &mut PeerConfig,
    key: &str,
    value: &str,
) -> Result<(), String> {
    match key.to_ascii_lowercase().as_str() {
        "publickey" => *public_key = Some(value.parse().map_err(|e: Error| e.to_string())?),
        "presharedkey" => {
            peer.preshared_key = Some(value.parse::<PresharedKey>().map_err(|e| e.to_string())?);
        }
        "endpoint" => {
            peer.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| {
                format!("Endpoint {value:?} is not ip:port or [ipv6]:port (names are not resolved)")
            })?);
        }
        "allowedips" => {
            for item in list(value) {
                let net: IpNet = match item.parse() {
                    Ok(net) => net,
                    Err(_) => item
                        .parse::<std::net::IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| format!("AllowedIPs {item:?} is not an address or prefix"))?,
                };
                peer.allowed_ips.insert(net.trunc());
            }
        }
        "persistentkeepalive" => {
            peer.persistent_keepalive = if value == "off" {
                0
            } else {
                parse_number(value, "PersistentKeepalive")?
            };
        }
        other => return Err(format!("unknown key {other} in [Peer]")),
    }
    Ok(())
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_number<T: TryFrom<u64>>(value: &str, what: &str) -> Result<T, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse::<u64>(),
    };
    parsed
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{what} {value:?} is not a number in range"))
}

fn derive_routes(config: &mut InterfaceConfig, section: &InterfaceSection) {
    let Some(table) = section.table else {
        return;
    };
    let own: BTreeSet<IpNet> = config.net.addresses.iter().map(IpNet::trunc).collect();
    for peer in config.device.peers.values() {
        for net in &peer.allowed_ips {
            // The kernel already routes an address's own subnet in the main table.
            if table == MAIN_TABLE && own.contains(net) {
                continue;
            }
            config.net.routes.insert(Route {
                destination: *net,
                table,
            });
        }
    }
    if let (Some(priority), fwmark) = (section.rule_priority, config.device.fwmark)
        && fwmark != 0
        && table != MAIN_TABLE
    {
        for family in [Family::V4, Family::V6] {
            config.net.rules.insert(Rule {
                family,
                priority,
                fwmark: Some((fwmark, fwmark)),
                invert: true,
                table,
            });
        }
    }
}

/// The device part in `wg setconf` format. Contains the private key: write it only to a file
/// with mode 0600.
pub fn render_wg_setconf(device: &DeviceConfig) -> String {
    let mut out = String::from("[Interface]\n");
    if let Some(key) = &device.private_key {
        let _ = writeln!(out, "PrivateKey = {}", key.to_base64());
    }
    if device.listen_port != 0 {
        let _ = writeln!(out, "ListenPort = {}", device.listen_port);
    }
    if device.fwmark != 0 {
        let _ = writeln!(out, "FwMark = {:#x}", device.fwmark);
    }
    for (key, peer) in &device.peers {
        let _ = writeln!(out, "\n[Peer]\nPublicKey = {key}");
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "Endpoint = {endpoint}");
        }
        if !peer.allowed_ips.is_empty() {
            let ips: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "AllowedIPs = {}", ips.join(", "));
        }
        if peer.persistent_keepalive != 0 {
            let _ = writeln!(out, "PersistentKeepalive = {}", peer.persistent_keepalive);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn sample() -> String {
        format!(
            "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
             ListenPort = 41641\nFwMark = 0x80000\nAddress = 100.64.0.1/32, fd7a:115c:a1e0::1/128\n\
             MTU = 1280\nTable = 52\nRulePriority = 5270\n\n\
             [Peer] # the office\nPublicKey = {PEER}\nEndpoint = 192.0.2.1:41641\n\
             AllowedIPs = 100.64.0.2, 10.1.0.0/16\nPersistentKeepalive = 25\n"
        )
    }

    #[test]
    fn parses_a_full_file() {
        let config = parse(&sample(), "t.conf", "meshgate0").unwrap();
        assert_eq!(config.device.listen_port, 41641);
        assert_eq!(config.device.fwmark, 0x80000);
        assert_eq!(config.net.addresses.len(), 2);
        assert_eq!(config.net.mtu, Some(1280));
        let peer = &config.device.peers[&PEER.parse().unwrap()];
        assert!(peer.allowed_ips.contains(&"100.64.0.2/32".parse().unwrap()));
        assert_eq!(peer.persistent_keepalive, 25);
        assert_eq!(config.net.routes.len(), 2);
        assert!(config.net.routes.iter().all(|r| r.table == 52));
        assert_eq!(config.net.rules.len(), 2);
        assert!(
            config
                .net
                .rules
                .iter()
                .all(|r| r.invert && r.priority == 5270)
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = sample().replace("ListenPort = 41641", "ListenPort = 99999");
        let err = parse(&text, "t.conf", "wg0").unwrap_err().to_string();
        assert!(err.starts_with("t.conf:3:"), "{err}");
        assert!(err.contains("ListenPort"), "{err}");

        let text = sample().replace(PEER, "not-a-key");
        let err = parse(&text, "t.conf", "wg0").unwrap_err().to_string();
        assert!(
            err.contains("t.conf:11:") && err.contains("public key"),
            "{err}"
        );

        let text = sample().replace("MTU", "MUT");
        assert!(
            parse(&text, "t.conf", "wg0")
                .unwrap_err()
                .to_string()
                .contains("unknown key")
        );

        let text = sample().replace("Endpoint = 192.0.2.1:41641", "Endpoint = example.com:1");
        assert!(
            parse(&text, "t.conf", "wg0")
                .unwrap_err()
                .to_string()
                .contains("not resolved")
        );
    }

    #[test]
    fn overlapping_peers_are_refused() {
        let other = PrivateKey::generate().public_key();
        let text = format!(
            "{}\n[Peer]\nPublicKey = {other}\nAllowedIPs = 10.1.0.0/16\n",
            sample()
        );
        let err = parse(&text, "t.conf", "wg0").unwrap_err().to_string();
        assert!(err.contains("given to two peers"), "{err}");
    }

    #[test]
    fn a_peer_without_key_is_refused() {
        let text = "[Interface]\n[Peer]\nAllowedIPs = 10.0.0.1/32\n";
        let err = parse(text, "t.conf", "wg0").unwrap_err().to_string();
        assert!(
            err.contains("t.conf:2:") && err.contains("without PublicKey"),
            "{err}"
        );
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("meshgate-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("private.key");
        let key = PrivateKey::generate();
        write_private_key_file(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private_key_file(&path).unwrap(), key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renders_what_wg_setconf_reads() {
        let config = parse(&sample(), "t.conf", "wg0").unwrap();
        let text = render_wg_setconf(&config.device);
        assert!(text.contains("FwMark = 0x80000"));
        assert!(text.contains("AllowedIPs = 10.1.0.0/16, 100.64.0.2/32"));
        assert!(!text.contains("Address"));
    }
}
