//! MagicDNS configuration (reference §8; ts:tailcfg/tailcfg.go `DNSConfig`, ts:types/dnstype).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::serde_util::{is_false, nullable, nullable_values};

/// DNS configuration; in a `MapResponse`, absent means unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Global resolvers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resolvers: Vec<Resolver>,
    /// DNS suffix → resolvers. An empty list means the suffix is answered by the local
    /// (100.100.100.100) resolver itself, e.g. from `ExtraRecords`; Go sends it as `null`.
    #[serde(
        default,
        deserialize_with = "nullable_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fallback_resolvers: Vec<Resolver>,
    /// Search domains.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub domains: Vec<String>,
    /// MagicDNS on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxied: bool,
    /// Deprecated plain nameservers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<IpAddr>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cert_domains: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extra_records: Vec<DnsRecord>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exit_node_filtered_set: Vec<String>,
}

/// A DNS resolver (ts:types/dnstype `Resolver`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    /// An IP (port 53), `ip:port`, a DoH `https://…` URL or `http://peer:port/…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Addresses for a DoH host name.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bootstrap_resolution: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_with_exit_node: bool,
}

/// An extra DNS record the local resolver serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    /// Fully qualified name (trailing dot optional).
    #[serde(default)]
    pub name: String,
    /// Empty means A or AAAA, from `Value`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default)]
    pub value: String,
}
