//! The plaintext inside the box: `type u8 ‖ version u8 ‖ payload` (reference §1.2).

use crate::{CallMeMaybe, Error, Ping, Pong};

pub const TYPE_PING: u8 = 0x01;
pub const TYPE_PONG: u8 = 0x02;
pub const TYPE_CALL_ME_MAYBE: u8 = 0x03;
/// Peer-relay messages (0x04 BindUDPRelayEndpoint … 0x09 AllocateUDPRelayEndpointResponse):
/// recognised so they are not "unknown", but not decoded (we neither are nor use peer relays).
const UNSUPPORTED: std::ops::RangeInclusive<u8> = 0x04..=0x09;

/// The only version senders write. Receivers do not reject others for Ping and Pong (Go does
/// not either: later versions may only append fields); a CallMeMaybe of another version
/// decodes as empty, as Go's does.
pub const VERSION: u8 = 0;

/// One disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    Pong(Pong),
    CallMeMaybe(CallMeMaybe),
    /// A known type we do not decode (0x04–0x09, the peer-relay messages); the caller ignores
    /// it. Encoding one writes only the two header bytes.
    Unsupported(u8),
}

impl Message {
    /// The message type byte.
    pub fn message_type(&self) -> u8 {
        match self {
            Message::Ping(_) => TYPE_PING,
            Message::Pong(_) => TYPE_PONG,
            Message::CallMeMaybe(_) => TYPE_CALL_ME_MAYBE,
            Message::Unsupported(t) => *t,
        }
    }

    /// Appends the plaintext form (header and payload) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.message_type());
        out.push(VERSION);
        match self {
            Message::Ping(m) => m.encode_payload(out),
            Message::Pong(m) => m.encode_payload(out),
            Message::CallMeMaybe(m) => m.encode_payload(out),
            Message::Unsupported(_) => {}
        }
    }

    /// The plaintext form (header and payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Length of [`Message::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            Message::Ping(m) => m.payload_len(),
            Message::Pong(_) => crate::pong::PONG_LEN,
            Message::CallMeMaybe(m) => m.payload_len(),
            Message::Unsupported(_) => 0,
        }
    }

    /// Parses a plaintext. Lax as Tailscale's `disco.Parse`: trailing bytes are ignored.
    pub fn parse(b: &[u8]) -> Result<Message, Error> {
        let [t, version, payload @ ..] = b else {
            return Err(Error::Short { what: "header" });
        };
        match *t {
            TYPE_PING => Ok(Message::Ping(Ping::parse_payload(payload)?)),
            TYPE_PONG => Ok(Message::Pong(Pong::parse_payload(payload)?)),
            TYPE_CALL_ME_MAYBE => Ok(Message::CallMeMaybe(CallMeMaybe::parse_payload(
                *version, payload,
            ))),
            t if UNSUPPORTED.contains(&t) => Ok(Message::Unsupported(t)),
            t => Err(Error::UnknownType(t)),
        }
    }
}

impl From<Ping> for Message {
    fn from(m: Ping) -> Self {
        Message::Ping(m)
    }
}

impl From<Pong> for Message {
    fn from(m: Pong) -> Self {
        Message::Pong(m)
    }
}

impl From<CallMeMaybe> for Message {
    fn from(m: CallMeMaybe) -> Self {
        Message::CallMeMaybe(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_only_and_unknown_types() {
        assert_eq!(Message::parse(&[]), Err(Error::Short { what: "header" }));
        assert_eq!(Message::parse(&[1]), Err(Error::Short { what: "header" }));
        assert_eq!(Message::parse(&[0, 0]), Err(Error::UnknownType(0)));
        assert_eq!(
            Message::parse(&[0x0a, 0, 1, 2]),
            Err(Error::UnknownType(0x0a))
        );
        assert_eq!(Message::parse(&[0xff, 0]), Err(Error::UnknownType(0xff)));
        for t in 0x04..=0x09 {
            assert_eq!(Message::parse(&[t, 0]), Ok(Message::Unsupported(t)));
            assert_eq!(
                Message::parse(&[t, 7, 1, 2, 3]),
                Ok(Message::Unsupported(t))
            );
            assert_eq!(Message::Unsupported(t).encode(), vec![t, 0]);
        }
    }

    #[test]
    fn encoded_len_matches() {
        let msgs = [
            Message::Ping(Ping {
                tx_id: [1; 12],
                node_key: None,
                padding: 3,
            }),
            Message::Pong(Pong {
                tx_id: [2; 12],
                src: "1.2.3.4:5".parse().unwrap(),
            }),
            Message::CallMeMaybe(CallMeMaybe {
                endpoints: vec!["[::1]:2".parse().unwrap(), "9.9.9.9:9".parse().unwrap()],
            }),
            Message::Unsupported(5),
        ];
        for m in msgs {
            assert_eq!(m.encode().len(), m.encoded_len(), "{m:?}");
            assert_eq!(m.encode()[1], VERSION);
        }
    }
}
