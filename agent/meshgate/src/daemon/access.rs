//! Enforcing control's packet filter on what arrives from the mesh: the tc BPF program on the
//! WireGuard interface where it loads, else our nftables table.
//!
//! Never open: before control's first filter the kernel keeps what a previous run left (pinned
//! BPF maps or our nftables table), or denies everything; a refused filter keeps the one in
//! force; a switch between the two backends puts the new one in place before the old one goes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use meshgate_acl::{Policy, Router};
use meshgate_ebpf::{Enforcer, LinkKind};
use meshgate_tailcfg::filter::FilterRule;

use crate::api::FilterStatus;
use crate::cli::FilterArg;

/// Which backend holds the policy now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Active {
    /// Nothing of ours filters yet (`--filter off`, or nothing applied so far).
    Nothing,
    Nft,
    Bpf,
}

pub(super) struct Access {
    mode: FilterArg,
    iface: String,
    pin_root: PathBuf,
    /// Shared with blocking tasks: aya and nft calls are synchronous syscalls and processes.
    enforcer: Arc<Mutex<Option<Enforcer>>>,
    active: Active,
    /// The policy in force (None: control has not sent one to this run yet).
    policy: Option<Arc<Policy>>,
    /// Why BPF is not used (auto mode), or why the last filter was refused.
    bpf_unavailable: Option<String>,
    error: Option<String>,
    /// What our table does for forwarded traffic (subnet router, exit node).
    router: Router,
    /// Between `start` and `stop` (a control session runs).
    running: bool,
}

impl Access {
    pub(super) fn new(mode: FilterArg, iface: &str, pin_root: PathBuf, router: Router) -> Access {
        Access {
            router,
            running: false,
            mode,
            iface: iface.to_owned(),
            pin_root,
            enforcer: Arc::new(Mutex::new(None)),
            active: Active::Nothing,
            policy: None,
            bpf_unavailable: None,
            error: None,
        }
    }

    /// At start: adopts what a previous run left in the kernel, else denies everything until
    /// control's filter arrives. `off` removes what we left.
    pub(super) async fn start(&mut self) {
        if self.running {
            return;
        }
        self.running = true;
        match self.mode {
            FilterArg::Off => {
                self.detach_bpf().await;
                self.table_without_policy().await;
                tracing::warn!(
                    "--filter off: nothing arriving from the mesh is filtered by meshgate"
                );
            }
            FilterArg::Auto if Enforcer::is_attached(&self.iface) => {
                // A previous run's program still enforces its last policy: take it over.
                self.ensure().await;
            }
            FilterArg::Auto | FilterArg::Nft => {
                if nft_table_present().await {
                    tracing::info!("adopting our nftables table until control's filter arrives");
                    self.active = Active::Nft;
                } else {
                    self.apply_nft(Arc::new(Policy::default())).await;
                }
                self.ensure().await;
            }
        }
    }

    /// Brings BPF enforcement up where it should be and is not (the interface appeared or was
    /// re-created). Cheap when nothing is to do; called after applies and at every reconcile.
    pub(super) async fn ensure(&mut self) {
        if !self.running || self.mode != FilterArg::Auto || self.bpf_unavailable.is_some() {
            return;
        }
        let attached = self.active == Active::Bpf && Enforcer::is_attached(&self.iface);
        if attached || !interface_exists(&self.iface) {
            return;
        }
        // nftables holds what an earlier run left (or denies all): swapping in fresh, empty
        // maps now would drop flows it allows, so BPF waits for this run's first filter.
        if self.active == Active::Nft && self.policy.is_none() {
            return;
        }
        let (iface, pins, slot) = (
            self.iface.clone(),
            self.pin_root.clone(),
            self.enforcer.clone(),
        );
        let policy = self.policy.clone();
        let attached = blocking(move || {
            let mut enforcer = Enforcer::attach(&iface, LinkKind::L3, &pins)?;
            // Without a policy from this run the pinned maps keep the last one (or deny all).
            if let Some(policy) = &policy {
                enforcer.set_policy(policy)?;
            }
            *lock(&slot) = Some(enforcer);
            Ok::<_, meshgate_ebpf::Error>(())
        })
        .await;
        match attached {
            Ok(()) => {
                tracing::info!(interface = %self.iface, "access control: tc BPF program attached");
                self.active = Active::Bpf;
                self.table_without_policy().await;
            }
            Err(e) => {
                tracing::warn!(interface = %self.iface, "access control by BPF unavailable ({e}); using nftables");
                self.bpf_unavailable = Some(e.to_string());
                if self.active != Active::Nft {
                    self.apply_nft(self.policy.clone().unwrap_or_default())
                        .await;
                }
            }
        }
    }

    /// Control sent a (new) filter: compile it and put it in force, or keep the one in force.
    pub(super) async fn set_rules(&mut self, rules: &[FilterRule]) {
        if !self.running || self.mode == FilterArg::Off {
            return;
        }
        let policy = match Policy::from_filter_rules(rules) {
            Ok(policy) => Arc::new(policy),
            Err(e) => {
                tracing::error!("control's packet filter refused; the one in force stays: {e}");
                self.error = Some(format!("filter refused: {e}"));
                return;
            }
        };
        self.error = None;
        self.policy = Some(policy.clone());
        if self.active == Active::Bpf {
            let slot = self.enforcer.clone();
            let swapped = blocking(move || match lock(&slot).as_mut() {
                Some(enforcer) => enforcer.set_policy(&policy).map(|_| ()),
                None => Ok(()),
            })
            .await;
            match swapped {
                Ok(()) => {
                    tracing::info!(
                        entries = self.entries(),
                        "access control: new policy in force (BPF)"
                    );
                    return;
                }
                Err(e) => {
                    // Too large for the maps, or the kernel refused: nftables takes over
                    // before the program goes, so nothing opens in between.
                    tracing::warn!("BPF refused the policy ({e}); enforcing with nftables");
                    self.bpf_unavailable = Some(e.to_string());
                    let policy = self.policy.clone().unwrap_or_default();
                    if self.apply_nft(policy).await {
                        self.detach_bpf().await;
                        self.active = Active::Nft;
                    }
                    return;
                }
            }
        }
        self.apply_nft(policy).await;
        self.ensure().await;
    }

