//! The `key = value` layer: config lines and kernel command-line words become a key → value
//! map with where each value came from, before any value is interpreted (`config.rs` does
//! that), so the command line can override the file and every error names its place.

use std::collections::BTreeMap;
use std::fmt;

use super::error::ConfigError;

/// Every key the appliance config knows, in the order the shell output lists them.
pub const KEYS: [&str; 11] = [
    "login_server",
    "auth_key",
    "hostname",
    "advertise_routes",
    "advertise_exit_node",
    "accept_routes",
    "lan_interface",
    "lan_address",
    "uplink_interface",
    "uplink_address",
    "uplink_gateway",
];

/// The kernel command line's prefix for our keys (`meshgate.hostname=gw`).
const CMDLINE_PREFIX: &str = "meshgate.";

/// One value and the place it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    /// `FILE:LINE: key` or `cmdline: meshgate.key`: the prefix of any error about the value.
    pub at: String,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be the auth key; where it came from is enough to debug with.
        f.debug_struct("Entry").field("at", &self.at).finish()
    }
}

/// Keys and their values as written, not yet interpreted.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// The file's name as the user gave it (errors about missing keys name it).
    pub source: String,
    entries: BTreeMap<&'static str, Entry>,
}

impl RawConfig {
    /// Reads the config file's text. Lexical problems (no `=`, unknown or duplicate key, bad
    /// quoting, control characters) are all collected; the lines that are fine still count.
    pub fn parse(text: &str, source: &str) -> (RawConfig, Vec<ConfigError>) {
        let mut raw = RawConfig {
            source: source.to_owned(),
            entries: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        // Which line set each key, for the duplicate message.
        let mut lines: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let place = format!("{source}:{number}");
            let (key, value) = match split_line(line) {
                Ok(Some(pair)) => pair,
                Ok(None) => continue,
                Err(what) => {
                    errors.push(ConfigError::new(place, what));
                    continue;
                }
            };
            let key = match known_key(key) {
                Ok(key) => key,
                Err(what) => {
                    errors.push(ConfigError::new(place, what));
                    continue;
                }
            };
            let at = format!("{place}: {key}");
            if let Some(first) = lines.get(key) {
                errors.push(ConfigError::new(
                    at,
                    format!("set twice (first on line {first})"),
                ));
                continue;
            }
            lines.insert(key, number);
            if let Err(what) = check_text(&value) {
                errors.push(ConfigError::new(at, what));
                continue;
            }
            raw.entries.insert(key, Entry { value, at });
        }
        (raw, errors)
    }

    /// Applies the kernel command line (`/proc/cmdline`'s text): each `meshgate.<key>=<value>`
    /// word replaces the file's value for that key; other words are not ours and are skipped.
    /// Words are split as the kernel does: on whitespace, with double quotes grouping (and
    /// removed), so `meshgate.hostname="a b"` is one word.
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut seen: Vec<&'static str> = Vec::new();
        for word in kernel_words(cmdline) {
            let Some(rest) = word.strip_prefix(CMDLINE_PREFIX) else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (rest, None),
            };
            let at = format!("cmdline: {CMDLINE_PREFIX}{}", shown_key(key));
            let key = match known_key(key) {
                Ok(key) => key,
                Err(what) => {
                    errors.push(ConfigError::new(at, what));
                    continue;
                }
            };
            let Some(value) = value else {
                errors.push(ConfigError::new(
                    at,
                    format!("no value (write {CMDLINE_PREFIX}{key}=VALUE)"),
                ));
                continue;
            };
            if seen.contains(&key) {
                errors.push(ConfigError::new(at, "given twice"));
                continue;
            }
            seen.push(key);
            if let Err(what) = check_text(value) {
                errors.push(ConfigError::new(at, what));
                // A bad override must not leave the file's value quietly in force.
                self.entries.remove(key);
                continue;
            }
            self.entries.insert(
                key,
                Entry {
                    value: value.to_owned(),
                    at,
                },
            );
        }
        errors
    }

    /// The value of `key`, if set anywhere.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
}

/// Splits one line into key and value; `None` for blank and comment lines. The error never
/// quotes the line (it may be a stray auth key).
fn split_line(line: &str) -> Result<Option<(&str, String)>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some((key, rest)) = trimmed.split_once('=') else {
        return Err("expected `key = value`".to_owned());
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("no key before `=`".to_owned());
    }
    Ok(Some((key, value_of(rest)?)))
}

/// The value after `=`: either "double-quoted" (with `\"` and `\\` escapes, and only a
/// comment after the closing quote) or bare up to a `#` that follows whitespace, trimmed.
fn value_of(rest: &str) -> Result<String, String> {
    let start = rest.trim_start();
    if let Some(quoted) = start.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    let after = quoted.get(i + 1..).unwrap_or("").trim_start();
                    if after.is_empty() || after.starts_with('#') {
                        return Ok(value);
                    }
                    return Err("text after the closing quote".to_owned());
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    _ => {
                        return Err("a backslash in quotes must be followed by \" or \\".to_owned());
                    }
                },
                c => value.push(c),
            }
        }
        return Err("no closing quote".to_owned());
    }
    let mut end = rest.len();
    let mut previous_blank = false;
    for (i, c) in rest.char_indices() {
        if c == '#' && previous_blank {
            end = i;
            break;
        }
        previous_blank = c.is_whitespace();
    }
    Ok(rest.get(..end).unwrap_or(rest).trim().to_owned())
}

