//! One problem in an appliance config, with where it is.

use std::fmt;

/// A problem found in the config file or on the kernel command line.
///
/// `at` names the place (`meshgate.conf:7: advertise_routes`, `cmdline: meshgate.hostname`,
/// or the file alone for a missing key); `what` says what is wrong. Neither ever holds the
/// auth key: messages about `auth_key` do not quote its value, and unknown keys' values are
/// never shown (a misspelt `auth_kye` still holds a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: String,
    pub what: String,
}

impl ConfigError {
    pub fn new(at: impl Into<String>, what: impl Into<String>) -> ConfigError {
        ConfigError {
            at: at.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

impl std::error::Error for ConfigError {}
