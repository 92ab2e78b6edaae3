//! Name keys: one canonical, case-folded text form for comparing DNS names.

use std::net::IpAddr;

use hickory_proto::rr::Name;

/// Canonical key of a name: lowercase ASCII labels joined by dots, with a trailing dot.
///
/// Names with a label that holds a dot, a non-printable or a non-ASCII byte have no key:
/// no record can carry such a name, so a query for one is never answered from records.
pub(crate) fn key_of(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        for &b in label {
            if !b.is_ascii_graphic() || b == b'.' {
                return None;
            }
            key.push(char::from(b.to_ascii_lowercase()));
        }
        key.push('.');
    }
    if key.is_empty() {
        key.push('.');
    }
    Some(key)
}

/// Parses a configured name (trailing dot optional) into a fully qualified [`Name`].
pub(crate) fn parse_fqdn(text: &str) -> Option<Name> {
    let text = text.trim();
    if text.is_empty() || text == "." {
        return None;
    }
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The key of every proper ancestor of `key` (`a.b.c.` gives `b.c.` and `c.`), so that an
/// empty non-terminal answers NOERROR instead of NXDOMAIN (RFC 8020).
pub(crate) fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.char_indices()
        .filter(|&(i, c)| c == '.' && i + 1 < key.len())
        .filter_map(move |(i, _)| key.get(i + 1..))
}

/// The reverse-lookup key (`in-addr.arpa.` / `ip6.arpa.`) of an address.
pub(crate) fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut key = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    key.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    key.push('.');
                }
            }
            key.push_str("ip6.arpa.");
            key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_and_add_the_dot() {
        let a = parse_fqdn("Host.Tailnet.TS.net").unwrap();
        let b = parse_fqdn("host.tailnet.ts.net.").unwrap();
        assert_eq!(key_of(&a).unwrap(), "host.tailnet.ts.net.");
        assert_eq!(key_of(&a), key_of(&b));
        assert!(parse_fqdn(".").is_none());
        assert!(parse_fqdn("").is_none());
    }

    #[test]
    fn ancestors_are_proper_suffixes() {
        let got: Vec<_> = ancestors("a.b.c.").collect();
        assert_eq!(got, ["b.c.", "c."]);
        assert_eq!(ancestors("c.").count(), 0);
    }

    #[test]
    fn reverse_keys() {
        assert_eq!(
            reverse_key("100.64.0.1".parse().unwrap()),
            "1.0.64.100.in-addr.arpa."
        );
        let v6 = reverse_key("fd7a:115c:a1e0::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with("0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa."), "{v6}");
        assert_eq!(v6.split('.').count(), 32 + 3);
    }
}
