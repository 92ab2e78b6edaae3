//! `/machine/register` bodies, and the small bootstrap messages (reference §5.1, §5.4, §5.5).

use serde::{Deserialize, Serialize};

use crate::capver::CapabilityVersion;
use crate::hostinfo::Hostinfo;
use crate::key::{ChallengePublic, MachinePublic, NlPublic, NodePublic};
use crate::node::UserId;
use crate::serde_util::{is_false, is_zero};
use crate::time::Time;

/// `POST /machine/register`.
///
/// Logout: `NodeKey` = current key and `Expiry` in the past (Tailscale uses
/// [`RegisterRequest::LOGOUT_EXPIRY`]). Key rotation: a new `NodeKey` with `OldNodeKey` set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    pub version: CapabilityVersion,
    pub node_key: NodePublic,
    /// The key being rotated away (zero = none).
    #[serde(default, skip_serializing_if = "NodePublic::is_zero")]
    pub old_node_key: NodePublic,
    /// Tailnet-lock key (zero = none).
    #[serde(rename = "NLKey", default, skip_serializing_if = "NlPublic::is_zero")]
    pub nl_key: NlPublic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegisterAuth>,
    /// Requested key expiry; zero = server default; in the past = log out.
    #[serde(default, skip_serializing_if = "Time::is_zero")]
    pub expiry: Time,
    /// The `AuthURL` of a previous response, to long-poll for its completion.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub followup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
    /// Tailnet-lock signature (base64), carried opaquely.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_key_signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tailnet: String,
}

impl RegisterRequest {
    /// The `Expiry` Tailscale sends to log out: 1970-01-01T00:02:03Z.
    pub const LOGOUT_EXPIRY: Time = Time::from_unix(123, 0);
}

/// `RegisterRequest.Auth`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterAuth {
    /// A pre-authorized key (`tskey-…` or a headscale key). Secret: redacted in `Debug`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_key: String,
}

impl std::fmt::Debug for RegisterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.auth_key.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("RegisterAuth")
            .field("auth_key", &key)
            .finish()
    }
}

/// Reply to `/machine/register`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub login: Login,
    /// The node key has expired: generate a new one and register again with `OldNodeKey`.
    #[serde(default)]
    pub node_key_expired: bool,
    /// False: registered but awaiting admin approval.
    #[serde(default)]
    pub machine_authorized: bool,
    /// Non-empty: the user must visit this URL; then register with `Followup` = it.
    #[serde(rename = "AuthURL", default)]
    pub auth_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_key_signature: String,
    /// Non-empty: registration failed.
    #[serde(default)]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    #[serde(rename = "ID", default)]
    pub id: UserId,
    #[serde(default)]
    pub display_name: String,
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
    #[serde(default)]
    pub created: Time,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero")]
    pub id: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default)]
    pub login_name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
}

/// The optional early payload control sends inside Noise before HTTP/2 (reference §5.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyNoise {
    #[serde(rename = "nodeKeyChallenge", default)]
    pub node_key_challenge: ChallengePublic,
}

