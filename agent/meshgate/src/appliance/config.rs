//! The appliance config's meaning: each raw value checked and typed, every problem collected.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::error::ConfigError;
use super::raw::{Entry, RawConfig};

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    Dhcp,
    /// The interface's own address and its network's length, e.g. 192.168.50.1/24.
    Static(IpNet),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Dhcp => f.write_str("dhcp"),
            Address::Static(net) => write!(f, "{net}"),
        }
    }
}

/// A valid appliance config: what first boot joins and routes with.
#[derive(Clone, PartialEq, Eq)]
pub struct ApplianceConfig {
    /// As the daemon's `--login-server` takes it (checked with the same parser).
    pub login_server: String,
    /// Only needed until the node is registered: later boots reuse the keys in the state dir.
    pub auth_key: Option<String>,
    pub hostname: Option<String>,
    /// The routes the file or command line named (empty: see [`ApplianceConfig::routes`]).
    pub advertise_routes: Vec<IpNet>,
    pub advertise_exit_node: bool,
    pub accept_routes: bool,
    pub lan_interface: Option<String>,
    pub lan_address: Option<Address>,
    pub uplink_interface: String,
    pub uplink_address: Address,
    /// Only with a static `uplink_address`.
    pub uplink_gateway: Option<IpAddr>,
}

impl fmt::Debug for ApplianceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplianceConfig")
            .field("login_server", &self.login_server)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .field("advertise_routes", &self.advertise_routes)
            .field("advertise_exit_node", &self.advertise_exit_node)
            .field("accept_routes", &self.accept_routes)
            .field("lan_interface", &self.lan_interface)
            .field("lan_address", &self.lan_address)
            .field("uplink_interface", &self.uplink_interface)
            .field("uplink_address", &self.uplink_address)
            .field("uplink_gateway", &self.uplink_gateway)
            .finish()
    }
}

impl ApplianceConfig {
    /// The routes to advertise: the ones given, or else the LAN's network when the LAN has a
    /// static address (the usual subnet router needs no `advertise_routes` line).
    pub fn routes(&self) -> Vec<IpNet> {
        if !self.advertise_routes.is_empty() {
            return self.advertise_routes.clone();
        }
        match self.lan_address {
            Some(Address::Static(net)) => vec![net.trunc()],
            _ => Vec::new(),
        }
    }

    /// Interprets every value of `raw`; all problems at once, each naming its place.
    pub fn from_raw(raw: &RawConfig) -> Result<ApplianceConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut check = |key: &str, f: &dyn Fn(&str) -> Result<(), String>| {
            let entry = raw.get(key)?;
            match f(&entry.value) {
                Ok(()) => Some(entry.clone()),
                Err(what) => {
                    errors.push(ConfigError::new(&entry.at, what));
                    None
                }
            }
        };
        // Each value is checked by the closure and then converted by the infallible step below,
        // so a value that passed cannot fail later.
        let login_server = check("login_server", &|v| check_login_server(v));
        let auth_key = check("auth_key", &|v| check_auth_key(v));
        let hostname = check("hostname", &|v| check_hostname(v));
        let routes = check("advertise_routes", &|v| parse_routes(v).map(drop));
        let exit_node = check("advertise_exit_node", &|v| parse_bool(v).map(drop));
        let accept_routes = check("accept_routes", &|v| parse_bool(v).map(drop));
        let lan_interface = check("lan_interface", &|v| check_ifname(v));
        let lan_address = check("lan_address", &|v| parse_address(v).map(drop));
        let uplink_interface = check("uplink_interface", &|v| check_ifname(v));
        let uplink_address = check("uplink_address", &|v| parse_address(v).map(drop));
        let uplink_gateway = check("uplink_gateway", &|v| parse_ip(v).map(drop));

        let optional = |entry: Option<Entry>| entry.map(|e| e.value).filter(|v| !v.is_empty());
        let config = ApplianceConfig {
            login_server: login_server.map(|e| e.value).unwrap_or_default(),
            auth_key: optional(auth_key),
            hostname: optional(hostname),
            advertise_routes: routes
                .and_then(|e| parse_routes(&e.value).ok())
                .unwrap_or_default(),
            advertise_exit_node: exit_node
                .and_then(|e| parse_bool(&e.value).ok().flatten())
                .unwrap_or(false),
            accept_routes: accept_routes
                .and_then(|e| parse_bool(&e.value).ok().flatten())
                .unwrap_or(false),
            lan_interface: optional(lan_interface),
            lan_address: lan_address.and_then(|e| parse_address(&e.value).ok().flatten()),
            uplink_interface: optional(uplink_interface).unwrap_or_else(|| "eth0".to_owned()),
            uplink_address: uplink_address
                .and_then(|e| parse_address(&e.value).ok().flatten())
                .unwrap_or(Address::Dhcp),
            uplink_gateway: uplink_gateway.and_then(|e| parse_ip(&e.value).ok().flatten()),
        };

