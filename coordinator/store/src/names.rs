//! Hostnames, DNS labels and tags.

use crate::{Result, StoreError};

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// Turns a client-supplied hostname into a DNS label: ASCII lowercase letters, digits and
/// dashes, no leading or trailing dash, at most 63 bytes; `node` if nothing is left.
pub fn sanitize_hostname(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len().min(MAX_LABEL));
    for c in hostname.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(MAX_LABEL);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("node");
    }
    out
}

/// The `n`-th candidate for a given name: `base` itself, then `base-1`, `base-2`, ... with
/// `base` shortened so the result stays a valid label.
pub(crate) fn candidate(base: &str, n: u32) -> String {
    if n == 0 {
        return base.to_owned();
    }
    let suffix = format!("-{n}");
    let mut b = base[..base.len().min(MAX_LABEL - suffix.len())].to_owned();
    while b.ends_with('-') {
        b.pop();
    }
    b + &suffix
}

/// Checks a tag as Tailscale does (ts:tailcfg `CheckTag`): `tag:`, then an ASCII letter, then
/// letters, digits or dashes.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = tag.strip_prefix("tag:").is_some_and(|name| {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidTag(tag.to_owned()))
    }
}

/// Validates, sorts and dedupes a tag list.
pub(crate) fn normalize_tags(tags: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        check_tag(t)?;
        out.push(t.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize_hostname("My Laptop.local"), "my-laptop-local");
        assert_eq!(sanitize_hostname("--router--"), "router");
        assert_eq!(sanitize_hostname("ÜberBox"), "berbox");
        assert_eq!(sanitize_hostname("***"), "node");
        assert_eq!(sanitize_hostname(""), "node");
        let long = "a".repeat(100);
        assert_eq!(sanitize_hostname(&long).len(), 63);
    }

    #[test]
    fn candidates() {
        assert_eq!(candidate("host", 0), "host");
        assert_eq!(candidate("host", 1), "host-1");
        assert_eq!(candidate("host", 12), "host-12");
        let long = "a".repeat(63);
        assert_eq!(candidate(&long, 7).len(), 63);
        assert!(candidate(&long, 7).ends_with("a-7"));
    }

    #[test]
    fn tags() {
        assert!(check_tag("tag:server").is_ok());
        assert!(check_tag("tag:web-1").is_ok());
        for bad in [
            "server", "tag:", "tag:1abc", "tag:a_b", "tag:a b", "group:x",
        ] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        let t = normalize_tags(&["tag:b".into(), "tag:a".into(), "tag:b".into()]).unwrap();
        assert_eq!(t, ["tag:a", "tag:b"]);
    }
}
