//! Control mode's settings: the daemon's flags, then what `meshgate up` changes, and what is
//! stored of them in the state directory.

use ipnet::IpNet;
use meshgate_control::endpoint::ControlServer;

use crate::api::UpRequest;
use crate::cli::DaemonArgs;

use super::prefs::{self, Prefs, Wanted};

/// Control mode's settings: from the daemon's flags, then changed by `meshgate up`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Settings {
    pub(super) login_server: Option<String>,
    pub(super) auth_key: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) advertise_routes: Vec<IpNet>,
    pub(super) advertise_exit_node: bool,
    pub(super) accept_routes: bool,
    pub(super) snat_subnet_routes: bool,
    pub(super) exit_node: Option<String>,
    pub(super) exit_node_allow_lan_access: bool,
}

impl Settings {
    pub(super) fn from_args(args: &DaemonArgs) -> Result<Settings, String> {
        let routes: Vec<IpNet> = args.advertise_routes.iter().map(IpNet::trunc).collect();
        check_advertised(&routes)?;
        Ok(Settings {
            login_server: args.login_server.clone(),
            auth_key: args.auth_key.clone(),
            hostname: args.hostname.clone(),
            advertise_routes: routes,
            advertise_exit_node: args.advertise_exit_node,
            accept_routes: args.accept_routes,
            snat_subnet_routes: args.snat_subnet_routes,
            exit_node: args.exit_node.clone().filter(|e| !e.is_empty()),
            exit_node_allow_lan_access: args.exit_node_allow_lan_access,
        })
    }

    pub(super) fn from_prefs(stored: &Prefs, auth_key: Option<String>) -> Settings {
        Settings {
            login_server: stored.login_server.clone(),
            auth_key,
            hostname: stored.hostname.clone(),
            advertise_routes: stored.advertise_routes.clone(),
            advertise_exit_node: stored.advertise_exit_node,
            accept_routes: stored.accept_routes,
            snat_subnet_routes: stored.snat_subnet_routes.unwrap_or(true),
            exit_node: stored.exit_node.clone(),
            exit_node_allow_lan_access: stored.exit_node_allow_lan_access,
        }
    }

    /// What is stored (never the auth key).
    pub(super) fn prefs(&self, wanted: Wanted) -> Prefs {
        Prefs {
            login_server: self.login_server.clone(),
            hostname: self.hostname.clone(),
            advertise_routes: self.advertise_routes.clone(),
            advertise_exit_node: self.advertise_exit_node,
            accept_routes: self.accept_routes,
            snat_subnet_routes: (!self.snat_subnet_routes).then_some(false),
            exit_node: self.exit_node.clone(),
            exit_node_allow_lan_access: self.exit_node_allow_lan_access,
            wanted,
        }
    }

    /// Hostinfo.RoutableIPs: the advertised subnets, and both default routes for an exit node.
    pub(super) fn routable_ips(&self) -> Vec<IpNet> {
        let mut ips = self.advertise_routes.clone();
        if self.advertise_exit_node {
            ips.extend(exit_routes());
        }
        ips
    }

    /// What our nftables table does for forwarded traffic: a node offering routes or an exit
    /// node clamps MSS into the mesh and, unless told not to, masquerades.
    pub(super) fn advertising(&self) -> bool {
        !self.advertise_routes.is_empty() || self.advertise_exit_node
    }

    pub(super) fn router(&self) -> meshgate_acl::Router {
        let advertising = self.advertising();
        meshgate_acl::Router {
            masquerade: advertising && self.snat_subnet_routes,
            clamp_mss: advertising,
            // Set by the daemon where rp_filter needs it (reverse_path.rs).
            restore_marks: false,
        }
    }