        if raw.get("login_server").is_none() {
            errors.push(ConfigError::new(
                &raw.source,
                "login_server is required (https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)",
            ));
        }
        errors.extend(cross_checks(raw, &config));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

/// Rules between keys, reported at the later key's place.
fn cross_checks(raw: &RawConfig, config: &ApplianceConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let at = |key: &str| raw.get(key).map_or(raw.source.clone(), |e| e.at.clone());
    if config.lan_address.is_some() && config.lan_interface.is_none() {
        errors.push(ConfigError::new(
            at("lan_address"),
            "needs lan_interface (the interface that gets the address)",
        ));
    }
    if config.lan_interface.as_deref() == Some(config.uplink_interface.as_str()) {
        errors.push(ConfigError::new(
            at("lan_interface"),
            format!("{:?} is also the uplink_interface", config.uplink_interface),
        ));
    }
    if let Some(gateway) = config.uplink_gateway {
        match config.uplink_address {
            Address::Dhcp => errors.push(ConfigError::new(
                at("uplink_gateway"),
                "only meaningful with a static uplink_address (DHCP brings its own gateway)",
            )),
            Address::Static(net) if net.addr().is_ipv4() != gateway.is_ipv4() => {
                errors.push(ConfigError::new(
                    at("uplink_gateway"),
                    format!("{gateway} is not the same IP version as uplink_address {net}"),
                ));
            }
            Address::Static(_) => {}
        }
    }
    errors
}

fn check_login_server(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty (https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)".to_owned());
    }
    // The daemon's own parser, so what passes here is what `--login-server` accepts.
    match meshgate_control::ControlServer::parse(value, None) {
        Ok(_) => Ok(()),
        Err(meshgate_control::EndpointError::Url { reason, .. }) => Err(format!(
            "{value:?}: {reason} (expected https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The value is never quoted back: it is a secret.
fn check_auth_key(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_whitespace) {
        return Err("contains whitespace (value not shown)".to_owned());
    }
    Ok(())
}

/// One DNS label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
fn check_hostname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let ok = value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a DNS label (1-63 letters, digits and '-', no '-' at either end)"
        ))
    }
}

/// Comma-separated networks; empty is none. Host bits and /0 are refused: the first is
/// nearly always a typo, the second is what `advertise_exit_node` is for.
fn parse_routes(value: &str) -> Result<Vec<IpNet>, String> {
    let mut routes: Vec<IpNet> = Vec::new();
    if value.trim().is_empty() {
        return Ok(routes);
    }
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("an empty entry between commas".to_owned());
        }
        let net: IpNet = item
            .parse()
            .map_err(|_| format!("{item:?} is not a CIDR"))?;
        if net != net.trunc() {
            return Err(format!(
                "{item:?} has host bits set (the network is {})",
                net.trunc()
            ));
        }
        if net.prefix_len() == 0 {
            return Err(format!(
                "{item:?}: a default route is advertised with advertise_exit_node = yes"
            ));
        }
        if !routes.contains(&net) {
            routes.push(net);
        }
    }
    Ok(routes)
}

/// `None` for an empty value (the default applies).
fn parse_bool(value: &str) -> Result<Option<bool>, String> {
    match value.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "yes" | "true" | "on" | "1" => Ok(Some(true)),
        "no" | "false" | "off" | "0" => Ok(Some(false)),
        _ => Err(format!(
            "{value:?} is not yes/no, true/false, on/off or 1/0"
        )),
    }
}

/// As the kernel checks interface names (`dev_valid_name`): 1-15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
fn check_ifname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 15 {
        return Err(format!("{value:?} is longer than 15 bytes"));
    }
    if value == "." || value == ".." {
        return Err(format!("{value:?} is not an interface name"));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "{value:?} is not an interface name (no '/', ':' or whitespace)"
        ));
    }
    Ok(())
}

