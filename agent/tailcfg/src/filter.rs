//! The packet filter as control sends it (tailcfg `FilterRule`): allow rules only, each naming
//! sources, destinations with port ranges, and IP protocols.

use serde::{Deserialize, Serialize};

use crate::serde_util::nullable;

/// IP protocol numbers a rule with an empty `IPProto` covers.
pub const DEFAULT_PROTOCOLS: [u8; 4] = [6, 17, 1, 58];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterRule {
    /// Single IPs, CIDRs, `a-b` ranges, `*`, or `cap:<node capability>`.
    #[serde(rename = "SrcIPs", default, deserialize_with = "nullable")]
    pub src_ips: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst_ports: Vec<NetPortRange>,
    /// Empty means [`DEFAULT_PROTOCOLS`].
    #[serde(
        rename = "IPProto",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_proto: Vec<i32>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_grant: Vec<CapGrant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPortRange {
    /// A single IP, a CIDR, an `a-b` range or `*`.
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };
}

/// Application capabilities granted to sources on destinations (not packet permission).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapGrant {
    #[serde(default, deserialize_with = "nullable")]
    pub dsts: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_map: Option<serde_json::Map<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_control_sends() {
        let json = r#"{"SrcIPs":["100.112.189.40","fd7a:115c:a1e0::1"],
                       "DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}"#;
        let rule: FilterRule = serde_json::from_str(json).unwrap();
        assert_eq!(rule.src_ips.len(), 2);
        assert_eq!(rule.dst_ports[0].ports, PortRange::ANY);
        assert!(rule.ip_proto.is_empty());
        let back = serde_json::to_string(&rule).unwrap();
        assert!(back.contains(r#""SrcIPs":["100.112.189.40""#), "{back}");
        assert!(!back.contains("IPProto"), "{back}");
    }
}
