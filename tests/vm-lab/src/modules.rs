//! Choosing the kernel modules the VM loads at boot, with their dependencies in load order.
//!
//! kmod's `modprobe --show-depends` does the resolution (hard dependencies and softdeps, e.g.
//! nf_tables → libcrc32c → crc32c), against a modules.dep that `depmod` writes into the lab
//! cache: the Debian package ships none, and the kernel cache stays untouched.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::cache;
use crate::error::{Error, IoContext};
use crate::kernel::Kernel;
use crate::tools;

/// What every VM loads: the lab's own plumbing (9p over virtio-pci) and what meshgate's
/// scenarios exercise. All are loaded before the scenario starts, because the kernel's module
/// autoloader would run in the initramfs, which has no modprobe. To make another module
/// available, add it here; built-in ones are skipped.
pub(crate) const DEFAULT_MODULES: &[&str] = &[
    // The lab: the host filesystem and the share arrive over 9p on virtio-pci.
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    // Links.
    "wireguard",
    "veth",
    "tun",
    "dummy",
    "bridge",
    // nftables: ACL, forwarding, NAT, MSS clamping (exthdr and rt are inside nf_tables).
    "nf_tables",
    "nft_ct",
    "nft_nat",
    "nft_masq",
    "nft_redir",
    "nft_chain_nat",
    "nft_reject_inet",
    "nft_fib_inet",
    "nft_limit",
    "nft_quota",
    "nft_objref",
    "nft_log",
    "nf_log_syslog",
    // Socket diagnostics (`ss` shows marks and more only through these).
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    // tc: the BPF ACL (clsact lives in sch_ingress) and link emulation for benchmarks.
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "sch_netem",
    "sch_tbf",
];

/// A module file to load, in dependency order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// The file name without `.ko` and compression suffix; unique within a kernel.
    pub name: String,
    pub path: PathBuf,
}

impl Module {
    /// The module as the kernel's init_module wants it: busybox's insmod does not decompress.
    pub(crate) fn read_uncompressed(&self) -> Result<Vec<u8>, Error> {
        let path = self.path.as_os_str();
        let tool = match self.path.extension().and_then(OsStr::to_str) {
            Some("ko") => {
                return std::fs::read(&self.path)
                    .context(|| format!("reading {}", self.path.display()));
            }
            Some("xz") => "xz",
            Some("zst") => "zstd",
            Some("gz") => "gzip",
            _ => {
                return Err(Error::Module {
                    module: self.name.clone(),
                    detail: format!("unknown module file type: {}", self.path.display()),
                });
            }
        };
        let program = tools::find(tool)?;
        Ok(tools::run(&program, &[OsStr::new("-dc"), path])?.stdout)
    }
}

/// Resolves `wanted` and their dependencies into one load order without repeats.
pub(crate) fn resolve(
    kernel: &Kernel,
    cache_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<Module>, Error> {
    let root = depmod_root(kernel, cache_dir)?;
    let modprobe = tools::find("modprobe")?;
    let mut order: Vec<Module> = Vec::new();
    for name in wanted {
        for module in show_depends(&modprobe, &root, &kernel.version, name)? {
            // Each list has dependencies before dependents, so keeping the first occurrence of
            // every module keeps a valid order for the union.
            if !order.iter().any(|m| m.name == module.name) {
                order.push(module);
            }
        }
    }
    Ok(order)
}

fn show_depends(
    modprobe: &Path,
    root: &Path,
    version: &str,
    module: &str,
) -> Result<Vec<Module>, Error> {
    // -C /dev/null: the host's /etc/modprobe.d (blacklists, options) must not shape the VM.
    let args = [
        OsStr::new("-C"),
        OsStr::new("/dev/null"),
        OsStr::new("-d"),
        root.as_os_str(),
        OsStr::new("-S"),
        OsStr::new(version),
        OsStr::new("--show-depends"),
        OsStr::new(module),
    ];
    let output = tools::run(modprobe, &args).map_err(|e| Error::Module {
        module: module.to_owned(),
        detail: e.to_string(),
    })?;
    parse_show_depends(&String::from_utf8_lossy(&output.stdout)).map_err(|detail| Error::Module {
        module: module.to_owned(),
        detail,
    })
}

/// Parses `insmod <path> [params]` and `builtin <name>` lines; built-ins need no loading.
fn parse_show_depends(text: &str) -> Result<Vec<Module>, String> {
    let mut modules = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("builtin"), _) => {}
            (Some("insmod"), Some(path)) => {
                let path = PathBuf::from(path);
                let name = module_name(&path)
                    .ok_or_else(|| format!("unexpected module path {}", path.display()))?;
                modules.push(Module { name, path });
            }
            _ => return Err(format!("unexpected modprobe output: {line}")),
        }
    }
    Ok(modules)
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    Some(stem.to_owned())
}

/// A directory `depmod -b` has indexed, mirroring `lib/modules/<version>` of the kernel cache
/// through a symlink to its `kernel/` tree, so that nothing is copied or written there.
fn depmod_root(kernel: &Kernel, cache_dir: &Path) -> Result<PathBuf, Error> {
    let key = cache::key(&[
        kernel.modules_dir.as_os_str().as_encoded_bytes(),
        kernel.version.as_bytes(),
    ]);
    let root = cache_dir.join(format!("depmod-{}-{key}", kernel.version));
    if root
        .join("lib/modules")
        .join(&kernel.version)
        .join("modules.dep")
        .is_file()
    {
        return Ok(root);
    }
    // Built whole in a private directory, then renamed into place: a parallel test process
    // sees either no index or a complete one.
    let tmp = cache::temp_sibling(&root);
    let result = build_depmod_root(kernel, &tmp);
    let result = result.and_then(|()| match std::fs::rename(&tmp, &root) {
        Ok(()) => Ok(()),
        // Another process finished first; its index is as good as ours.
        Err(_)
            if root
                .join("lib/modules")
                .join(&kernel.version)
                .join("modules.dep")
                .is_file() =>
        {
            Ok(())
        }
        Err(e) => Err(Error::io(format!("renaming into {}", root.display()), e)),
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| root)
}

fn build_depmod_root(kernel: &Kernel, tmp_root: &Path) -> Result<(), Error> {
    let dir = tmp_root.join("lib/modules").join(&kernel.version);
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let tree = kernel.modules_dir.join("kernel");
    std::os::unix::fs::symlink(&tree, dir.join("kernel"))
        .context(|| format!("linking {}", tree.display()))?;
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = kernel.modules_dir.join(file);
        if from.is_file() {
            std::fs::copy(&from, dir.join(file))
                .context(|| format!("copying {}", from.display()))?;
        }
    }
    let depmod = tools::find("depmod")?;
    tools::run(
        &depmod,
        &[
            OsStr::new("-b"),
            tmp_root.as_os_str(),
            OsStr::new(&kernel.version),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modprobe_output() {
        let text = "insmod /m/kernel/lib/libcrc32c.ko \nbuiltin sch_fq_codel\n\
                    insmod /m/kernel/net/netfilter/nf_tables.ko.xz\n";
        let modules = parse_show_depends(text).unwrap();
        let names: Vec<_> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["libcrc32c", "nf_tables"]);
        assert!(parse_show_depends("modprobe: FATAL: nope").is_err());
    }
}
