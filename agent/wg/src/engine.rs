//! The engine: takes the interface we want, reads what the kernel has, and writes only the
//! difference. A failed apply puts back what was there.

use std::collections::BTreeSet;
use std::fmt;

use crate::device::{DeviceConfig, DeviceState};
use crate::diff::{DeviceUpdate, diff};
use crate::error::Error;
use crate::genl::KernelWg;
use crate::rtnl::types::{NetConfig, SetDiff};
use crate::rtnl::{Link, Rtnl};
use crate::uapi::UserspaceWg;

/// Which WireGuard implementation to use for a new interface. An existing interface is
/// adopted with whatever implementation it already has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The kernel module where present, else wireguard-go.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// The implementation serving an interface.
#[derive(Debug)]
pub enum Backend {
    Kernel(KernelWg),
    Userspace(UserspaceWg),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Kernel(_) => "kernel",
            Backend::Userspace(_) => "userspace (wireguard-go)",
        }
    }

    pub fn is_kernel(&self) -> bool {
        matches!(self, Backend::Kernel(_))
    }

    async fn get(&mut self, ifname: &str) -> Result<DeviceState, Error> {
        match self {
            Backend::Kernel(wg) => wg.get(ifname).await,
            Backend::Userspace(wg) => wg.get().await,
        }
    }

    async fn set(&mut self, ifname: &str, update: &DeviceUpdate) -> Result<usize, Error> {
        match self {
            Backend::Kernel(wg) => wg.set(ifname, update).await,
            Backend::Userspace(wg) => wg.set(update).await,
        }
    }
}

/// Everything meshgate sets on its WireGuard interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub device: DeviceConfig,
    pub net: NetConfig,
}

/// An interface as read back from the system.
#[derive(Debug)]
pub struct InterfaceState {
    pub link: Link,
    pub backend: &'static str,
    pub device: DeviceState,
    pub net: NetConfig,
}

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub backend: &'static str,
    pub created: bool,
    /// WireGuard configuration messages (netlink) or transactions (UAPI) sent.
    pub device_messages: usize,
    /// Interface-level WireGuard settings written: "private key", "listen port", "fwmark".
    pub device_settings: Vec<&'static str>,
    pub peers_changed: usize,
    /// Addresses, routes, rules and link settings changed.
    pub net_changes: usize,
}

impl ApplyReport {
    pub fn changed_anything(&self) -> bool {
        self.created || self.device_messages > 0 || self.net_changes > 0
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backend{}: {} peer(s) changed in {} message(s), {} address/route/rule/link change(s)",
            self.backend,
            if self.created {
                ", interface created"
            } else {
                ""
            },
            self.peers_changed,
            self.device_messages,
            self.net_changes
        )?;
        if !self.device_settings.is_empty() {
            write!(f, "; set {}", self.device_settings.join(", "))?;
        }
        Ok(())
    }
}

/// Programs WireGuard interfaces in the network namespace it was created in.
#[derive(Debug)]
pub struct Engine {
    rtnl: Rtnl,
    choice: BackendChoice,
    /// The generic netlink connection [`Engine::read_device`] polls through, kept open so a
    /// poll costs one dump rather than a socket, a task and a family lookup.
    polling: std::sync::Mutex<Option<KernelWg>>,
}

impl Engine {
    /// Opens netlink sockets in the calling thread's network namespace; needs a tokio runtime.
    pub fn new(choice: BackendChoice) -> Result<Self, Error> {
        Ok(Engine {
            rtnl: Rtnl::connect()?,
            choice,
            polling: std::sync::Mutex::new(None),
        })
    }

    pub fn rtnl(&self) -> &Rtnl {
        &self.rtnl
    }

    /// Reads an existing interface: adoption starts here.
    pub async fn read(&self, name: &str) -> Result<InterfaceState, Error> {
        let link = self
            .rtnl
            .link(name)
            .await?
            .ok_or_else(|| Error::NoSuchInterface(name.to_string()))?;
        let mut backend = self.backend_for(&link).await?;
        let device = backend.get(name).await?;
        let net = self.read_net(&link, &NetConfig::default()).await?;
        Ok(InterfaceState {
            link,
            backend: backend.name(),
            device,
            net,
        })
    }

