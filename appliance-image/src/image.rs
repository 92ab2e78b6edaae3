//! The appliance image for tests: built once by `build.sh` from the appliance meshgate binary
//! (`cargo build --profile appliance -p meshgate --no-default-features`),
//! cached under the target directory by a digest of every input, and copied per test with the
//! test's own `meshgate.conf` on the config partition.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where build.sh puts p1 (MGBOOT): 1 MiB into the disk.
const BOOT_OFFSET: u64 = 1 << 20;
/// A meshgate binary to put in the image instead of building the appliance one.
pub const MESHGATE_ENV: &str = "MESHGATE_APPLIANCE_MESHGATE";

/// A built image and what it cost.
#[derive(Debug, Clone)]
pub struct Image {
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub initrd: PathBuf,
    /// The meshgate binary inside it (the arm64 image has none).
    pub meshgate: Option<PathBuf>,
    /// Building the appliance binary (near zero when it was up to date).
    pub binary_build: Duration,
    /// build.sh's run; None when the cache had the image.
    pub image_build: Option<Duration>,
}

impl Image {
    /// Builds (or finds in the cache) the x86_64 image of the current recipe and appliance
    /// binary.
    pub fn get() -> Result<Image> {
        let (meshgate, binary_build) = appliance_meshgate()?;
        let mut image = build_cached("x86_64", Some(&meshgate))?;
        image.binary_build = binary_build;
        Ok(image)
    }

    /// Builds (or finds in the cache) the arm64 image: Debian's arm64 kernel, busybox and nft,
    /// booted by U-Boot, without meshgate (this machine cannot build an aarch64 one).
    pub fn get_arm64() -> Result<Image> {
        build_cached("arm64", None)
    }
    /// `FOOTPRINT image raw X MB, qcow2 Y MB, initramfs Z MB` (MB = 2^20 bytes; the raw
    /// image's size is what a flash card needs, the qcow2 what a download weighs).
    pub fn footprint(&self) -> String {
        let mb = |p: &Path| {
            std::fs::metadata(p).map_or(f64::NAN, |m| m.len() as f64 / (1u64 << 20) as f64)
        };
        format!(
            "FOOTPRINT image raw {:.1} MB, qcow2 {:.1} MB, initramfs {:.1} MB",
            mb(&self.raw),
            mb(&self.qcow2),
            mb(&self.initrd)
        )
    }

    /// A private copy of the raw image in `dir` with `config` as its meshgate.conf.
    pub fn disk(&self, dir: &Path, config: &str) -> Result<Disk> {
        let path = dir.join("disk.img");
        let mut cp = Command::new("cp");
        cp.arg("--sparse=always").arg(&self.raw).arg(&path);
        run(&mut cp)?;
        let disk = Disk { path };
        disk.set_config(config)?;
        Ok(disk)
    }
}

/// build.sh's image for `arch` (with `meshgate` inside when given), from the cache when the
/// digest of every input matches.
fn build_cached(arch: &str, meshgate: Option<&Path>) -> Result<Image> {
    let recipe = recipe_dir();
    let name = format!("meshgate-appliance-{arch}");
    let key = input_digest(&recipe, arch, meshgate)?;
    let dir = target_dir().join("appliance-image").join(&key[..16]);
    let raw = dir.join(format!("{name}.img"));
    let mut image_build = None;
    if !raw.is_file() {
        let start = Instant::now();
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = Command::new("bash");
        cmd.arg(recipe.join("build.sh"))
            .args(["--arch", arch])
            .arg("--out")
            .arg(&tmp);
        if let Some(meshgate) = meshgate {
            cmd.arg("--meshgate").arg(meshgate);
        }
        run(&mut cmd)?;
        // Another test process may have won the race; its image is as good as ours.
        if std::fs::rename(&tmp, &dir).is_err() && !raw.is_file() {
            return Err(Error::io(
                format!("renaming {} into place", tmp.display()),
                std::io::Error::other("rename failed"),
            ));
        }
        let _ = std::fs::remove_dir_all(&tmp);
        image_build = Some(start.elapsed());
        prune(&dir);
    }
    Ok(Image {
        qcow2: dir.join(format!("{name}.qcow2")),
        initrd: dir.join("initrd.img"),
        raw,
        meshgate: meshgate.map(Path::to_owned),
        binary_build: Duration::ZERO,
        image_build,
    })
}

/// A test's copy of the image.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
}

impl Disk {
    /// Replaces meshgate.conf on the config partition, as a person would from any computer.
    pub fn set_config(&self, config: &str) -> Result<()> {
        let file = self.path.with_extension("conf");
        std::fs::write(&file, config).map_err(|e| Error::io("writing the config", e))?;
        self.copy_to_boot(&file, "::/meshgate.conf")
    }

    /// Copies `file` onto the boot partition as `dest` (mtools, no mount), replacing it.
    fn copy_to_boot(&self, file: &std::path::Path, dest: &str) -> Result<()> {
        let mut mcopy = Command::new("mcopy");
        mcopy
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-o")
            .arg("-i")
            .arg(self.on_boot_partition())
            .arg(file)
            .arg(dest);
        run(&mut mcopy)
    }