    /// Applies `policy` as our nftables table; true when it took effect.
    async fn apply_nft(&mut self, policy: Arc<Policy>) -> bool {
        let (iface, router) = (self.iface.clone(), self.router);
        let applied = blocking(move || {
            let json = meshgate_acl::nft::compile_with(Some(&policy), &iface, &router)?;
            meshgate_acl::apply(&json)
        })
        .await;
        match applied {
            Ok(()) => {
                if self.active != Active::Bpf {
                    self.active = Active::Nft;
                }
                tracing::info!(
                    entries = self.entries(),
                    "access control: policy in force (nftables)"
                );
                true
            }
            Err(e) => {
                tracing::error!("nftables refused our table; the one in force stays: {e}");
                self.error = Some(format!("nftables: {e}"));
                false
            }
        }
    }

    /// Our table once nftables no longer enforces the policy: only the router's part, or
    /// nothing.
    async fn table_without_policy(&mut self) {
        let (iface, router) = (self.iface.clone(), self.router);
        let done = blocking(move || {
            if router.any() {
                meshgate_acl::apply(&meshgate_acl::nft::compile_with(None, &iface, &router)?)
            } else {
                meshgate_acl::remove()
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!("our nftables table: {e}");
            self.error = Some(format!("nftables: {e}"));
        }
    }

    /// The daemon offers routes or an exit node, or stops: our table follows.
    pub(super) async fn set_router(&mut self, router: Router) {
        if router == self.router {
            return;
        }
        self.router = router;
        if !self.running {
            return;
        }
        match self.active {
            Active::Nft => {
                self.apply_nft(self.policy.clone().unwrap_or_default())
                    .await;
            }
            Active::Bpf | Active::Nothing => self.table_without_policy().await,
        }
    }

    /// `meshgate down`: the interface has no peers left, so nothing can arrive from the mesh;
    /// everything of ours goes (the BPF program, its maps, our table). `up` starts again.
    pub(super) async fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        self.router = Router::default();
        self.detach_bpf().await;
        if let Err(e) = blocking(meshgate_acl::remove).await {
            tracing::warn!("removing our nftables table: {e}");
        }
        self.active = Active::Nothing;
        self.policy = None;
        self.bpf_unavailable = None;
    }

    async fn detach_bpf(&mut self) {
        let (iface, pins, slot) = (
            self.iface.clone(),
            self.pin_root.clone(),
            self.enforcer.clone(),
        );
        let detached = blocking(move || {
            lock(&slot).take();
            if Enforcer::is_attached(&iface) {
                Enforcer::detach(&iface, &pins)
            } else {
                Ok(())
            }
        })
        .await;
        if let Err(e) = detached {
            tracing::warn!("detaching the BPF program: {e}");
        }
    }

    fn entries(&self) -> Option<usize> {
        self.policy
            .as_ref()
            .map(|p| p.entries().len() + p.echo().len())
    }

    pub(super) async fn status(&self) -> FilterStatus {
        let mut status = FilterStatus {
            enforcement: match (self.mode, self.active) {
                (FilterArg::Off, _) => "off",
                (_, Active::Bpf) => "bpf",
                (_, Active::Nft) => "nftables",
                (_, Active::Nothing) => "none",
            }
            .to_owned(),
            entries: self.entries(),
            error: self.error.clone(),
            bpf_unavailable: self.bpf_unavailable.clone(),
            ..FilterStatus::default()
        };
        let counted = match self.active {
            Active::Bpf => {
                let slot = self.enforcer.clone();
                blocking(move || match lock(&slot).as_ref() {
                    Some(enforcer) => enforcer
                        .stats()
                        .map(|s| (s.passed(), s.dropped(), Some(s.drop_malformed))),
                    None => Ok((0, 0, None)),
                })
                .await
            }
            Active::Nft => blocking(meshgate_acl::counters)
                .await
                .map(|c| (c.passed, c.dropped, None)),
            Active::Nothing => return status,
        };
        match counted {
            Ok((passed, dropped, malformed)) => {
                status.passed = Some(passed);
                status.dropped = Some(dropped);
                status.malformed = malformed;
            }
            Err(e) => status.error = Some(format!("reading the filter's counters: {e}")),
        }
        status
    }
}

/// Runs blocking kernel work off the event loop.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the filter task failed: {e}")),
    }
}

fn lock(slot: &Mutex<Option<Enforcer>>) -> std::sync::MutexGuard<'_, Option<Enforcer>> {
    // A panic while holding it leaves the enforcer as it was; keep using it.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// By index lookup, which sees this process's network namespace (sysfs may show another).
fn interface_exists(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

async fn nft_table_present() -> bool {
    blocking(|| {
        std::process::Command::new("nft")
            .args(["list", "table", "inet", meshgate_acl::nft::TABLE])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
    })
    .await
    .unwrap_or(false)
}
