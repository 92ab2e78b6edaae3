//! The tokio shell: one task runs the `Mapper`, executes its actions one at a time and
//! publishes the current mapping on a watch channel.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::backend::{Session, Target};
use crate::mapper::{Action, Config, Mapper, Mapping, Services};
use crate::{Error, probe, wire};

/// Shell settings on top of the mapper's timers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mapper: Config,
    /// How long the probe listens for answers (reference: 250 ms).
    pub probe_window: Duration,
    /// First timeout of a NAT-PMP/PCP/SOAP request (retried twice, doubling).
    pub request_timeout: Duration,
    /// How often the default route is re-read when no gateway was given.
    pub route_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mapper: Config::default(),
            probe_window: Duration::from_millis(250),
            request_timeout: Duration::from_millis(250),
            route_poll: Duration::from_secs(10),
        }
    }
}

enum Command {
    NetworkChanged,
    Stop(oneshot::Sender<()>),
}

/// A running port mapper. Dropping it aborts the task without deleting the mapping; call
/// `stop` for a clean shutdown.
#[derive(Debug)]
pub struct PortMapper {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

/// Reads the default gateway from `/proc/thread-self/net/route` (this thread's namespace).
pub fn default_gateway() -> Result<Ipv4Addr, Error> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route")
        .or_else(|_| std::fs::read_to_string("/proc/net/route"))?;
    wire::route::default_gateway(&text).ok_or(Error::NoGateway)
}

impl PortMapper {
    /// Starts mapping `internal_port` (WireGuard's listen port) for `local_ip` with default
    /// options. `gateway` None: the default route's gateway, re-read periodically.
    pub fn start(
        internal_port: u16,
        gateway: Option<Ipv4Addr>,
        local_ip: Ipv4Addr,
    ) -> Result<(Self, watch::Receiver<Option<Mapping>>), Error> {
        Self::start_with(internal_port, gateway, local_ip, Options::default())
    }

    /// `start` with explicit timers.
    pub fn start_with(
        internal_port: u16,
        gateway: Option<Ipv4Addr>,
        local_ip: Ipv4Addr,
        options: Options,
    ) -> Result<(Self, watch::Receiver<Option<Mapping>>), Error> {
        let follow_route = gateway.is_none();
        let gw = match gateway {
            Some(gw) => gw,
            None => default_gateway()?,
        };
        let (tx, rx) = watch::channel(None);
        let (commands, cmd_rx) = mpsc::channel(8);
        let target = Target {
            gateway: gw,
            local_ip,
            timeout: options.request_timeout,
        };
        let task = tokio::spawn(run(
            Mapper::new(internal_port, options.mapper),
            target,
            options,
            follow_route,
            cmd_rx,
            tx,
        ));
        Ok((Self { commands, task }, rx))
    }

    /// Tell the mapper the network changed (the daemon's link monitor calls this): it drops the
    /// mapping and probes again.
    pub async fn network_changed(&self) -> Result<(), Error> {
        self.commands
            .send(Command::NetworkChanged)
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Deletes the mapping on the gateway (bounded by the request timeouts) and ends the task.
    pub async fn stop(self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Stop(done))
            .await
            .map_err(|_| Error::Stopped)?;
        let _ = wait.await;
        Ok(())
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
enum Outcome {
    Probed(u64, Services),
    Mapped(u64, crate::Protocol, Result<Mapping, String>),
    Renewed(u64, Result<Mapping, String>),
    Deleted(u64),
}

async fn execute(
    session: &mut Session,
    target: Target,
    window: Duration,
    action: Action,
) -> Outcome {
    match action {
        Action::Probe { ticket } => {
            let seen = probe::probe(target.gateway, target.local_ip, window)
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "probe failed");
                    Services::default()
                });
            tracing::debug!(?seen, gateway = %target.gateway, "probe");
            Outcome::Probed(ticket, seen)
        }
        Action::Map {
            ticket,
            protocol,
            internal_port,
            suggested_external_port,
            lease,
        } => {
            let r = session
                .map(
                    target,
                    protocol,
                    internal_port,
                    suggested_external_port,
                    lease,
                )
                .await;
            Outcome::Mapped(ticket, protocol, r.map_err(|e| e.to_string()))
        }
        Action::Renew {
            ticket,
            mapping,
            internal_port,
            lease,
        } => {
            let r = session
                .map(
                    target,
                    mapping.protocol,
                    internal_port,
                    Some(mapping.external.port()),
                    lease,
                )
                .await;
            Outcome::Renewed(ticket, r.map_err(|e| e.to_string()))
        }
        Action::Delete {
            ticket, mapping, ..
        } => {
            if let Err(e) = session.delete(target, mapping).await {
                tracing::info!(error = %e, "deleting the port mapping failed");
            }
            Outcome::Deleted(ticket)
        }
    }
}

async fn run(
    mut mapper: Mapper,
    mut target: Target,
    options: Options,
    follow_route: bool,
    mut commands: mpsc::Receiver<Command>,
    publish: watch::Sender<Option<Mapping>>,
) {
    let mut session = Session::default();
    let mut stop_reply: Option<oneshot::Sender<()>> = None;
    let mut route_check = tokio::time::interval(options.route_poll);
    route_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        let action = mapper.handle_timeout(now);
        if mapper.is_stopped() {
            break;
        }
        let outcome = match action {
            Some(action) => {
                // The action runs to completion; a command arriving meanwhile waits (the
                // channel is bounded and every action is bounded by its timeouts).
                Some(execute(&mut session, target, options.probe_window, action).await)
            }
            None => {
                let wake = mapper.poll_timeout().map(tokio::time::Instant::from_std);
                let sleep = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => None,
                    cmd = commands.recv() => {
                        match cmd {
                            Some(Command::NetworkChanged) => {
                                mapper.network_changed();
                                session.reset();
                            }
                            Some(Command::Stop(reply)) => {
                                stop_reply = Some(reply);
                                mapper.stop();
                            }
                            None => mapper.stop(),
                        }
                        None
                    }
                    _ = route_check.tick(), if follow_route => {
                        if let Ok(gw) = default_gateway()
                            && gw != target.gateway
                        {
                            tracing::info!(old = %target.gateway, new = %gw, "default gateway changed");
                            target.gateway = gw;
                            mapper.network_changed();
                            session.reset();
                        }
                        None
                    }
                }
            }
        };
        let now = Instant::now();
        if let Some(o) = &outcome {
            tracing::debug!(?o, "port mapping step");
        }
        match outcome {
            Some(Outcome::Probed(t, seen)) => mapper.on_probe(now, t, seen),
            Some(Outcome::Mapped(t, p, r)) => mapper.on_mapped(now, t, p, r),
            Some(Outcome::Renewed(t, r)) => mapper.on_renewed(now, t, r),
            Some(Outcome::Deleted(t)) => mapper.on_deleted(now, t),
            None => {}
        }
        let current = mapper.mapping();
        publish.send_if_modified(|m| {
            let changed = m.map(|m| (m.protocol, m.external))
                != current.map(|c| (c.protocol, c.external))
                || m.map(|m| m.obtained_at) != current.map(|c| c.obtained_at);
            *m = current;
            changed
        });
    }
    publish.send_replace(None);
    if let Some(reply) = stop_reply {
        let _ = reply.send(());
    }
}