    /// The WireGuard device alone (keys, peers, counters), without the routes and rules
    /// [`Engine::read`] dumps: what a caller polling the kernel's counters needs.
    pub async fn read_device(&self, name: &str) -> Result<DeviceState, Error> {
        let link = self
            .rtnl
            .link(name)
            .await?
            .ok_or_else(|| Error::NoSuchInterface(name.to_string()))?;
        if link.kind.as_deref() != Some("wireguard") {
            return self.backend_for(&link).await?.get(name).await;
        }
        let cached = self.polling.lock().map(|c| c.clone()).unwrap_or_default();
        let mut kernel = match cached {
            Some(kernel) => kernel,
            None => KernelWg::connect()?,
        };
        let read = kernel.get(name).await;
        // A connection that failed once is not trusted again: the next poll opens a new one.
        if let Ok(mut cache) = self.polling.lock() {
            *cache = read.is_ok().then_some(kernel);
        }
        read
    }

    /// Makes the interface match `desired`, creating it if needed. Nothing is written when the
    /// configuration is invalid; if the system refuses part of a valid one, what was written is
    /// undone and the error says so.
    pub async fn apply(&self, desired: &InterfaceConfig) -> Result<ApplyReport, Error> {
        let started = std::time::Instant::now();
        validate(desired)?;
        let (link, mut backend, created) = match self.rtnl.link(&desired.name).await? {
            Some(link) => {
                let backend = self.backend_for(&link).await?;
                (link, backend, false)
            }
            None => {
                let (link, backend) = self.create(&desired.name).await?;
                (link, backend, true)
            }
        };
        let opened = started.elapsed();
        let before_device = backend.get(&desired.name).await?;
        let read_device = started.elapsed();
        let before_net = self.read_net(&link, &desired.net).await?;
        let read_net = started.elapsed();
        let mut report = ApplyReport {
            backend: backend.name(),
            created,
            ..ApplyReport::default()
        };

        let result = self
            .write(
                &link,
                &mut backend,
                &before_device.config,
                &before_net,
                desired,
                &mut report,
            )
            .await;
        tracing::debug!(
            interface = %desired.name,
            ?opened,
            ?read_device,
            ?read_net,
            written = ?started.elapsed(),
            "apply timings (cumulative)"
        );
        let Err(error) = result else {
            return Ok(report);
        };

        let rollback = if created {
            self.undo_create(&link, &before_net, &desired.net).await
        } else {
            let previous = InterfaceConfig {
                name: desired.name.clone(),
                device: before_device.config,
                net: before_net,
            };
            self.restore(&link, &mut backend, &previous).await
        };
        Err(Error::after_rollback(error, rollback))
    }

    /// Writes the difference between two desired states without reading the system first: what
    /// a running agent does when its configuration changes, so that a one-peer change costs one
    /// message however many peers there are. It trusts that the system still holds `from`;
    /// [`Engine::apply`] (the periodic reconcile) mends any drift.
    pub async fn apply_delta(
        &self,
        from: &InterfaceConfig,
        to: &InterfaceConfig,
    ) -> Result<ApplyReport, Error> {
        validate(to)?;
        if from.name != to.name {
            return Err(Error::InvalidConfig(format!(
                "cannot move the configuration of {} to {}",
                from.name, to.name
            )));
        }
        let link = self
            .rtnl
            .link(&to.name)
            .await?
            .ok_or_else(|| Error::NoSuchInterface(to.name.clone()))?;
        let mut backend = self.backend_for(&link).await?;
        let mut report = ApplyReport {
            backend: backend.name(),
            ..ApplyReport::default()
        };
        let result = self
            .write(
                &link,
                &mut backend,
                &from.device,
                &from.net,
                to,
                &mut report,
            )
            .await;
        match result {
            Ok(()) => Ok(report),
            Err(error) => {
                let rollback = self.restore(&link, &mut backend, from).await;
                Err(Error::after_rollback(error, rollback))
            }
        }
    }

