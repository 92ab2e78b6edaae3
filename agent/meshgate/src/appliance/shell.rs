//! The two ways a valid config is written out: shell assignments for the image's init script
//! (`eval "$(meshgate appliance-config ...)"`) and the config file format, for the saved last
//! good config.

use std::fmt::Write as _;

use super::config::ApplianceConfig;

impl ApplianceConfig {
    /// One `MG_<KEY>='value'` line per key, every key, in a fixed order: unset keys are `''`,
    /// booleans `true`/`false`, routes comma-joined (the LAN's network included when it is
    /// the route advertised). Safe to `eval` whatever a value holds.
    pub fn to_shell(&self) -> String {
        let routes: Vec<String> = self.routes().iter().map(ToString::to_string).collect();
        let values: [(&str, String); 11] = [
            ("login_server", self.login_server.clone()),
            ("auth_key", self.auth_key.clone().unwrap_or_default()),
            ("hostname", self.hostname.clone().unwrap_or_default()),
            ("advertise_routes", routes.join(",")),
            ("advertise_exit_node", self.advertise_exit_node.to_string()),
            ("accept_routes", self.accept_routes.to_string()),
            (
                "lan_interface",
                self.lan_interface.clone().unwrap_or_default(),
            ),
            (
                "lan_address",
                self.lan_address.map(|a| a.to_string()).unwrap_or_default(),
            ),
            ("uplink_interface", self.uplink_interface.clone()),
            ("uplink_address", self.uplink_address.to_string()),
            (
                "uplink_gateway",
                self.uplink_gateway
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            ),
        ];
        let mut out = String::new();
        for (key, value) in values {
            let _ = writeln!(out, "{}", assignment(key, &value));
        }
        out
    }

    /// The config in its own file format, every value double-quoted; only the keys that are
    /// set. Parsing it back gives the same config.
    pub fn to_conf(&self) -> String {
        let mut lines: Vec<(&str, String)> = vec![("login_server", self.login_server.clone())];
        if let Some(key) = &self.auth_key {
            lines.push(("auth_key", key.clone()));
        }
        if let Some(name) = &self.hostname {
            lines.push(("hostname", name.clone()));
        }
        if !self.advertise_routes.is_empty() {
            let routes: Vec<String> = self
                .advertise_routes
                .iter()
                .map(ToString::to_string)
                .collect();
            lines.push(("advertise_routes", routes.join(",")));
        }
        lines.push(("advertise_exit_node", yes_no(self.advertise_exit_node)));
        lines.push(("accept_routes", yes_no(self.accept_routes)));
        if let Some(lan) = &self.lan_interface {
            lines.push(("lan_interface", lan.clone()));
        }
        if let Some(address) = self.lan_address {
            lines.push(("lan_address", address.to_string()));
        }
        lines.push(("uplink_interface", self.uplink_interface.clone()));
        lines.push(("uplink_address", self.uplink_address.to_string()));
        if let Some(gateway) = self.uplink_gateway {
            lines.push(("uplink_gateway", gateway.to_string()));
        }
        let mut out = String::from(
            "# The last appliance config that was valid, written by `meshgate appliance-config`.\n\
             # It is used when the config file (or the kernel command line) has an error.\n",
        );
        for (key, value) in lines {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{key} = \"{escaped}\"");
        }
        out
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// `MG_<KEY>='value'`.
pub fn assignment(key: &str, value: &str) -> String {
    format!("MG_{}={}", key.to_ascii_uppercase(), quote(value))
}

/// Single-quotes `value` for POSIX sh: inside single quotes nothing is special except the
/// closing quote, so each `'` becomes `'\''` (close, escaped quote, reopen).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::super::config::Address;
    use super::super::raw::RawConfig;
    use super::*;
    use std::process::Command;

    fn parse(text: &str) -> ApplianceConfig {
        let (raw, errors) = RawConfig::parse(text, "m.conf");
        assert!(errors.is_empty(), "{errors:?}");
        ApplianceConfig::from_raw(&raw).unwrap()
    }

