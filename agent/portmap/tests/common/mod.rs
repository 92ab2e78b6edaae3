//! What the fake-gateway tests share: running the real mapper against a fake on loopback.

use std::net::Ipv4Addr;
use std::time::Duration;

use meshgate_netns_lab::Host;
use meshgate_portmap::{Mapping, Options, PortMapper};

pub const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const WG_PORT: u16 = 51820;

/// Runs a mapper for WireGuard's port against a gateway on loopback in `host` for up to
/// `watch_for`; the first mapping it published, if any. It is stopped (and must stop) before
/// returning.
pub fn first_mapping(host: &Host, options: Options, watch_for: Duration) -> Option<Mapping> {
    host.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mapper, mut rx) = PortMapper::start_with(WG_PORT, Some(LO), LO, options).unwrap();
            let got = tokio::time::timeout(watch_for, rx.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|m| *m));
            tokio::time::timeout(Duration::from_secs(10), mapper.stop())
                .await
                .expect("stop hung")
                .expect("task died");
            got
        })
    })
    .unwrap()
}
