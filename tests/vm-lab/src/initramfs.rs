//! Packing busybox, the selected modules and the lab's /init into a cached initramfs.

use std::path::{Path, PathBuf};

use crate::cache;
use crate::cpio::Archive;
use crate::error::{Error, IoContext};
use crate::modules::Module;
use crate::tools;

/// PID 1 of the VM. Its text is part of the archive, so editing it rebuilds the cache.
pub(crate) const INIT_SCRIPT: &str = include_str!("init.sh");

/// 9p mount tags and in-VM paths shared with [`INIT_SCRIPT`], which spells them out too.
pub(crate) const TAG_HOST_ROOT: &str = "hostroot";
pub(crate) const TAG_CTL: &str = "vmlabctl";
pub(crate) const TAG_SHARE: &str = "vmlabshare";
/// Where the per-run share appears inside the VM.
pub(crate) const SHARE_IN_VM: &str = "/run/vmlab";

const BUSYBOX_ENV: &str = "MESHGATE_BUSYBOX";

/// Builds the initramfs in memory and stores it in the cache under a digest of its bytes,
/// unless an identical one is already there. The archive is reproducible, so the digest of
/// the result is the digest of its inputs (kernel version, modules, init script, busybox).
pub(crate) fn build(cache_dir: &Path, version: &str, modules: &[Module]) -> Result<PathBuf, Error> {
    let busybox = find_static_busybox()?;
    let busybox_bytes =
        std::fs::read(&busybox).context(|| format!("reading {}", busybox.display()))?;
    let archive = pack(version, modules, &busybox_bytes)?;
    let path = cache_dir.join(format!(
        "initramfs-{version}-{}.cpio",
        cache::key(&[&archive])
    ));
    if !path.is_file() {
        cache::write_atomic(&path, &archive)?;
    }
    Ok(path)
}

fn pack(version: &str, modules: &[Module], busybox: &[u8]) -> Result<Vec<u8>, Error> {
    let mut a = Archive::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "host",
        "ctl",
        "lib",
        "lib/modules",
        "proc",
        "sys",
    ] {
        a.dir(dir);
    }
    // Until devtmpfs is mounted, the kernel needs this node to give PID 1 its stdio.
    a.char_device("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, busybox);
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let mut list = String::new();
    for module in modules {
        let bytes = module.read_uncompressed()?;
        a.file(&format!("lib/modules/{}.ko", module.name), 0o644, &bytes);
        list.push_str(&module.name);
        list.push('\n');
    }
    a.file("etc/vmlab-modules", 0o644, list.as_bytes());
    a.file("etc/vmlab-kernel", 0o644, format!("{version}\n").as_bytes());
    Ok(a.finish())
}

/// The initramfs has no libraries, so busybox must be the static build (busybox-static).
fn find_static_busybox() -> Result<PathBuf, Error> {
    let path = tools::find_overridable("busybox", BUSYBOX_ENV)?;
    let bytes = std::fs::read(&path).context(|| format!("reading {}", path.display()))?;
    match elf_interpreter(&bytes) {
        Some(false) => Ok(path),
        Some(true) => Err(Error::ToolNotFound {
            tool: "busybox (static)".to_owned(),
            detail: format!(
                "{} is dynamically linked; install busybox-static or set {BUSYBOX_ENV}",
                path.display()
            ),
        }),
        None => Err(Error::ToolNotFound {
            tool: "busybox (static)".to_owned(),
            detail: format!("{} is not a 64-bit ELF executable", path.display()),
        }),
    }
}

/// Whether a 64-bit little-endian ELF asks for a program interpreter (is dynamically linked);
/// None if the bytes are not such an ELF.
fn elf_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |off: usize| {
        elf.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        elf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |off: usize| {
        elf.get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut found = false;
    for i in 0..phnum {
        found |= u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP;
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_init_script() {
        for needle in [TAG_HOST_ROOT, TAG_CTL, TAG_SHARE, SHARE_IN_VM] {
            assert!(
                INIT_SCRIPT.contains(needle),
                "init.sh does not mention {needle}"
            );
        }
    }

    #[test]
    fn elf_interpreter_detection() {
        assert_eq!(elf_interpreter(b"#!/bin/sh"), None);
        // /bin/sh on any Debian host is dynamically linked.
        if let Ok(sh) = std::fs::read("/bin/sh") {
            assert_eq!(elf_interpreter(&sh), Some(true));
        }
    }
}
