//! The Noise IK handshake of ts2021, driven by `snow`, framed as Tailscale's controlbase does.

use std::fmt;
use std::ops::RangeInclusive;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::Zeroize;

use crate::Error;
use crate::keys::{MachinePrivate, MachinePublic};
use crate::messages::{
    HEADER_LEN, INITIATION_HEADER_LEN, INITIATION_LEN, INITIATION_PAYLOAD_LEN, MSG_ERROR,
    MSG_INITIATION, MSG_RESPONSE, RESPONSE_LEN, RESPONSE_PAYLOAD_LEN, be16,
};
use crate::transport::{SessionInfo, Transport};

/// The Noise protocol name of ts2021.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The prologue is this prefix followed by the decimal protocol (capability) version.
pub const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";

/// The Noise prologue for `version`: `"Tailscale Control Protocol v" + decimal(version)`.
#[must_use]
pub fn prologue(version: u16) -> Vec<u8> {
    format!("{PROLOGUE_PREFIX}{version}").into_bytes()
}

/// snow's pure-Rust primitives, except that a Diffie-Hellman result of all zeros (a peer's
/// low-order public key) is an error, as Go's `curve25519.X25519` makes it in Tailscale.
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        let inner = DefaultResolver.resolve_dh(choice)?;
        Some(Box::new(RejectZeroDh(inner)))
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct RejectZeroDh(Box<dyn Dh>);

impl Dh for RejectZeroDh {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn pub_len(&self) -> usize {
        self.0.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.0.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.0.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        self.0.pubkey()
    }
    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if pubkey.len() < self.0.pub_len() || out.len() < self.0.dh_len() {
            return Err(snow::Error::Dh);
        }
        self.0.dh(pubkey, out)?;
        // Not secret-dependent beyond "is it zero", and we fail loudly on zero anyway.
        let acc = out[..self.0.dh_len()].iter().fold(0u8, |a, b| a | b);
        if acc == 0 {
            out.zeroize();
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
    fn dh_len(&self) -> usize {
        self.0.dh_len()
    }
}

fn builder(prologue: &[u8]) -> Result<Builder<'_>, Error> {
    let params: NoiseParams = PROTOCOL_NAME.parse()?;
    Ok(Builder::with_resolver(params, Box::new(Resolver)).prologue(prologue)?)
}

/// Finishes a handshake: raw split keys become the transport's two directions.
fn into_transport(
    mut hs: HandshakeState,
    initiator: bool,
    version: u16,
    peer: MachinePublic,
) -> Transport {
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(&hs.get_handshake_hash()[..32]);
    let (mut k1, mut k2) = hs.dangerously_get_raw_split();
    let info = SessionInfo {
        version,
        peer,
        handshake_hash,
    };
    // k1 protects client-to-server, k2 server-to-client.
    let t = if initiator {
        Transport::new(&k1, &k2, info)
    } else {
        Transport::new(&k2, &k1, info)
    };
    k1.zeroize();
    k2.zeroize();
    t
}

/// The client (initiator) side of the handshake.
pub struct ClientHandshake {
    state: Option<HandshakeState>,
    version: u16,
    control: MachinePublic,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("version", &self.version)
            .field("control", &self.control)
            .field("pending", &self.state.is_some())
            .finish()
    }
}

impl ClientHandshake {
    /// Starts a handshake with the control server whose public key is `control`, announcing
    /// protocol (capability) `version`. Returns the state and the 101-byte initiation to send
    /// (in the `X-Tailscale-Handshake` header of the HTTP upgrade, or raw on the stream).
    ///
    /// # Errors
    /// [`Error::WeakKey`] if `control` is a low-order point, [`Error::Noise`] if the random
    /// source fails.
    pub fn new(
        machine: &MachinePrivate,
        control: &MachinePublic,
        version: u16,
    ) -> Result<(Self, [u8; INITIATION_LEN]), Error> {
        let prologue = prologue(version);
        let mut hs = builder(&prologue)?
            .local_private_key(machine.as_bytes())?
            .remote_public_key(control.as_bytes())?
            .build_initiator()?;
        let mut msg = [0u8; INITIATION_LEN];
        msg[0..2].copy_from_slice(&version.to_be_bytes());
        msg[2] = MSG_INITIATION;
        msg[3..5].copy_from_slice(&INITIATION_PAYLOAD_LEN.to_be_bytes());
        let n = hs.write_message(&[], &mut msg[INITIATION_HEADER_LEN..])?;
        if n != usize::from(INITIATION_PAYLOAD_LEN) {
            return Err(Error::Noise(format!(
                "initiation payload is {n} bytes, want 96"
            )));
        }
        Ok((
            Self {
                state: Some(hs),
                version,
                control: *control,
            },
            msg,
        ))
    }

