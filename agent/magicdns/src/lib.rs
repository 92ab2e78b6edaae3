//! MagicDNS: the resolver on 100.100.100.100 (and `fd7a:115c:a1e0::53`) that answers the
//! tailnet's names from the netmap and forwards every other query upstream. See README.md.

mod answer;
mod error;
mod forward;
mod names;
mod records;
mod server;
mod upstream;

pub use answer::{Decision, TTL, Transport, answer, servfail};
pub use error::Error;
pub use records::{Domains, Records};
pub use server::{Resolver, ResolverConfig};
pub use upstream::{
    QUAD100_V4, QUAD100_V6, RESOLV_CONF, choose_upstreams, parse_resolv_conf, parse_upstream,
};
