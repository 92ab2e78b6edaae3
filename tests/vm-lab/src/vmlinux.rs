//! Unpacking the bzImage into the ELF `vmlinux` that qemu can boot directly through PVH.
//!
//! Under TCG the compressed kernel spends about 2.5 s decompressing itself on every boot (out
//! of about 6 s in all), so the lab decompresses it once on the host and caches the result.
//! Debian builds with CONFIG_PVH, which puts the entry note qemu looks for in the ELF. When
//! anything here does not fit, the lab boots the bzImage as it is, only slower.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cache;
use crate::error::{Error, IoContext};
use crate::kernel::Kernel;
use crate::tools;

/// The image to hand to `qemu -kernel`: the cached PVH ELF when it could be made, the bzImage
/// otherwise.
pub(crate) fn boot_image(kernel: &Kernel, cache_dir: &Path) -> Result<PathBuf, Error> {
    let bzimage = std::fs::read(&kernel.vmlinuz)
        .context(|| format!("reading {}", kernel.vmlinuz.display()))?;
    let key = cache::key(&[&bzimage]);
    let elf_path = cache_dir.join(format!("vmlinux-{}-{key}.elf", kernel.version));
    let unsupported = elf_path.with_extension("unsupported");
    if elf_path.is_file() {
        return Ok(elf_path);
    }
    if unsupported.is_file() {
        return Ok(kernel.vmlinuz.clone());
    }
    match extract(&bzimage) {
        Ok(elf) => {
            cache::write_atomic(&elf_path, &elf)?;
            Ok(elf_path)
        }
        Err(Unusable::Image(why)) => {
            // Remembered so that later runs skip the attempt; the reason is kept for whoever
            // wonders why boots are slow.
            cache::write_atomic(&unsupported, why.as_bytes())?;
            Ok(kernel.vmlinuz.clone())
        }
        // Installing the decompressor fixes this one, so it is tried again next time.
        Err(Unusable::NoTool) => Ok(kernel.vmlinuz.clone()),
    }
}

enum Unusable {
    /// The image itself does not allow it.
    Image(String),
    /// The decompressor is not installed.
    NoTool,
}

impl From<String> for Unusable {
    fn from(why: String) -> Self {
        Unusable::Image(why)
    }
}

impl From<&str> for Unusable {
    fn from(why: &str) -> Self {
        Unusable::Image(why.to_owned())
    }
}

/// Returns the decompressed ELF, or why it cannot be used.
fn extract(bzimage: &[u8]) -> Result<Vec<u8>, Unusable> {
    let payload = payload(bzimage)?;
    // The build appends the decompressed size to the payload (arch/x86/boot/compressed/mkpiggy).
    let (compressed, size) = payload.split_at(payload.len().saturating_sub(4));
    let size: [u8; 4] = size
        .try_into()
        .map_err(|_| "payload too short".to_owned())?;
    let expected_len = u32::from_le_bytes(size) as usize;
    let (tool, args): (&str, &[&str]) = match compressed {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc"]),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dc"]),
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"]),
        _ => return Err("payload compression not one of xz, zstd, gzip".into()),
    };
    let program = tools::find(tool).map_err(|_| Unusable::NoTool)?;
    let elf = decompress(&program, args, compressed)?;
    if elf.len() != expected_len {
        return Err(format!(
            "decompressed {} bytes, the image says {expected_len}",
            elf.len()
        )
        .into());
    }
    if !elf.starts_with(b"\x7fELF") {
        return Err("payload is not an ELF file".into());
    }
    if !has_pvh_note(&elf) {
        return Err("no PVH entry note (kernel built without CONFIG_PVH)".into());
    }
    Ok(elf)
}

/// The compressed kernel inside a bzImage, located through its boot protocol header.
fn payload(bzimage: &[u8]) -> Result<&[u8], String> {
    let u16_at = |off: usize| {
        bzimage
            .get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        bzimage
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS header)".to_owned());
    }
    // payload_offset and payload_length exist from boot protocol 2.08 on.
    if u16_at(0x206).unwrap_or(0) < 0x208 {
        return Err("boot protocol older than 2.08".to_owned());
    }
    let setup_sects = match bzimage.get(0x1f1) {
        Some(0) | None => 4,
        Some(&n) => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(0x248).ok_or("truncated header")?;
    let len = u32_at(0x24c).ok_or("truncated header")?;
    bzimage
        .get(start + offset..start + offset + len)
        .ok_or_else(|| "payload outside the file".to_owned())
}

fn decompress(program: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    // Fed from a second thread: the decompressor blocks on a full stdout pipe until read.
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        child.wait_with_output()
    })
    .map_err(|e| format!("running {}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

/// Whether the ELF carries XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen"), the note qemu
/// needs to boot an uncompressed kernel. A byte search suffices: a false positive only means
/// qemu refuses the image and reports it.
fn has_pvh_note(elf: &[u8]) -> bool {
    const NOTE_TAIL: [u8; 8] = [18, 0, 0, 0, b'X', b'e', b'n', 0];
    elf.windows(16)
        .any(|w| w[..4] == [4, 0, 0, 0] && w[8..] == NOTE_TAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_bzimage() {
        assert!(extract(b"definitely not a kernel").is_err());
    }

    #[test]
    fn finds_pvh_note() {
        let mut elf = vec![0u8; 64];
        elf.extend_from_slice(&[4, 0, 0, 0, 8, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0]);
        assert!(has_pvh_note(&elf));
        assert!(!has_pvh_note(&elf[..70]));
    }
}
