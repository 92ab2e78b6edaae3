//! Attaching the program to an interface with tc, the pinned maps, and policy updates.

use std::path::{Path, PathBuf};

use aya::programs::tc::{
    NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle, qdisc_add_clsact,
};
use aya::programs::{Link, ProgramError, TcAttachType};
use meshgate_acl::Policy;

use crate::error::Error;
use crate::object::{
    Loaded, PROG_EGRESS_ETH, PROG_EGRESS_L3, PROG_INGRESS_ETH, PROG_INGRESS_L3, load,
};
use crate::tcquery::{filter_present, is_bpffs, mount_bpffs};
use crate::writer::{Counters, Stats, SwapReport};

/// Where pinned maps live by default: one directory per interface below it.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/meshgate";
const BPFFS: &str = "/sys/fs/bpf";

/// Our tc filter's priority ("MG") and handle on both hooks: fixed, so a restarted agent finds
/// and replaces its predecessor's filter and `tc filter show` names it.
pub const TC_PRIORITY: u16 = 0x4d47;
/// See [`TC_PRIORITY`].
pub const TC_HANDLE: u32 = 0x4d47;

const TC_PARENT_INGRESS: u32 = 0xffff_fff2;

/// Where the IP header starts on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// No link-layer header (WireGuard, TUN).
    L3,
    /// Ethernet (veth); non-IP frames pass.
    Ethernet,
}

/// The ACL program attached to one interface, with its pinned maps.
///
/// Dropping it leaves the filters attached and the maps pinned: the kernel keeps enforcing the
/// last policy while the agent is gone. [`Enforcer::detach`] removes both.
#[derive(Debug)]
pub struct Enforcer {
    iface: String,
    kind: LinkKind,
    loaded: Loaded,
}

fn tc_err(iface: &str) -> impl FnOnce(ProgramError) -> Error + '_ {
    move |e| Error::Tc {
        iface: iface.to_owned(),
        source: Box::new(e),
    }
}

fn is_errno(e: &ProgramError, errno: i32) -> bool {
    match e {
        ProgramError::TcError(TcError::NetlinkError(n)) | ProgramError::NetlinkError(n) => {
            n.raw_os_error() == Some(errno)
        }
        _ => false,
    }
}

fn options() -> TcAttachOptions {
    TcAttachOptions::Netlink(NlOptions {
        priority: TC_PRIORITY,
        handle: TcHandle::from(TC_HANDLE),
        classid: None,
    })
}

/// Makes sure `pin_root` can hold pins: mounts bpffs on /sys/fs/bpf if `pin_root` is under it
/// and nothing is mounted there; elsewhere only checks that it already is on a bpffs.
pub fn ensure_bpffs(pin_root: &Path) -> Result<(), Error> {
    let bpffs = Path::new(BPFFS);
    if pin_root.starts_with(bpffs) {
        if !is_bpffs(bpffs).unwrap_or(false) {
            std::fs::create_dir_all(bpffs).map_err(Error::io(format!("creating {BPFFS}")))?;
            mount_bpffs(bpffs).map_err(|source| Error::NoBpffs {
                path: bpffs.to_owned(),
                source,
            })?;
        }
        return Ok(());
    }
    // Elsewhere we do not mount anything; the nearest existing ancestor must be a bpffs.
    let existing = pin_root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing).unwrap_or(false) {
        Ok(())
    } else {
        Err(Error::NotBpffs {
            path: pin_root.to_owned(),
        })
    }
}

fn ifindex(iface: &str) -> Result<u32, Error> {
    let c = std::ffi::CString::new(iface).map_err(|_| Error::NoInterface(iface.to_owned()))?;
    // SAFETY: `c` is NUL-terminated and alive for the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(Error::NoInterface(iface.to_owned()))
    } else {
        Ok(idx)
    }
}

