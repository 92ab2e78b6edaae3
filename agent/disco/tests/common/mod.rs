//! Helpers shared by the integration tests.

// Each test binary uses only some of these.
#![allow(dead_code)]

use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use meshgate_disco::{DiscoPrivate, DiscoPublic, MAGIC, Nonce};

/// Seals arbitrary plaintext with crypto_box's own `Aead::encrypt` (output tag ‖ ciphertext,
/// NaCl's `crypto_box_easy` layout) and wraps it by hand as magic ‖ sender ‖ nonce ‖ box.
pub fn seal_raw(
    mine: &DiscoPrivate,
    peer: &DiscoPublic,
    nonce: &Nonce,
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = SalsaBox::new(
        &PublicKey::from_bytes(*peer.as_bytes()),
        &SecretKey::from_bytes(*mine.as_secret_bytes()),
    );
    let boxed = cipher.encrypt(nonce.into(), plaintext).unwrap();
    assert_eq!(boxed.len(), plaintext.len() + 16);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(mine.public().as_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&boxed);
    out
}

/// Deterministic xorshift64*: reproducible "random" inputs without a rand dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
