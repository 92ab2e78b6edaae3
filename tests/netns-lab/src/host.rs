//! A host: one network namespace, its interfaces, and the ways to run things inside it.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::cmd;
use crate::error::{Error, Result};
use crate::netns;
use crate::probe::Reflector;
use crate::process::Proc;
use crate::segment::{Iface, Segment};

/// A machine in the lab: one network namespace. Cheap to clone; clones are the same host.
///
/// A `Host` does not keep its lab alive: once the [`Lab`](crate::Lab) is dropped, the namespace
/// is gone and every operation fails.
#[derive(Clone, Debug)]
pub struct Host(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    netns: String,
    ifaces: Mutex<Vec<Iface>>,
    next_eth: AtomicU32,
}

impl Host {
    pub(crate) fn new(name: &str, netns: String) -> Self {
        Host(Arc::new(Inner {
            name: name.to_owned(),
            netns,
            ifaces: Mutex::new(Vec::new()),
            next_eth: AtomicU32::new(0),
        }))
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The namespace's name, as `ip netns list` shows it (`ip netns exec <this> ...`).
    pub fn netns(&self) -> &str {
        &self.0.netns
    }

    /// The namespace's pinned file, for `setns(2)` or `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.0.netns)
    }

    /// Every interface the lab gave this host.
    pub fn ifaces(&self) -> Vec<Iface> {
        self.lock_ifaces().clone()
    }

    /// The host's interface on `segment`.
    pub fn iface_on(&self, segment: &Segment) -> Option<Iface> {
        self.lock_ifaces()
            .iter()
            .find(|i| i.segment == segment.id())
            .cloned()
    }

    /// The host's address on `segment`, IPv4 if it has one.
    pub fn addr_on(&self, segment: &Segment) -> Option<IpAddr> {
        let addrs = self.addrs_on(segment);
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
    }

    /// All of the host's addresses on `segment`.
    pub fn addrs_on(&self, segment: &Segment) -> Vec<IpAddr> {
        self.iface_on(segment)
            .map(|i| i.addrs.iter().map(IpNet::addr).collect())
            .unwrap_or_default()
    }

    /// A command that runs `program` inside the namespace through `ip netns exec`, which also
    /// shows the program the namespace's own /sys. Add arguments, then [`Host::spawn`] it or run
    /// it as any `Command`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns()]).arg(program);
        cmd
    }

    /// Runs `args` (program first) inside the namespace and returns its output, whatever its
    /// exit status.
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::output(&mut self.command_from(args))
    }

    /// Like [`Host::exec`], but fails unless the program exits 0; returns its stdout.
    pub fn exec_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command_from(args);
        let out = cmd::output(&mut command)?;
        cmd::ensure_success(&command, out)
    }

    fn command_from<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args = args.into_iter();
        let mut command = self.command(args.next().as_ref().map_or(OsStr::new(""), AsRef::as_ref));
        command.args(args);
        command
    }

    /// Starts `command` inside the namespace. Any `Command` works (it is spawned from a thread
    /// inside the namespace, so the child starts there); one from [`Host::command`] also gets
    /// the namespace's /sys. The child leads a new process group, and the returned [`Proc`]
    /// kills that group when dropped.
    pub fn spawn(&self, mut command: Command) -> Result<Proc> {
        command.process_group(0);
        let child = self
            .run(|| command.spawn())?
            .map_err(|e| Error::io(format!("spawning `{}`", cmd::render(&command)), e))?;
        Ok(Proc::new(child, cmd::render(&command)))
    }

    /// Runs the closure `f` on a fresh thread that has entered this namespace (`setns`) and
    /// returns its result; a panic in `f` is passed on. Everything `f` creates belongs to the
    /// namespace for good: sockets, netlink handles, threads (a tokio runtime's workers too)
    /// and child processes. Only the network namespace changes: /sys and /proc/net seen by
    /// path still show the caller's (use /proc/thread-self/net for the namespace's view).
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        netns::run_in(self.netns(), f)
    }

    /// Sends `count` pings (0.2 s apart, 1 s timeout) to `addr`; true if any answer came back.
    pub fn ping(&self, addr: IpAddr, count: u32) -> bool {
        let count = count.max(1).to_string();
        let addr = addr.to_string();
        self.exec([
            "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", &addr,
        ])
        .is_ok_and(|out| out.status.success())
    }

    /// Routes `dest` through the gateway `via`, which must be on one of this host's lab
    /// segments: a route can then only lead to another lab namespace.
    pub fn add_route(&self, dest: IpNet, via: IpAddr) -> Result<()> {
        self.check_gateway(via)?;
        self.ip_route("replace", &dest.to_string(), via)
    }

    /// Makes `via` (a neighbour on a lab segment) the default gateway for its address family.
    pub fn set_default_route(&self, via: IpAddr) -> Result<()> {
        self.check_gateway(via)?;
        self.ip_route("replace", "default", via)
    }

    fn ip_route(&self, verb: &str, dest: &str, via: IpAddr) -> Result<()> {
        let family = if via.is_ipv4() { "-4" } else { "-6" };
        let via = via.to_string();
        cmd::ip(["-n", self.netns(), family, "route", verb, dest, "via", &via])?;
        Ok(())
    }

    fn check_gateway(&self, via: IpAddr) -> Result<()> {
        let on_link = self.lock_ifaces().iter().flat_map(|i| &i.addrs).any(|own| {
            own.addr() != via && own.contains(&via) // a neighbour, not ourselves
        });
        if on_link {
            Ok(())
        } else {
            Err(Error::GatewayOutsideLab {
                host: self.name().to_owned(),
                via,
            })
        }
    }

    /// Writes sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`) inside the namespace.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        // /proc/sys/net follows the network namespace of the thread that opens it.
        self.run(|| std::fs::write(&path, value))?
            .map_err(|e| Error::io(format!("{} on {}", path.display(), self.name()), e))
    }

    /// A UDP socket bound to `addr` inside the namespace (usable from any thread).
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.run(|| UdpSocket::bind(addr))?
            .map_err(|e| Error::io(format!("binding UDP {addr} on {}", self.name()), e))
    }

    /// Starts a UDP reflector on `addr` inside the namespace: it answers every probe with the
    /// source address:port it saw, i.e. what a NAT in between shows to this host.
    pub fn udp_reflector(&self, addr: SocketAddr) -> Result<Reflector> {
        Reflector::start(self.udp_bind(addr)?)
    }

    /// The next free `ethN` name in this namespace.
    pub(crate) fn next_iface_name(&self) -> String {
        format!("eth{}", self.0.next_eth.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn record_iface(&self, iface: Iface) {
        self.lock_ifaces().push(iface);
    }

    fn lock_ifaces(&self) -> std::sync::MutexGuard<'_, Vec<Iface>> {
        // A panic elsewhere cannot leave the list half-written: pushes are atomic.
        self.0.ifaces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Host {}
