//! Machine keys as raw Curve25519 bytes, so that this crate needs no other project crate.

use std::fmt;

use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use zeroize::Zeroize;

use crate::Error;

/// A machine (or control server) private key: the Noise static key of ts2021.
///
/// Wiped from memory on drop; its `Debug` output is redacted.
#[derive(Clone)]
pub struct MachinePrivate([u8; 32]);

impl Drop for MachinePrivate {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl MachinePrivate {
    /// Wraps raw private key bytes (Curve25519 scalar, clamped at use).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Draws a fresh key from the operating system's random source.
    ///
    /// # Errors
    /// [`Error::Noise`] if the random source fails.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        let mut rng = DefaultResolver
            .resolve_rng()
            .ok_or_else(|| Error::Noise("no random source".into()))?;
        rng.try_fill_bytes(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The raw private key bytes (for storage; handle with care).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key.
    #[must_use]
    pub fn public(&self) -> MachinePublic {
        let mut out = [0u8; 32];
        // The curve25519 feature of snow is always enabled by this crate, so the resolver
        // always has an implementation; fall back to the all-zero key rather than panic.
        if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
            dh.set(&self.0);
            out.copy_from_slice(dh.pubkey());
        }
        MachinePublic(out)
    }
}

impl fmt::Debug for MachinePrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachinePrivate(<redacted>)")
    }
}

/// A machine (or control server) public key.
///
/// `Debug` and `Display` show Tailscale's text form, `mkey:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MachinePublic([u8; 32]);

impl MachinePublic {
    /// Wraps raw public key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public key bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for MachinePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mkey:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MachinePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