    /// Feeds everything received from the server so far (call again with the grown buffer
    /// while it returns `Ok(None)`). Once the 51-byte response is complete, finishes the
    /// handshake and returns the [`Transport`]; bytes after the response in `buf` are already
    /// pushed into the transport's record decoder.
    ///
    /// # Errors
    /// [`Error::ServerRefused`] with the server's text for an error message (type 0x03);
    /// [`Error::UnexpectedType`], [`Error::ResponseLength`], [`Error::HandshakeAuth`] or
    /// [`Error::WeakKey`] for a bad response; [`Error::HandshakeFinished`] when called after
    /// success or failure.
    pub fn read_response(&mut self, buf: &[u8]) -> Result<Option<Transport>, Error> {
        if self.state.is_none() {
            return Err(Error::HandshakeFinished);
        }
        let result = self.try_read_response(buf);
        if !matches!(result, Ok(None)) {
            self.state = None;
        }
        result
    }

    fn try_read_response(&mut self, buf: &[u8]) -> Result<Option<Transport>, Error> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        match kind {
            MSG_RESPONSE | MSG_ERROR => {}
            got => {
                return Err(Error::UnexpectedType {
                    got,
                    want: MSG_RESPONSE,
                });
            }
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = be16(buf, 1);
        if kind == MSG_ERROR {
            let end = HEADER_LEN + usize::from(len);
            if buf.len() < end {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(&buf[HEADER_LEN..end]).into_owned();
            return Err(Error::ServerRefused(text));
        }
        if len != RESPONSE_PAYLOAD_LEN {
            return Err(Error::ResponseLength(len));
        }
        if buf.len() < RESPONSE_LEN {
            return Ok(None);
        }
        let Some(mut hs) = self.state.take() else {
            return Err(Error::HandshakeFinished);
        };
        hs.read_message(&buf[HEADER_LEN..RESPONSE_LEN], &mut [])?;
        if !hs.is_handshake_finished() {
            return Err(Error::Noise("handshake not finished after response".into()));
        }
        let mut transport = into_transport(hs, true, self.version, self.control);
        transport.push(&buf[RESPONSE_LEN..]);
        Ok(Some(transport))
    }
}

/// The server (responder) side: holds the control key and the accepted versions, and
/// answers any number of initiations.
pub struct ServerHandshake {
    key: MachinePrivate,
    versions: RangeInclusive<u16>,
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("key", &self.key)
            .field("versions", &self.versions)
            .finish()
    }
}

/// A completed server-side handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The session; send `response` before any record it encrypts.
    pub transport: Transport,
    /// The 51-byte handshake response to send to the client.
    pub response: [u8; RESPONSE_LEN],
    /// The client's machine public key, authenticated by the handshake.
    pub machine_key: MachinePublic,
    /// The protocol (capability) version the client announced, authenticated by the prologue.
    pub version: u16,
}

impl ServerHandshake {
    /// A responder with the control server's private key that accepts client protocol
    /// versions in `versions`.
    #[must_use]
    pub fn new(control: MachinePrivate, versions: RangeInclusive<u16>) -> Self {
        Self {
            key: control,
            versions,
        }
    }

    /// The control server's public key (what clients fetch from `/key`).
    #[must_use]
    pub fn public(&self) -> MachinePublic {
        self.key.public()
    }

    /// Answers one 101-byte initiation.
    ///
    /// # Errors
    /// [`Error::InitiationSize`], [`Error::UnexpectedType`], [`Error::InitiationLength`],
    /// [`Error::UnsupportedVersion`] (for these, [`Error::reply_for_client`] gives the error
    /// message to send back), [`Error::HandshakeAuth`] or [`Error::WeakKey`].
    pub fn accept(&self, initiation: &[u8]) -> Result<Accepted, Error> {
        if initiation.len() != INITIATION_LEN {
            return Err(Error::InitiationSize(initiation.len()));
        }
        let version = be16(initiation, 0);
        if initiation[2] != MSG_INITIATION {
            return Err(Error::UnexpectedType {
                got: initiation[2],
                want: MSG_INITIATION,
            });
        }
        let len = be16(initiation, 3);
        if len != INITIATION_PAYLOAD_LEN {
            return Err(Error::InitiationLength(len));
        }
        if !self.versions.contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let prologue = prologue(version);
        let mut hs = builder(&prologue)?
            .local_private_key(self.key.as_bytes())?
            .build_responder()?;
        hs.read_message(&initiation[INITIATION_HEADER_LEN..], &mut [])?;
        let mut machine = [0u8; 32];
        match hs.get_remote_static() {
            Some(rs) if rs.len() == 32 => machine.copy_from_slice(rs),
            _ => return Err(Error::Noise("no client static key after initiation".into())),
        }
        let mut response = [0u8; RESPONSE_LEN];
        response[0] = MSG_RESPONSE;
        response[1..3].copy_from_slice(&RESPONSE_PAYLOAD_LEN.to_be_bytes());
        let n = hs.write_message(&[], &mut response[HEADER_LEN..])?;
        if n != usize::from(RESPONSE_PAYLOAD_LEN) || !hs.is_handshake_finished() {
            return Err(Error::Noise(format!(
                "response payload is {n} bytes, want 48"
            )));
        }
        let machine_key = MachinePublic::from_bytes(machine);
        Ok(Accepted {
            transport: into_transport(hs, false, version, machine_key),
            response,
            machine_key,
            version,
        })
    }
}
