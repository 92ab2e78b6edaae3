//! Runs Map/Renew/Delete through crab_nat (NAT-PMP, PCP) and igd-next (UPnP), and checks what
//! they return before it becomes a `Mapping`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use crab_nat::{InternetProtocol, PortMappingOptions, PortMappingType, TimeoutConfig};
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};

use crate::Error;
use crate::mapper::{Mapping, Protocol};
use crate::wire::usable_external_ip;

const DESCRIPTION: &str = "meshgate-portmap";

/// Library handles for the current mapping (PCP's nonce lives in crab_nat's mapping; the IGD's
/// control URL in igd-next's gateway).
#[derive(Debug, Default)]
pub struct Session {
    pmp: Option<crab_nat::PortMapping>,
    igd: Option<Gateway<Tokio>>,
}

/// Where requests go and how long to wait for each.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub gateway: Ipv4Addr,
    pub local_ip: Ipv4Addr,
    pub timeout: Duration,
}

impl Target {
    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig {
            initial_timeout: self.timeout,
            max_retries: 2,
            max_retry_timeout: Some(self.timeout * 4),
        }
    }
}

fn external_v4(ip: IpAddr) -> Result<Ipv4Addr, Error> {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    v4.filter(|v4| usable_external_ip(*v4))
        .ok_or(Error::BadExternalAddress(ip))
}

impl Session {
    /// Creates or refreshes the mapping (a renewal is the same request with the previous port
    /// and, for PCP, the previous nonce, so a gateway that forgot us maps afresh).
    pub async fn map(
        &mut self,
        t: Target,
        protocol: Protocol,
        internal_port: u16,
        suggested: Option<u16>,
        lease: Duration,
    ) -> Result<Mapping, Error> {
        let port = NonZeroU16::new(internal_port).ok_or(Error::Unexpected("internal port 0"))?;
        let lease_s = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
        match protocol {
            Protocol::NatPmp | Protocol::Pcp => {
                self.map_pmp(t, protocol, port, suggested, lease_s).await
            }
            Protocol::Upnp => {
                self.map_upnp(t, internal_port, suggested, lease, lease_s)
                    .await
            }
        }
    }

    async fn map_pmp(
        &mut self,
        t: Target,
        protocol: Protocol,
        port: NonZeroU16,
        suggested: Option<u16>,
        lease_s: u32,
    ) -> Result<Mapping, Error> {
        let options = PortMappingOptions {
            external_port: suggested.and_then(NonZeroU16::new),
            lifetime_seconds: Some(lease_s),
            timeout_config: Some(t.timeouts()),
        };
        let gw = crab_nat::GatewayAddress::IpV4(t.gateway);
        let (m, external_ip) = if protocol == Protocol::Pcp {
            let nonce = match self.pmp.as_ref().map(crab_nat::PortMapping::mapping_type) {
                Some(PortMappingType::Pcp { nonce, .. }) => Some(nonce),
                _ => None,
            };
            let base = crab_nat::pcp::BaseMapRequest::new(
                gw,
                IpAddr::V4(t.local_ip),
                InternetProtocol::Udp,
                port,
            );
            let m = crab_nat::pcp::port_mapping(base, nonce, None, options).await?;
            let PortMappingType::Pcp { external_ip, .. } = m.mapping_type() else {
                return Err(Error::Unexpected(
                    "crab_nat returned a non-PCP mapping for PCP",
                ));
            };
            match external_v4(external_ip) {
                Ok(ip) => (m, ip),
                Err(e) => {
                    let _ = m.try_drop().await;
                    return Err(e);
                }
            }
        } else {
            let m =
                crab_nat::natpmp::port_mapping(gw, InternetProtocol::Udp, port, options).await?;
            let ip = crab_nat::natpmp::external_address(gw, Some(t.timeouts()))
                .await
                .map_err(Error::from)
                .and_then(|ip| external_v4(IpAddr::V4(ip)));
            match ip {
                Ok(ip) => (m, ip),
                Err(e) => {
                    // A mapping whose address we cannot trust is released, not kept.
                    let _ = m.try_drop().await;
                    return Err(e);
                }
            }
        };
        let mapping = Mapping {
            protocol,
            external: SocketAddr::V4(SocketAddrV4::new(external_ip, m.external_port().get())),
            lease: Duration::from_secs(u64::from(m.lifetime())),
            obtained_at: Instant::now(),
            epoch: Some(m.gateway_epoch()),
        };
        self.pmp = Some(m);
        Ok(mapping)
    }