impl Enforcer {
    /// Loads the program (maps pinned in `pin_root/<iface>`, reused if already there), adds the
    /// clsact qdisc and attaches ingress and egress with our fixed priority and handle. An
    /// existing filter of ours is replaced in place (no moment without enforcement).
    pub fn attach(iface: &str, kind: LinkKind, pin_root: &Path) -> Result<Enforcer, Error> {
        ifindex(iface)?;
        ensure_bpffs(pin_root)?;
        let mut loaded = load(&pin_root.join(iface))?;
        match qdisc_add_clsact(iface) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(tc_err(iface)(e.into())),
        }
        let (ingress, egress) = match kind {
            LinkKind::L3 => (PROG_INGRESS_L3, PROG_EGRESS_L3),
            LinkKind::Ethernet => (PROG_INGRESS_ETH, PROG_EGRESS_ETH),
        };
        // Egress first: flows we start are recorded before ingress starts dropping.
        for (name, hook) in [
            (egress, TcAttachType::Egress),
            (ingress, TcAttachType::Ingress),
        ] {
            let prog = loaded.program(name)?;
            let id = match prog.attach_with_options(iface, hook, options()) {
                Ok(id) => id,
                Err(e) if is_errno(&e, libc::EEXIST) => {
                    let link = SchedClassifierLink::attached(
                        iface,
                        hook,
                        TC_PRIORITY,
                        TcHandle::from(TC_HANDLE),
                        None,
                    )
                    .map_err(|_| Error::NoInterface(iface.to_owned()))?;
                    prog.attach_to_link(link).map_err(tc_err(iface))?
                }
                Err(e) => return Err(tc_err(iface)(e)),
            };
            let link = prog.take_link(id).map_err(tc_err(iface))?;
            // A netlink link holds no descriptor: forgetting it only skips the detach its Drop
            // would do, so the filter outlives this process.
            std::mem::forget(link);
        }
        Ok(Enforcer {
            iface: iface.to_owned(),
            kind,
            loaded,
        })
    }

    /// Removes our filters from both hooks (absent is fine) and the interface's pin directory.
    pub fn detach(iface: &str, pin_root: &Path) -> Result<(), Error> {
        if ifindex(iface).is_ok() {
            for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
                let link = SchedClassifierLink::attached(
                    iface,
                    hook,
                    TC_PRIORITY,
                    TcHandle::from(TC_HANDLE),
                    None,
                )
                .map_err(|_| Error::NoInterface(iface.to_owned()))?;
                match link.detach() {
                    Ok(()) => {}
                    Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::EINVAL) => {}
                    Err(e) => return Err(tc_err(iface)(e)),
                }
            }
        }
        let dir: PathBuf = pin_root.join(iface);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", dir.display()))(e)),
        }
    }

    /// Whether our ingress filter is on `iface`.
    pub fn is_attached(iface: &str) -> bool {
        ifindex(iface)
            .ok()
            .and_then(|idx| filter_present(idx, TC_PARENT_INGRESS, TC_PRIORITY, TC_HANDLE).ok())
            .unwrap_or(false)
    }

    /// See [`crate::Maps::set_policy`].
    pub fn set_policy(&mut self, policy: &Policy) -> Result<SwapReport, Error> {
        self.loaded.maps.set_policy(policy)
    }

    /// See [`crate::Maps::counters`].
    pub fn counters(&self) -> Result<Counters, Error> {
        self.loaded.maps.counters()
    }

    /// See [`crate::Maps::stats`].
    pub fn stats(&self) -> Result<Stats, Error> {
        self.loaded.maps.stats()
    }

    /// Writes `mg_config.flags` (benchmarks).
    pub fn set_flags(&mut self, flags: u32) -> Result<(), Error> {
        self.loaded.maps.set_flags(flags)
    }

    /// The interface this enforcer is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface's link kind.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// The loaded object (maps and programs), e.g. for test runs.
    pub fn loaded(&mut self) -> &mut Loaded {
        &mut self.loaded
    }
}