    /// These settings with what `up` gave (a field left out keeps its value).
    pub(super) fn with(&self, up: UpRequest) -> Result<Settings, String> {
        let mut new = self.clone();
        if let Some(server) = up.login_server {
            new.login_server = Some(server);
        }
        if let Some(key) = up.auth_key {
            new.auth_key = Some(key);
        }
        if let Some(hostname) = up.hostname {
            new.hostname = Some(hostname);
        }
        if let Some(routes) = up.advertise_routes {
            new.advertise_routes = routes
                .iter()
                .map(|r| {
                    r.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|e| format!("--advertise-routes {r:?}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            check_advertised(&new.advertise_routes)?;
        }
        if let Some(exit) = up.advertise_exit_node {
            new.advertise_exit_node = exit;
        }
        if let Some(accept) = up.accept_routes {
            new.accept_routes = accept;
        }
        if let Some(snat) = up.snat_subnet_routes {
            new.snat_subnet_routes = snat;
        }
        if let Some(exit) = up.exit_node {
            new.exit_node = Some(exit).filter(|e| !e.is_empty());
        }
        if let Some(lan) = up.exit_node_allow_lan_access {
            new.exit_node_allow_lan_access = lan;
        }
        let Some(server) = &new.login_server else {
            return Err("no login server: give --login-server URL".into());
        };
        // A bad URL is refused here, before the running session is touched.
        ControlServer::parse(server, None).map_err(|e| e.to_string())?;
        Ok(new)
    }
}

fn exit_routes() -> [IpNet; 2] {
    [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

/// Default routes are offered with --advertise-exit-node, as `tailscale up` insists, so that
/// the pair is never half advertised.
fn check_advertised(routes: &[IpNet]) -> Result<(), String> {
    match routes.iter().find(|r| r.prefix_len() == 0) {
        Some(default) => Err(format!(
            "--advertise-routes {default}: a default route is offered with --advertise-exit-node"
        )),
        None => Ok(()),
    }
}

/// The settings and wish to start with: the command line's when it names a login server,
/// else those `meshgate up` left in the state directory. Whether to run comes from the
/// state directory either way, so a node taken `down` stays down across restarts.
pub(super) fn initial(args: &DaemonArgs) -> Result<(Settings, Wanted), String> {
    let stored = prefs::load(&args.state_dir)?;
    let wanted = stored.as_ref().map(|p| p.wanted).unwrap_or_default();
    let settings = match &stored {
        Some(stored) if args.login_server.is_none() => {
            Settings::from_prefs(stored, args.auth_key.clone())
        }
        _ => Settings::from_args(args)?,
    };
    Ok((settings, wanted))
}

/// Remembers `settings` and `wanted`; a failure is logged, not fatal: the session itself is fine.
pub(super) fn remember(args: &DaemonArgs, settings: &Settings, wanted: Wanted) {
    if let Err(e) = prefs::save(&args.state_dir, &settings.prefs(wanted)) {
        tracing::warn!("could not store the preferences (a restart would not know them): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_keeps_what_it_does_not_set() {
        let base = Settings {
            login_server: None,
            auth_key: None,
            hostname: Some("a".into()),
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: false,
            accept_routes: true,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
        };
        let err = base.with(UpRequest::default()).unwrap_err();
        assert!(err.contains("--login-server"), "{err}");
        let up = base
            .with(UpRequest {
                login_server: Some("h:1".into()),
                advertise_routes: Some(vec!["10.1.0.9/24".into()]),
                ..UpRequest::default()
            })
            .unwrap();
        assert_eq!(up.login_server.as_deref(), Some("h:1"));
        let err = base
            .with(UpRequest {
                login_server: Some("ftp://h".into()),
                ..UpRequest::default()
            })
            .unwrap_err();
        assert!(err.contains("unsupported scheme"), "{err}");
        assert_eq!(up.hostname.as_deref(), Some("a"));
        assert!(up.accept_routes);
        assert_eq!(
            up.advertise_routes,
            ["10.1.0.0/24".parse::<IpNet>().unwrap()]
        );
        let cleared = up
            .with(UpRequest {
                advertise_routes: Some(Vec::new()),
                accept_routes: Some(false),
                ..UpRequest::default()
            })
            .unwrap();
        assert!(cleared.advertise_routes.is_empty() && !cleared.accept_routes);
        assert!(
            up.with(UpRequest {
                advertise_routes: Some(vec!["nope".into()]),
                ..UpRequest::default()
            })
            .is_err()
        );
    }

    #[test]
    fn exit_node_is_offered_as_both_default_routes_and_never_through_advertise_routes() {
        let base = Settings {
            login_server: Some("h:1".into()),
            auth_key: None,
            hostname: None,
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: false,
            accept_routes: false,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
        };
        assert_eq!(base.routable_ips(), base.advertise_routes);
        let exit = base
            .with(UpRequest {
                advertise_exit_node: Some(true),
                ..UpRequest::default()
            })
            .unwrap();
        let ips: Vec<String> = exit
            .routable_ips()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.0.0.0/24", "0.0.0.0/0", "::/0"]);
        let err = base
            .with(UpRequest {
                advertise_routes: Some(vec!["0.0.0.0/0".into()]),
                ..UpRequest::default()
            })
            .unwrap_err();
        assert!(err.contains("--advertise-exit-node"), "{err}");
    }

    #[test]
    fn stored_prefs_hold_no_auth_key_and_rebuild_the_settings() {
        let settings = Settings {
            login_server: Some("https://c.example".into()),
            auth_key: Some("secret-auth-key".into()),
            hostname: Some("gw".into()),
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: true,
            accept_routes: true,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
        };
        let stored = settings.prefs(Wanted::Stopped);
        let text = serde_json::to_string(&stored).unwrap();
        assert!(!text.contains("secret-auth-key"), "{text}");
        assert_eq!(stored.wanted, Wanted::Stopped);
        let back = Settings::from_prefs(&stored, Some("secret-auth-key".into()));
        assert_eq!(back, settings);
    }
}