    async fn igd(&mut self, t: Target) -> Result<&Gateway<Tokio>, Error> {
        if self.igd.is_none() {
            let mut options = SearchOptions::default();
            options.bind_addr = SocketAddr::from((t.local_ip, 0));
            // Unicast to the gateway: only it may answer, and no multicast route is needed.
            options.broadcast_address = SocketAddr::from((t.gateway, 1900));
            options.timeout = Some(t.timeout * 8);
            options.single_search_timeout = Some(t.timeout * 8);
            // igd-next never trusts a loopback LOCATION on its own; the gateway we were given
            // (only loopback in tests) is the one address we do trust.
            options.allowed_gateway_ips = vec![IpAddr::V4(t.gateway)];
            let gw = igd_next::aio::tokio::search_gateway(options)
                .await
                .map_err(|e| Error::Upnp(e.to_string()))?;
            if gw.addr.ip() != IpAddr::V4(t.gateway) {
                return Err(Error::Upnp(format!(
                    "IGD at {} is not the gateway",
                    gw.addr
                )));
            }
            self.igd = Some(gw);
        }
        self.igd
            .as_ref()
            .ok_or(Error::Unexpected("no IGD after search"))
    }

    async fn map_upnp(
        &mut self,
        t: Target,
        internal_port: u16,
        suggested: Option<u16>,
        lease: Duration,
        lease_s: u32,
    ) -> Result<Mapping, Error> {
        let result = self.try_upnp(t, internal_port, suggested, lease_s).await;
        if result.is_err() {
            // The control URL may be stale (gateway rebooted on another port): search again next time.
            self.igd = None;
        }
        let (external_port, granted) = result?;
        let gw = self.igd(t).await?;
        let ip = gw
            .get_external_ip()
            .await
            .map_err(|e| Error::Upnp(e.to_string()))
            .and_then(external_v4);
        let ip = match ip {
            Ok(ip) => ip,
            Err(e) => {
                // Without a usable address the mapping is useless to us: do not leave it behind.
                let _ = gw
                    .remove_port(PortMappingProtocol::UDP, external_port)
                    .await;
                return Err(e);
            }
        };
        Ok(Mapping {
            protocol: Protocol::Upnp,
            external: SocketAddr::V4(SocketAddrV4::new(ip, external_port)),
            // A permanent mapping is still refreshed on our lease's schedule.
            lease: if granted == 0 {
                lease
            } else {
                Duration::from_secs(u64::from(granted))
            },
            obtained_at: Instant::now(),
            epoch: None,
        })
    }

    async fn try_upnp(
        &mut self,
        t: Target,
        internal_port: u16,
        suggested: Option<u16>,
        lease_s: u32,
    ) -> Result<(u16, u32), Error> {
        let local = SocketAddr::from((t.local_ip, internal_port));
        let ext = suggested
            .filter(|p| *p >= 1024)
            .unwrap_or(internal_port.max(1024));
        let gw = self.igd(t).await?;
        let up = |e: &dyn std::fmt::Display| Error::Upnp(e.to_string());
        match gw
            .add_port(PortMappingProtocol::UDP, ext, local, lease_s, DESCRIPTION)
            .await
        {
            Ok(()) => Ok((ext, lease_s)),
            Err(AddPortError::OnlyPermanentLeasesSupported) => {
                gw.add_port(PortMappingProtocol::UDP, ext, local, 0, DESCRIPTION)
                    .await
                    .map_err(|e| up(&e))?;
                Ok((ext, 0))
            }
            Err(AddPortError::PortInUse) => {
                let port = gw
                    .add_any_port(PortMappingProtocol::UDP, local, lease_s, DESCRIPTION)
                    .await
                    .map_err(|e| up(&e))?;
                Ok((port, lease_s))
            }
            Err(e) => Err(up(&e)),
        }
    }

    /// Deletes the mapping on the gateway.
    pub async fn delete(&mut self, t: Target, mapping: Mapping) -> Result<(), Error> {
        match mapping.protocol {
            Protocol::NatPmp | Protocol::Pcp => {
                let Some(m) = self.pmp.take() else {
                    return Ok(());
                };
                m.try_drop().await.map_err(|(e, _)| match e {
                    crab_nat::MappingFailure::NatPmp(e) => Error::NatPmp(e),
                    crab_nat::MappingFailure::Pcp(e) => Error::Pcp(e),
                })
            }
            Protocol::Upnp => {
                let gw = self.igd(t).await?;
                gw.remove_port(PortMappingProtocol::UDP, mapping.external.port())
                    .await
                    .map_err(|e| Error::Upnp(e.to_string()))
            }
        }
    }

    /// Forget library handles (network changed).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
