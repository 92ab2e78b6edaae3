//! Why a policy was refused. Every error names a 1-based line and column (`0` when the position
//! could not be found, which should not happen for text that parsed).

/// A policy that does not parse or validate. A refused policy never applies in part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON5 (HuJSON), or the wrong shape: unknown or duplicate key, wrong value type.
    #[error("line {line}, column {column}: {reason}")]
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    /// A key Tailscale knows that meshgate does not implement yet.
    #[error("line {line}, column {column}: `{key}` is not supported yet ({hint})")]
    Unsupported {
        line: usize,
        column: usize,
        key: String,
        hint: &'static str,
    },
    /// An alias of no known kind (`foo:bar`, `autogroup:admin`), or one not allowed where it is.
    #[error("line {line}, column {column}: alias `{alias}`: {reason}")]
    BadAlias {
        line: usize,
        column: usize,
        alias: String,
        reason: String,
    },
    #[error("line {line}, column {column}: group `{group}` is not defined in `groups`")]
    UndefinedGroup {
        line: usize,
        column: usize,
        group: String,
    },
    #[error("line {line}, column {column}: tag `{tag}` has no `tagOwners` entry")]
    UndefinedTag {
        line: usize,
        column: usize,
        tag: String,
    },
    #[error(
        "line {line}, column {column}: `{host}` is not defined in `hosts` (nor an IP, CIDR, user@domain, group:, tag: or autogroup:)"
    )]
    UndefinedHost {
        line: usize,
        column: usize,
        host: String,
    },
    #[error("line {line}, column {column}: bad ports `{ports}`: {reason}")]
    BadPorts {
        line: usize,
        column: usize,
        ports: String,
        reason: String,
    },
    #[error("line {line}, column {column}: bad IP prefix `{prefix}`: {reason}")]
    BadPrefix {
        line: usize,
        column: usize,
        prefix: String,
        reason: String,
    },
    #[error(
        "line {line}, column {column}: unknown protocol `{proto}` (a name such as tcp, udp, icmp, or a number 0-255)"
    )]
    BadProto {
        line: usize,
        column: usize,
        proto: String,
    },
    /// Anything else that is well-formed JSON but not a valid policy (nested groups, an action
    /// other than `accept`, ports given with a port-less protocol, ...).
    #[error("line {line}, column {column}: {reason}")]
    Invalid {
        line: usize,
        column: usize,
        reason: String,
    },
}

impl PolicyError {
    /// The 1-based line the error is on (0 if unknown).
    pub fn line(&self) -> usize {
        match self {
            PolicyError::Syntax { line, .. }
            | PolicyError::Unsupported { line, .. }
            | PolicyError::BadAlias { line, .. }
            | PolicyError::UndefinedGroup { line, .. }
            | PolicyError::UndefinedTag { line, .. }
            | PolicyError::UndefinedHost { line, .. }
            | PolicyError::BadPorts { line, .. }
            | PolicyError::BadPrefix { line, .. }
            | PolicyError::BadProto { line, .. }
            | PolicyError::Invalid { line, .. } => *line,
        }
    }
}

impl From<json5::Error> for PolicyError {
    fn from(err: json5::Error) -> Self {
        let (line, column) = err
            .position()
            .map_or((0, 0), |p| (p.line + 1, p.column + 1));
        // json5's Display appends " at line L column C"; keep only the reason.
        let text = err.to_string();
        let reason = match text.rfind(" at line ") {
            Some(cut) if err.position().is_some() => text[..cut].to_string(),
            _ => text,
        };
        PolicyError::Syntax {
            line,
            column,
            reason,
        }
    }
}