    /// Runs `script` then prints `$var` with each shell here; what each printed.
    fn eval_in_shells(script: &str, var: &str) -> Vec<(String, String)> {
        let mut results = Vec::new();
        for shell in [&["/bin/sh"][..], &["busybox", "sh"][..], &["dash"][..]] {
            let mut command = Command::new(shell[0]);
            command.args(&shell[1..]).args([
                "-c",
                &format!("eval \"$0\"; printf %s \"${var}\""),
                script,
            ]);
            // busybox or dash may be missing; /bin/sh never is.
            let Ok(output) = command.output() else {
                assert_ne!(shell[0], "/bin/sh", "no /bin/sh");
                continue;
            };
            assert!(output.status.success(), "{shell:?}: {output:?}");
            results.push((shell.join(" "), String::from_utf8(output.stdout).unwrap()));
        }
        results
    }

    #[test]
    fn every_key_is_printed() {
        let shell = parse("login_server = h:1\n").to_shell();
        assert_eq!(
            shell,
            "MG_LOGIN_SERVER='h:1'\n\
             MG_AUTH_KEY=''\n\
             MG_HOSTNAME=''\n\
             MG_ADVERTISE_ROUTES=''\n\
             MG_ADVERTISE_EXIT_NODE='false'\n\
             MG_ACCEPT_ROUTES='false'\n\
             MG_LAN_INTERFACE=''\n\
             MG_LAN_ADDRESS=''\n\
             MG_UPLINK_INTERFACE='eth0'\n\
             MG_UPLINK_ADDRESS='dhcp'\n\
             MG_UPLINK_GATEWAY=''\n"
        );
        let shell = parse(
            "login_server = h:1\nadvertise_exit_node = yes\nlan_interface = eth1\n\
             lan_address = 192.168.50.1/24\n",
        )
        .to_shell();
        assert!(
            shell.contains("MG_ADVERTISE_ROUTES='192.168.50.0/24'\n"),
            "{shell}"
        );
        assert!(shell.contains("MG_ADVERTISE_EXIT_NODE='true'\n"), "{shell}");
        assert!(
            shell.contains("MG_LAN_ADDRESS='192.168.50.1/24'\n"),
            "{shell}"
        );
    }

    #[test]
    fn hostile_values_round_trip_through_sh() {
        // Only auth_key takes arbitrary text: quotes, $, backticks, backslashes, ;, globs.
        let nasty = "a'b\"c$(id)`id`\\n$HOME;*''#\\";
        let config = ApplianceConfig {
            auth_key: Some(nasty.to_owned()),
            ..parse("login_server = h:1\n")
        };
        let results = eval_in_shells(&config.to_shell(), "MG_AUTH_KEY");
        assert!(!results.is_empty());
        for (shell, printed) in results {
            assert_eq!(printed, nasty, "{shell}");
        }
        // Quoting alone holds for what the config refuses too: spaces, newlines.
        let multiline = "two words\nand 'a line'\n";
        for (shell, printed) in eval_in_shells(&assignment("x", multiline), "MG_X") {
            assert_eq!(printed, multiline, "{shell}");
        }
        // The same value survives the config file format.
        let conf = config.to_conf();
        let (raw, errors) = RawConfig::parse(&conf, "good");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ApplianceConfig::from_raw(&raw).unwrap(), config);
    }

    #[test]
    fn to_conf_round_trips() {
        for text in [
            "login_server = h:1\n",
            "login_server = https://c.example\nauth_key = k\nhostname = gw\n\
             advertise_routes = 10.0.0.0/8,fd00::/8\nadvertise_exit_node = yes\n\
             accept_routes = yes\nlan_interface = eth1\nlan_address = 192.168.1.1/24\n\
             uplink_interface = wan\nuplink_address = 198.51.100.2/30\n\
             uplink_gateway = 198.51.100.1\n",
            "login_server = h:1\nlan_interface = br-lan\nlan_address = dhcp\n",
        ] {
            let config = parse(text);
            assert_eq!(parse(&config.to_conf()), config, "{text}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(assignment("hostname", "gw"), "MG_HOSTNAME='gw'");
    }

    // Addresses print as the parser reads them.
    #[test]
    fn address_display() {
        assert_eq!(Address::Dhcp.to_string(), "dhcp");
        assert_eq!(
            Address::Static("10.0.0.1/24".parse().unwrap()).to_string(),
            "10.0.0.1/24"
        );
    }
}
