//! The capability version (reference §5.7).

/// Tailscale's `tailcfg.CapabilityVersion`.
pub type CapabilityVersion = u16;

/// The capability version this project speaks, sent in `RegisterRequest.Version`,
/// `MapRequest.Version`, `GET /key?v=` and the Noise prologue.
///
/// 130 is what Tailscale's own Rust client (tailscale-rs) claims, and the semantics we implement
/// are those of that range, in particular:
/// - ≥ 68: the server ignores `Hostinfo`/`Endpoints` on streaming map requests; they are pushed
///   with separate non-streaming `OmitPeers` requests;
/// - ≥ 112: a peer's `AllowedIPs` may be absent, meaning its `Addresses`;
/// - a `PacketFilter` that is present and empty means deny all; absent means unchanged; the named
///   `PacketFilters` are merged with it;
/// - map-response deltas (`PeersChanged`, `PeersRemoved`, `PeersChangedPatch`, `OnlineChange`,
///   `PeerSeenChange`) and `HomeDERP` in place of the legacy `"DERP":"127.3.3.40:N"` string.
///
/// It stays below 144 (no TSMP disco-key advertisement after WireGuard handshakes). Note that
/// peers key behaviour off `Node.Cap` (the reference cites ≥ 121 as "peer-relay capable"), so
/// anything gated on a version ≤ 130 is implicitly promised too; audit that list before raising it.
pub const CAPABILITY_VERSION: CapabilityVersion = 130;

/// The oldest client capability version the coordinator accepts.
///
/// 113 is headscale's minimum (reference §5.3/§5.7, hs:hscontrol/capver); the reference gives no
/// release dates, so "clients of the last two years" is approximated by following headscale.
pub const MIN_SUPPORTED_CLIENT_VERSION: CapabilityVersion = 113;

/// The Noise prologue for a capability version: `"Tailscale Control Protocol v<version>"`.
pub fn noise_prologue(version: CapabilityVersion) -> String {
    format!("Tailscale Control Protocol v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologue() {
        assert_eq!(
            noise_prologue(CAPABILITY_VERSION),
            "Tailscale Control Protocol v130"
        );
        const { assert!(MIN_SUPPORTED_CLIENT_VERSION <= CAPABILITY_VERSION) };
    }
}
