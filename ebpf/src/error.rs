//! The crate's one error type. Messages say what an operator can do about it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong compiling tables, loading the program or writing its maps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy compiles to more keys than the maps hold; enforce with nftables only.
    #[error(
        "policy too large for the BPF maps ({rule_keys} rule keys, max {max_rule_keys}; \
         {src_prefixes} source / {dst_prefixes} destination prefixes in one family, max \
         {max_prefixes}): enforcing with nftables only"
    )]
    TooLarge {
        rule_keys: usize,
        max_rule_keys: usize,
        src_prefixes: usize,
        dst_prefixes: usize,
        max_prefixes: usize,
    },
    /// BPF needs CAP_BPF + CAP_NET_ADMIN (in practice: root).
    #[error("{what}: permission denied; run as root (CAP_BPF and CAP_NET_ADMIN are needed)")]
    NotRoot { what: String },
    /// bpffs is missing and could not be mounted.
    #[error(
        "no bpffs at {path}: mount it (`mount -t bpf bpf /sys/fs/bpf`) so the maps can be pinned: {source}"
    )]
    NoBpffs { path: PathBuf, source: io::Error },
    /// The pin root is not on a bpffs and we will not mount one elsewhere.
    #[error("{path} is not on a bpffs; use a directory under /sys/fs/bpf")]
    NotBpffs { path: PathBuf },
    /// Loading the object failed (verifier, BTF, kernel features, incompatible pinned maps).
    #[error(
        "loading the BPF program failed: {0}; the kernel needs BTF and CONFIG_BPF_SYSCALL, \
         CONFIG_NET_CLS_BPF and CONFIG_NET_SCH_INGRESS (sch_ingress, cls_bpf); if maps pinned by \
         an older version are incompatible, remove their pin directory and retry"
    )]
    Load(#[source] Box<aya::EbpfError>),
    /// A map pinned by another build has a different layout.
    #[error(
        "pinned map {path} has (key, value, max entries) {found:?}, this build needs {expected:?}: \
         it was pinned by a different meshgate version; remove its directory (the filter keeps \
         its own reference) and start again"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: (usize, usize, u32),
        expected: (usize, usize, u32),
    },
    /// Loading one program (verifier) failed.
    #[error("the kernel refused program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The object lacks a map or program this crate expects (a build mismatch).
    #[error("the BPF object has no {0}; the build is inconsistent, rebuild meshgate")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The interface does not exist.
    #[error("no interface {0}: create it before attaching the ACL program")]
    NoInterface(String),
    /// tc attach/detach failed.
    #[error("tc on {iface}: {source}; the kernel needs sch_ingress (clsact) and cls_bpf")]
    Tc {
        iface: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Other I/O (pin directory, netlink).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |e| Error::Map {
            map,
            source: Box::new(e),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                Error::NotRoot { what }
            } else {
                Error::Io { what, source }
            }
        }
    }
}