/// `dhcp`, or an address with its prefix length. `None` for an empty value.
fn parse_address(value: &str) -> Result<Option<Address>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.eq_ignore_ascii_case("dhcp") {
        return Ok(Some(Address::Dhcp));
    }
    let net: IpNet = value.parse().map_err(|_| {
        format!("{value:?} is neither dhcp nor an address with its prefix, like 192.168.50.1/24")
    })?;
    let is_network = net.addr() == net.network() && net.prefix_len() < net.max_prefix_len() - 1;
    if is_network && net.addr().is_ipv4() {
        return Err(format!(
            "{value:?} is the network's own address; give this host's, like {}",
            IpNet::new(first_host(net), net.prefix_len()).unwrap_or(net)
        ));
    }
    Ok(Some(Address::Static(net)))
}

fn first_host(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4((u32::from(v4.network()).saturating_add(1)).into()),
        IpNet::V6(v6) => IpAddr::V6((u128::from(v6.network()).saturating_add(1)).into()),
    }
}

fn parse_ip(value: &str) -> Result<Option<IpAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{value:?} is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApplianceConfig, Vec<String>> {
        let (raw, errors) = RawConfig::parse(text, "m.conf");
        assert!(errors.is_empty(), "{errors:?}");
        ApplianceConfig::from_raw(&raw).map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    fn error(text: &str) -> String {
        let errors = parse(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn defaults() {
        let config = parse("login_server = https://c.example\n").unwrap();
        assert_eq!(config.login_server, "https://c.example");
        assert_eq!(config.auth_key, None);
        assert_eq!(config.hostname, None);
        assert!(config.advertise_routes.is_empty() && config.routes().is_empty());
        assert!(!config.advertise_exit_node && !config.accept_routes);
        assert_eq!(config.lan_interface, None);
        assert_eq!(config.lan_address, None);
        assert_eq!(config.uplink_interface, "eth0");
        assert_eq!(config.uplink_address, Address::Dhcp);
        assert_eq!(config.uplink_gateway, None);
    }

    #[test]
    fn every_key() {
        let config = parse(
            "login_server = \"http://10.0.0.1:8080\"\n\
             auth_key = mgkey-abc\n\
             hostname = edge-1\n\
             advertise_routes = 10.1.0.0/16, fd00::/64,10.1.0.0/16\n\
             advertise_exit_node = On\n\
             accept_routes = 1\n\
             lan_interface = eth1\n\
             lan_address = 192.168.50.1/24\n\
             uplink_interface = wan0\n\
             uplink_address = 203.0.113.5/24\n\
             uplink_gateway = 203.0.113.1\n",
        )
        .unwrap();
        assert_eq!(config.auth_key.as_deref(), Some("mgkey-abc"));
        assert_eq!(config.hostname.as_deref(), Some("edge-1"));
        let routes: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()];
        assert_eq!(config.advertise_routes, routes);
        assert_eq!(config.routes(), routes, "given routes win over the LAN's");
        assert!(config.advertise_exit_node && config.accept_routes);
        assert_eq!(config.lan_interface.as_deref(), Some("eth1"));
        assert_eq!(
            config.lan_address,
            Some(Address::Static("192.168.50.1/24".parse().unwrap()))
        );
        assert_eq!(config.uplink_interface, "wan0");
        assert_eq!(config.uplink_gateway, Some("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn lan_network_is_the_default_route() {
        let config =
            parse("login_server = h:1\nlan_interface = eth1\nlan_address = 192.168.50.1/24\n")
                .unwrap();
        assert_eq!(
            config.routes(),
            ["192.168.50.0/24".parse::<IpNet>().unwrap()]
        );
        let dhcp = parse("login_server = h:1\nlan_interface = eth1\nlan_address = DHCP\n").unwrap();
        assert_eq!(dhcp.lan_address, Some(Address::Dhcp));
        assert!(dhcp.routes().is_empty());
    }

    #[test]
    fn bools() {
        for (text, want) in [
            ("yes", true),
            ("no", false),
            ("TRUE", true),
            ("false", false),
            ("on", true),
            ("off", false),
            ("1", true),
            ("0", false),
        ] {
            let config = parse(&format!("login_server = h:1\naccept_routes = {text}\n")).unwrap();
            assert_eq!(config.accept_routes, want, "{text}");
        }
        assert_eq!(
            error("login_server = h:1\nadvertise_exit_node = maybe\n"),
            "m.conf:2: advertise_exit_node: \"maybe\" is not yes/no, true/false, on/off or 1/0"
        );
    }

    #[test]
    fn login_server_forms() {
        for good in [
            "https://c.example",
            "https://c.example:8443/",
            "http://10.0.0.1",
            "h:1",
        ] {
            assert!(parse(&format!("login_server = {good}\n")).is_ok(), "{good}");
        }
        for bad in [
            "c.example",
            "ftp://c.example",
            "https://c.example/path",
            "h:0",
        ] {
            let message = error(&format!("login_server = {bad}\n"));
            assert!(message.starts_with("m.conf:1: login_server: "), "{message}");
        }
        assert_eq!(
            error("login_server = c.example\n"),
            "m.conf:1: login_server: \"c.example\": no port (give HOST:PORT, or a URL) \
             (expected https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)"
        );
        assert_eq!(
            error("hostname = gw\n"),
            "m.conf: login_server is required (https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)"
        );
        assert!(error("login_server =\n").contains("login_server: is empty"));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            error("login_server = h:1\nadvertise_routes = 10.0.0.0/8, 10.0.0.0/33\n"),
            "m.conf:2: advertise_routes: \"10.0.0.0/33\" is not a CIDR"
        );
        assert!(error("login_server = h:1\nadvertise_routes = 10.0.0.1/8\n").contains("host bits"));
        assert!(error("login_server = h:1\nadvertise_routes = 0.0.0.0/0\n").contains("exit_node"));
        assert!(error("login_server = h:1\nadvertise_routes = 10.0.0.0/8,,\n").contains("empty"));
        assert!(error("login_server = h:1\nhostname = a_b\n").contains("not a DNS label"));
        assert!(error("login_server = h:1\nhostname = -a\n").contains("not a DNS label"));
        assert!(
            error(&format!(
                "login_server = h:1\nhostname = {}\n",
                "a".repeat(64)
            ))
            .contains("DNS label")
        );
        assert!(
            parse(&format!(
                "login_server = h:1\nhostname = {}\n",
                "a".repeat(63)
            ))
            .is_ok()
        );
        assert!(error("login_server = h:1\nuplink_gateway = 10.0.0.256\n").contains("not an IP"));
        assert!(
            error("login_server = h:1\nlan_interface = e\nlan_address = 10.0.0.0/24\n")
                .contains("network's own address; give this host's, like 10.0.0.1/24")
        );
        assert!(
            error("login_server = h:1\nlan_interface = e\nlan_address = 10.0.0.1\n")
                .contains("neither dhcp nor")
        );
    }

    #[test]
    fn interface_names_as_the_kernel_checks_them() {
        assert!(parse("login_server = h:1\nuplink_interface = enp0s31f6.100\n").is_ok());
        assert!(
            parse(&format!(
                "login_server = h:1\nuplink_interface = {}\n",
                "a".repeat(15)
            ))
            .is_ok()
        );
        for bad in ["aaaaaaaaaaaaaaaa", "a/b", "eth0:1", "\"a b\"", "..", "."] {
            let message = error(&format!("login_server = h:1\nlan_interface = {bad}\n"));
            assert!(
                message.starts_with("m.conf:2: lan_interface: "),
                "{message}"
            );
        }
    }

    #[test]
    fn rules_between_keys() {
        assert_eq!(
            error("login_server = h:1\nlan_address = 10.0.0.1/24\n"),
            "m.conf:2: lan_address: needs lan_interface (the interface that gets the address)"
        );
        assert!(error("login_server = h:1\nlan_interface = eth0\n").contains("also the uplink"));
        assert!(
            error("login_server = h:1\nuplink_gateway = 10.0.0.1\n")
                .contains("static uplink_address")
        );
        assert!(
            error("login_server = h:1\nuplink_address = 10.0.0.2/24\nuplink_gateway = fe80::1\n")
                .contains("same IP version")
        );
    }

    #[test]
    fn all_errors_are_collected() {
        let errors =
            parse("hostname = a_b\nadvertise_routes = 10.0.0.0/33\naccept_routes = sure\n")
                .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("m.conf:1: hostname"));
        assert!(errors[1].starts_with("m.conf:2: advertise_routes"));
        assert!(errors[2].starts_with("m.conf:3: accept_routes"));
        assert!(errors[3].starts_with("m.conf: login_server is required"));
    }

    #[test]
    fn the_auth_key_stays_out_of_debug_and_errors() {
        let config = parse("login_server = h:1\nauth_key = mgkey-topsecret\n").unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("topsecret") && debug.contains("<redacted>"),
            "{debug}"
        );
        let message = error("login_server = h:1\nauth_key = \"mgkey top secret\"\n");
        assert_eq!(
            message,
            "m.conf:2: auth_key: contains whitespace (value not shown)"
        );
    }
}
