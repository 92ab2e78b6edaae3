//! Tailscale's control-protocol wire types, key text forms and map-response framing. Types only:
//! no I/O, no policy. See README.md.

pub mod capver;
pub mod derp;
pub mod dns;
mod error;
pub mod filter;
pub mod framing;
pub mod hostinfo;
pub mod key;
pub mod map;
pub mod node;
pub mod register;
mod serde_util;
pub mod time;

pub use capver::{CAPABILITY_VERSION, CapabilityVersion, MIN_SUPPORTED_CLIENT_VERSION};
pub use derp::{DERP_MAGIC_IP, DerpHomeParams, DerpMap, DerpNode, DerpRegion, RegionId};
pub use dns::{DnsConfig, DnsRecord, Resolver};
pub use error::Error;
pub use filter::{CapGrant, FilterRule, NetPortRange, PortRange};
pub use framing::{MapFrameDecoder, decode_body, encode, encode_frame};
pub use hostinfo::{Hostinfo, NetInfo, Service};
pub use key::{
    ChallengePublic, DiscoPrivate, DiscoPublic, MachinePrivate, MachinePublic, NlPublic,
    NodePrivate, NodePublic,
};
pub use map::{COMPRESS_ZSTD, EndpointType, MapRequest, MapResponse, PeerChange, PingRequest};
pub use node::{CapMap, Node, NodeId, UserId, UserProfile};
pub use register::{
    EarlyNoise, Login, OverTlsPublicKeyResponse, RegisterAuth, RegisterRequest, RegisterResponse,
    User,
};
pub use time::Time;