/// `GET /key?v=<capver>` reply (reference §5.1). `legacyPublicKey` is zero on current servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverTlsPublicKeyResponse {
    #[serde(rename = "legacyPublicKey", default)]
    pub legacy_public_key: MachinePublic,
    #[serde(rename = "publicKey")]
    pub public_key: MachinePublic,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NK: &str = "nodekey:1111111111111111111111111111111111111111111111111111111111111111";
    const OLD: &str = "nodekey:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn register_with_auth_key_is_minimal() {
        let req = RegisterRequest {
            version: 130,
            node_key: NK.parse().unwrap(),
            auth: Some(RegisterAuth {
                auth_key: "tskey-auth-secret".into(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: "gw".into(),
                os: "linux".into(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"Version":130,"NodeKey":"{NK}","Auth":{{"AuthKey":"tskey-auth-secret"}},"Hostinfo":{{"OS":"linux","Hostname":"gw"}}}}"#
            )
        );
        assert_eq!(serde_json::from_str::<RegisterRequest>(&json).unwrap(), req);
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("tskey-auth-secret") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }

    #[test]
    fn logout_and_rotation() {
        let logout = RegisterRequest {
            version: 130,
            node_key: NK.parse().unwrap(),
            old_node_key: OLD.parse().unwrap(),
            expiry: RegisterRequest::LOGOUT_EXPIRY,
            followup: "https://control/a/xyz".into(),
            ..RegisterRequest::default()
        };
        let json = serde_json::to_string(&logout).unwrap();
        assert!(
            json.contains(r#""Expiry":"1970-01-01T00:02:03Z""#),
            "{json}"
        );
        assert!(json.contains(&format!(r#""OldNodeKey":"{OLD}""#)), "{json}");
        assert!(
            json.contains(r#""Followup":"https://control/a/xyz""#),
            "{json}"
        );
    }

    #[test]
    fn go_register_request_parses() {
        // Go sends zero keys and zero times rather than omitting them.
        let go = format!(
            r#"{{"Version":145,"NodeKey":"{NK}",
                "OldNodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000000",
                "NLKey":"nlpub:0000000000000000000000000000000000000000000000000000000000000000",
                "Auth":null,"Expiry":"0001-01-01T00:00:00Z","Followup":"","Hostinfo":{{"OS":"linux"}},
                "Ephemeral":true,"Timestamp":"2026-08-22T10:00:00Z","DeviceCert":null}}"#
        );
        let r: RegisterRequest = serde_json::from_str(&go).unwrap();
        assert!(r.old_node_key.is_zero() && r.nl_key.is_zero() && r.expiry.is_zero());
        assert!(r.auth.is_none() && r.ephemeral);
        assert_eq!(r.timestamp.unwrap().unix_secs(), 1_787_392_800);
    }

    #[test]
    fn register_responses() {
        let pending: RegisterResponse = serde_json::from_str(
            r#"{"User":{"ID":0,"DisplayName":"","Created":"0001-01-01T00:00:00Z"},
                "Login":{"ID":0,"Provider":"","LoginName":"","DisplayName":"","ProfilePicURL":""},
                "NodeKeyExpired":false,"MachineAuthorized":false,
                "AuthURL":"https://hs.example/register/abc","Error":""}"#,
        )
        .unwrap();
        assert_eq!(pending.auth_url, "https://hs.example/register/abc");
        assert!(!pending.machine_authorized && pending.error.is_empty());

        let ok: RegisterResponse = serde_json::from_str(
            r#"{"User":{"ID":7,"DisplayName":"alice"},"Login":{"LoginName":"alice@example.com"},
                "MachineAuthorized":true,"NewField":1}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.user.id, ok.login.login_name.as_str()),
            (7, "alice@example.com")
        );
        assert!(ok.machine_authorized && ok.auth_url.is_empty());

        let expired: RegisterResponse = serde_json::from_str(r#"{"NodeKeyExpired":true}"#).unwrap();
        assert!(expired.node_key_expired);
        let out = serde_json::to_string(&expired).unwrap();
        assert!(
            out.contains(r#""NodeKeyExpired":true"#) && out.contains(r#""AuthURL":"""#),
            "{out}"
        );
    }

    #[test]
    fn bootstrap_messages() {
        let key = "mkey:abababababababababababababababababababababababababababababababab";
        let resp: OverTlsPublicKeyResponse = serde_json::from_str(&format!(
            r#"{{"legacyPublicKey":"mkey:0000000000000000000000000000000000000000000000000000000000000000","publicKey":"{key}"}}"#
        ))
        .unwrap();
        assert!(resp.legacy_public_key.is_zero());
        assert_eq!(resp.public_key.to_string(), key);
        assert!(serde_json::from_str::<OverTlsPublicKeyResponse>("{}").is_err());

        let chal = "chalpub:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
        let early: EarlyNoise =
            serde_json::from_str(&format!(r#"{{"nodeKeyChallenge":"{chal}"}}"#)).unwrap();
        assert_eq!(early.node_key_challenge.to_string(), chal);
        assert_eq!(
            serde_json::to_string(&early).unwrap(),
            format!(r#"{{"nodeKeyChallenge":"{chal}"}}"#)
        );
    }
}
