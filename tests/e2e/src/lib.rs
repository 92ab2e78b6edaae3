//! Helpers shared by the end-to-end tests: the meshgate binary, unique interface names, and
//! running the data-plane engine inside a lab host's network namespace.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use meshgate_netns_lab::Host;
use meshgate_wg::engine::InterfaceState;
use meshgate_wg::{ApplyReport, BackendChoice, Engine, Error, InterfaceConfig};

/// The `meshgate` binary of this build (target/<profile>/meshgate, next to deps/).
pub fn meshgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("meshgate");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace`)",
        bin.display()
    );
    bin
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshgate-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Interface names unique on the whole machine: wireguard-go's socket directory is shared by
/// all namespaces, and tests run in parallel processes.
pub fn unique_ifname(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("mg{}{:x}{}", tag, std::process::id() & 0xfffff, n);
    assert!(name.len() < 16, "{name} too long");
    name
}

/// Runs `f` with a fresh engine inside `host`'s namespace.
pub fn with_engine<R: Send + 'static>(
    host: &Host,
    backend: BackendChoice,
    f: impl AsyncFnOnce(&Engine) -> R + Send + 'static,
) -> R {
    host.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let engine = Engine::new(backend).expect("engine");
            f(&engine).await
        })
    })
    .expect("running in the lab host")
}

pub fn apply(
    host: &Host,
    backend: BackendChoice,
    config: &InterfaceConfig,
) -> Result<ApplyReport, Error> {
    let config = config.clone();
    with_engine(host, backend, async move |engine| {
        engine.apply(&config).await
    })
}

pub fn read(host: &Host, name: &str) -> Result<InterfaceState, Error> {
    let name = name.to_string();
    with_engine(host, BackendChoice::Auto, async move |engine| {
        engine.read(&name).await
    })
}

pub mod acl_lab;
pub mod bpffs;
pub mod control_lab;
pub mod direct_timing;
pub mod dns_lab;
pub mod exit_lab;
pub mod nat_lab;
pub mod policy_lab;
pub mod relay_lab;
pub mod router_lab;
pub mod scenarios;
pub mod tailnet_lab;