    /// Removes the interface (and with it its addresses and routes) and our rules that point at
    /// the tables it routes into.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        let link = self
            .rtnl
            .link(name)
            .await?
            .ok_or_else(|| Error::NoSuchInterface(name.to_string()))?;
        let net = self.read_net(&link, &NetConfig::default()).await?;
        let rules: Vec<_> = net.rules.into_iter().collect();
        self.rtnl.remove_rules(&rules).await?;
        // Throw routes are bound to no device: deleting the link would leave them.
        let throws: Vec<_> = net.throw_routes.into_iter().collect();
        self.rtnl.remove_throw_routes(&throws).await?;
        self.rtnl.delete_link(&link).await
    }

    /// Rollback of an interface this apply created: the link takes its addresses and routes
    /// with it, but the rules and throw routes written for it live on their own.
    async fn undo_create(
        &self,
        link: &Link,
        before: &NetConfig,
        desired: &NetConfig,
    ) -> Result<(), Error> {
        let rules = SetDiff::between(&before.rules, &desired.rules);
        let throws = SetDiff::between(&before.throw_routes, &desired.throw_routes);
        let rules = self.rtnl.remove_rules(&rules.add).await;
        let throws = self.rtnl.remove_throw_routes(&throws.add).await;
        let link = self.rtnl.delete_link(link).await;
        rules.and(throws).and(link)
    }

    async fn restore(
        &self,
        link: &Link,
        backend: &mut Backend,
        previous: &InterfaceConfig,
    ) -> Result<(), Error> {
        let now_device = backend.get(&previous.name).await?;
        let now_net = self.read_net(link, &previous.net).await?;
        let mut ignored = ApplyReport::default();
        self.write(
            link,
            backend,
            &now_device.config,
            &now_net,
            previous,
            &mut ignored,
        )
        .await
    }

    async fn write(
        &self,
        link: &Link,
        backend: &mut Backend,
        actual_device: &DeviceConfig,
        actual_net: &NetConfig,
        desired: &InterfaceConfig,
        report: &mut ApplyReport,
    ) -> Result<(), Error> {
        let update = diff(actual_device, &desired.device);
        report.peers_changed = update.peer_changes();
        report.device_settings = [
            (update.private_key.is_some(), "private key"),
            (update.listen_port.is_some(), "listen port"),
            (update.fwmark.is_some(), "fwmark"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect();
        report.device_messages = backend.set(&desired.name, &update).await?;

        let want = &desired.net;
        let addresses = SetDiff::between(&actual_net.addresses, &want.addresses);
        for net in &addresses.remove {
            self.rtnl.remove_address(link, *net).await?;
        }
        for net in &addresses.add {
            self.rtnl.add_address(link, *net).await?;
        }
        let mtu_change = want.mtu.filter(|mtu| *mtu != link.mtu);
        let link_changes = usize::from(mtu_change.is_some() || !link.up);
        if link_changes > 0 {
            // Routes need the link up.
            self.rtnl.set_link(link, mtu_change, true).await?;
        }
        let routes = SetDiff::between(&actual_net.routes, &want.routes);
        let throws = SetDiff::between(&actual_net.throw_routes, &want.throw_routes);
        // Removals first: a prefix moving between `routes` and `throw_routes` in one table
        // would otherwise collide with itself.
        self.rtnl.remove_routes(link, &routes.remove).await?;
        self.rtnl.remove_throw_routes(&throws.remove).await?;
        for route in &routes.add {
            self.rtnl.add_route(link, *route).await?;
        }
        for route in &throws.add {
            self.rtnl.add_throw_route(*route).await?;
        }
        let rules = SetDiff::between(&actual_net.rules, &want.rules);
        self.rtnl.remove_rules(&rules.remove).await?;
        for rule in &rules.add {
            self.rtnl.add_rule(*rule).await?;
        }
        report.net_changes =
            addresses.len() + routes.len() + throws.len() + rules.len() + link_changes;
        Ok(())
    }

    /// The interface's addresses and our routes through it, and those of our rules and throw
    /// routes that point at or sit in a table this interface routes into (now, or in
    /// `desired`): they belong to no interface, and another meshgate interface's must not look
    /// like drift.
    async fn read_net(&self, link: &Link, desired: &NetConfig) -> Result<NetConfig, Error> {
        let routes = self.rtnl.routes(link).await?;
        let tables: BTreeSet<u32> = routes
            .iter()
            .chain(&desired.routes)
            .chain(&desired.throw_routes)
            .map(|r| r.table)
            .chain(desired.rules.iter().map(|r| r.table))
            .collect();
        let rules = self
            .rtnl
            .rules()
            .await?
            .into_iter()
            .filter(|rule| tables.contains(&rule.table))
            .collect();
        Ok(NetConfig {
            mtu: Some(link.mtu),
            addresses: self.rtnl.addresses(link).await?,
            throw_routes: self.rtnl.throw_routes(&tables).await?,
            routes,
            rules,
        })
    }

    async fn backend_for(&self, link: &Link) -> Result<Backend, Error> {
        match link.kind.as_deref() {
            Some("wireguard") => Ok(Backend::Kernel(KernelWg::connect()?)),
            kind => match UserspaceWg::find(&link.name).await {
                Some(wg) if kind == Some("tun") => Ok(Backend::Userspace(wg)),
                _ => Err(Error::NotWireGuard {
                    name: link.name.clone(),
                    kind: kind.unwrap_or("none").to_string(),
                }),
            },
        }
    }

    async fn create(&self, name: &str) -> Result<(Link, Backend), Error> {
        let backend = match self.choice {
            BackendChoice::Userspace => Backend::Userspace(UserspaceWg::start(name).await?),
            BackendChoice::Kernel | BackendChoice::Auto => {
                match self.rtnl.create_wireguard(name).await {
                    Ok(()) => Backend::Kernel(KernelWg::connect()?),
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        if self.choice == BackendChoice::Kernel {
                            return Err(Error::NoWireGuard(
                                "the kernel refused to create a wireguard link (no module)".into(),
                            ));
                        }
                        tracing::warn!(
                            interface = name,
                            "this kernel has no WireGuard module; using the userspace fallback \
                             (wireguard-go), which is slower"
                        );
                        Backend::Userspace(UserspaceWg::start(name).await?)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let link = self
            .rtnl
            .link(name)
            .await?
            .ok_or_else(|| Error::NoSuchInterface(name.to_string()))?;
        Ok((link, backend))
    }
}

/// Interface names as the kernel accepts them (IFNAMSIZ, no '/', ':' or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        )))
    }
}

fn validate(desired: &InterfaceConfig) -> Result<(), Error> {
    validate_ifname(&desired.name)?;
    desired.device.validate()?;
    if let Some(mtu) = desired.net.mtu
        && !(576..=65535).contains(&mtu)
    {
        return Err(Error::InvalidConfig(format!(
            "MTU {mtu} is outside 576-65535"
        )));
    }
    for route in desired.net.routes.iter().chain(&desired.net.throw_routes) {
        if route.table == 0 {
            return Err(Error::InvalidConfig(format!(
                "route {} has table 0, which is not a routing table",
                route.destination
            )));
        }
    }
    // The kernel keys routes by prefix and table, whatever their type.
    if let Some(both) = desired
        .net
        .routes
        .intersection(&desired.net.throw_routes)
        .next()
    {
        return Err(Error::InvalidConfig(format!(
            "{} in table {} is both a route through the interface and a throw route",
            both.destination, both.table
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtnl::types::Route;

    fn route(destination: &str, table: u32) -> Route {
        Route {
            destination: destination.parse().unwrap(),
            table,
        }
    }

    #[test]
    fn throw_routes_are_validated_like_routes() {
        let mut config = InterfaceConfig {
            name: "mg0".into(),
            ..InterfaceConfig::default()
        };
        config.net.routes.insert(route("0.0.0.0/0", 52));
        config.net.throw_routes.insert(route("192.168.1.0/24", 52));
        validate(&config).unwrap();

        let mut table_zero = config.clone();
        table_zero.net.throw_routes.insert(route("10.0.0.0/8", 0));
        let err = validate(&table_zero).unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/8 has table 0"), "{err}");

        let mut both = config.clone();
        both.net.throw_routes.insert(route("0.0.0.0/0", 52));
        let err = validate(&both).unwrap_err().to_string();
        assert!(err.contains("both a route"), "{err}");
        // The same prefix in another table is another route.
        both.net.throw_routes.remove(&route("0.0.0.0/0", 52));
        both.net.throw_routes.insert(route("0.0.0.0/0", 53));
        validate(&both).unwrap();
    }
}