/// The known key `key` names, or why it is not one.
fn known_key(key: &str) -> Result<&'static str, String> {
    if let Some(known) = KEYS.iter().find(|k| **k == key) {
        return Ok(known);
    }
    let lower = key.to_ascii_lowercase().replace('-', "_");
    if let Some(known) = KEYS.iter().find(|k| **k == lower) {
        return Err(format!(
            "unknown key {:?} (keys are lower_snake_case: {known})",
            shown_key(key)
        ));
    }
    Err(format!("unknown key {:?}", shown_key(key)))
}

/// A key as it may appear in a message: short, and only if it looks like a key (a line like
/// `tskey-abc=...` must not put the secret on the console).
fn shown_key(key: &str) -> String {
    let plausible = key.len() <= 32
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plausible {
        key.to_owned()
    } else {
        "<not shown>".to_owned()
    }
}

/// Values are one line of printable text: the shell output and the saved config rely on it.
fn check_text(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err("contains a control character (tab, newline, ...)".to_owned());
    }
    Ok(())
}

/// The kernel command line's words: split on whitespace, double quotes group and are dropped.
fn kernel_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, key: &str) -> Option<String> {
        let (raw, errors) = RawConfig::parse(text, "t.conf");
        assert!(errors.is_empty(), "{errors:?}");
        raw.get(key).map(|e| e.value.clone())
    }

    #[test]
    fn comments_blank_lines_and_quotes() {
        let text = "# a comment\n\n   # indented comment\nhostname = gw # trailing\n";
        assert_eq!(value(text, "hostname").as_deref(), Some("gw"));
        // `#` without whitespace before it is part of the value.
        assert_eq!(
            value("auth_key=ab#cd", "auth_key").as_deref(),
            Some("ab#cd")
        );
        assert_eq!(
            value("hostname = \"a # b\"  # c", "hostname").as_deref(),
            Some("a # b")
        );
        assert_eq!(
            value(r#"hostname = "q\"b\\s""#, "hostname").as_deref(),
            Some(r#"q"b\s"#)
        );
        assert_eq!(value("hostname = # none", "hostname").as_deref(), Some(""));
        assert_eq!(value("hostname=gw", "hostname").as_deref(), Some("gw"));
    }

    #[test]
    fn lexical_errors_name_the_line_and_never_the_value() {
        let text = "hostname = gw\n\
                    tskey-secret123\n\
                    auth_kye = tskey-secret456\n\
                    hostname = other\n\
                    Hostname = x\n\
                    lan_interface = \"eth1\n\
                    = x\n\
                    lan_address = \"a\" b\n\
                    uplink_address = \"a\\tb\"\n";
        let (raw, errors) = RawConfig::parse(text, "m.conf");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "m.conf:2: expected `key = value`",
                "m.conf:3: unknown key \"auth_kye\"",
                "m.conf:4: hostname: set twice (first on line 1)",
                "m.conf:5: unknown key \"Hostname\" (keys are lower_snake_case: hostname)",
                "m.conf:6: no closing quote",
                "m.conf:7: no key before `=`",
                "m.conf:8: text after the closing quote",
                "m.conf:9: a backslash in quotes must be followed by \" or \\",
            ]
        );
        assert!(!shown.concat().contains("secret"));
        assert_eq!(raw.get("hostname").unwrap().value, "gw");
        assert!(
            !format!("{raw:?}").contains("gw"),
            "values stay out of Debug"
        );
    }

    #[test]
    fn control_characters_are_refused() {
        let (_, errors) = RawConfig::parse("hostname = a\u{7}b\n", "m.conf");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].what.contains("control character"));
    }

    #[test]
    fn cmdline_overrides_and_names_its_words() {
        let (mut raw, errors) = RawConfig::parse("hostname = gw\naccept_routes = no\n", "m");
        assert!(errors.is_empty());
        let errors = raw.apply_cmdline(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 meshgate.hostname=\"edge1\" quiet \
             meshgate.accept_routes=yes meshgate.bogus=1 meshgate.lan_interface \
             meshgate.accept_routes=no meshgate.tskey-abcdefghijklmnopqrstuvwxyz0123456789=1\n",
        );
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "cmdline: meshgate.bogus: unknown key \"bogus\"",
                "cmdline: meshgate.lan_interface: no value (write meshgate.lan_interface=VALUE)",
                "cmdline: meshgate.accept_routes: given twice",
                "cmdline: meshgate.<not shown>: unknown key \"<not shown>\"",
            ]
        );
        assert_eq!(raw.get("hostname").unwrap().value, "edge1");
        assert_eq!(
            raw.get("hostname").unwrap().at,
            "cmdline: meshgate.hostname"
        );
        assert_eq!(raw.get("accept_routes").unwrap().value, "yes");
    }

    #[test]
    fn kernel_word_splitting() {
        assert_eq!(
            kernel_words("a  b=\"c d\" \"e f\"g\n"),
            ["a", "b=c d", "e fg"]
        );
        assert!(kernel_words("   ").is_empty());
    }
}