    /// Deletes meshgate.conf from the config partition.
    pub fn remove_config(&self) -> Result<()> {
        let mut mdel = Command::new("mdel");
        mdel.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(self.on_boot_partition())
            .arg("::/meshgate.conf");
        run(&mut mdel)
    }

    /// Appends `args` to the kernel command line in syslinux.cfg.
    pub fn append_kernel_args(&self, args: &str) -> Result<()> {
        let mut mtype = Command::new("mtype");
        mtype
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(self.on_boot_partition())
            .arg("::/syslinux.cfg");
        let cfg = output(&mut mtype)?;
        let cfg: String = cfg
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("APPEND") {
                    format!("{line} {args}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let file = self.path.with_extension("syslinux.cfg");
        std::fs::write(&file, cfg).map_err(|e| Error::io("writing syslinux.cfg", e))?;
        self.copy_to_boot(&file, "::/syslinux.cfg")
    }

    /// mtools' name for p1 inside the disk file.
    fn on_boot_partition(&self) -> std::ffi::OsString {
        let mut image = self.path.clone().into_os_string();
        image.push(format!("@@{BOOT_OFFSET}"));
        image
    }
}

/// The cargo target directory this test binary lives in (target/<profile>/deps/<test>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map_or_else(|| recipe_dir().join("../target"), Path::to_path_buf)
}

/// This crate's directory: build.sh, modules.txt, rootfs/.
pub fn recipe_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of `cargo build` for the binary the image ships: the agent and its command
/// line only (no coordinator, relay, demo or bench), in the size-optimised `appliance` profile.
pub const APPLIANCE_BUILD: [&str; 6] = [
    "build",
    "--profile",
    "appliance",
    "-p",
    "meshgate",
    "--no-default-features",
];

/// The appliance meshgate binary, built if missing or stale, and how long that took
/// ([`MESHGATE_ENV`] names one to use instead).
pub fn appliance_meshgate() -> Result<(PathBuf, Duration)> {
    if let Some(bin) = std::env::var_os(MESHGATE_ENV) {
        return Ok((PathBuf::from(bin), Duration::ZERO));
    }
    let target = target_dir();
    let start = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(recipe_dir().join(".."))
        .env("CARGO_TARGET_DIR", &target)
        .args(APPLIANCE_BUILD);
    run(&mut cmd)?;
    Ok((target.join("appliance/meshgate"), start.elapsed()))
}

/// A digest of everything the image is made of: the binary, the recipe, the kernel, busybox
/// and nft (the host's, or the arm64 sysroot's). Any change makes a new cache entry.
fn input_digest(recipe: &Path, arch: &str, meshgate: Option<&Path>) -> Result<String> {
    let mut files: Vec<PathBuf> = vec![recipe.join("build.sh"), recipe.join("modules.txt")];
    files.extend(meshgate.map(Path::to_owned));
    let kernel_cache = if arch == "arm64" {
        let sysroot = std::env::var_os("MESHGATE_ARM64_ROOT")
            .map_or_else(|| PathBuf::from("/var/cache/meshgate/arm64"), PathBuf::from);
        files.push(recipe.join("modules.arm64.txt"));
        files.push(sysroot.join("bin/busybox"));
        files.push(sysroot.join("usr/sbin/nft"));
        sysroot
    } else {
        files.push(PathBuf::from("/usr/bin/busybox"));
        files.push(PathBuf::from("/usr/sbin/nft"));
        std::env::var_os("MESHGATE_KERNEL_CACHE").map_or_else(
            || PathBuf::from("/var/cache/meshgate/kernel"),
            PathBuf::from,
        )
    };
    collect_files(&recipe.join("rootfs"), &mut files)?;
    // build.sh's default meshgate.conf (tests replace it, but the image holds it).
    let default_config = recipe.join("../configs/appliance.conf");
    if default_config.is_file() {
        files.push(default_config);
    }
    collect_files(&kernel_cache.join("boot"), &mut files)?;
    files.sort();
    let mut cmd = Command::new("sha256sum");
    cmd.args(&files);
    let listing = output(&mut cmd)?;
    // Names relative to nothing in particular would do; the digests carry the content.
    let mut hash = Command::new("sh");
    hash.arg("-c")
        .arg("printf '%s' \"$1\" | sha256sum")
        .arg("sh")
        .arg(listing);
    let digest = output(&mut hash)?;
    Ok(digest.chars().take(64).collect())
}

/// Removes the cache's other images once they are an hour old: every change to meshgate
/// makes a new one (~100 MB on disk), and a run in progress uses only its own.
fn prune(keep: &Path) {
    let Some(parent) = keep.parent() else {
        return;
    };
    let hour = Duration::from_secs(3600);
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > hour);
        if path != keep && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if kind.is_dir() {
            collect_files(&path, files)?;
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs a command to success; its stderr goes into the error.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let rendered = render(cmd);
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running {rendered}"), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: rendered,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
