//! The client side of the `GET /derp` HTTP/1.1 upgrade (reference §2.1), sans-I/O: the request
//! bytes, and a parser for the server's response head.

use meshgate_tailcfg::NodePublic;

use crate::Error;

/// Largest response head accepted before the frames start.
pub const MAX_HEAD: usize = 8 << 10;

/// The upgrade request. `host` is the Host header value; `ideal_node` the region's first node
/// name when connecting to another node of the region.
pub fn upgrade_request(host: &str, ideal_node: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET /derp HTTP/1.1\r\nHost: {host}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nUser-Agent: meshgate-derp\r\n"
    );
    if let Some(n) = ideal_node {
        req.push_str(&format!("Ideal-Node: {n}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Parses the response head at the start of `buf`.
///
/// Returns `Ok(None)` if the head is not complete yet, else the length of the head and the
/// server key from `Derp-Public-Key` (the bytes after the head are frames). A status other than
/// 101 or a missing/invalid key header is an [`Error::UpgradeRefused`].
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<(usize, NodePublic)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Error::UpgradeRefused("response head too large".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::UpgradeRefused(format!("bad response head: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(Error::UpgradeRefused(format!(
            "HTTP {code} {}",
            resp.reason.unwrap_or("")
        )));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    if !header("Upgrade").is_some_and(|u| u.eq_ignore_ascii_case("DERP")) {
        return Err(Error::UpgradeRefused("101 without Upgrade: DERP".into()));
    }
    let key = header("Derp-Public-Key")
        .ok_or_else(|| Error::UpgradeRefused("no Derp-Public-Key header".into()))?;
    let key: NodePublic = format!("{}{key}", NodePublic::PREFIX)
        .parse()
        .map_err(|_| Error::UpgradeRefused("bad Derp-Public-Key header".into()))?;
    Ok(Some((head_len, key)))
}

/// The bare 64-hex form of a key, as the `Derp-Public-Key` header carries it.
pub fn key_hex(key: &NodePublic) -> String {
    let text = key.to_string();
    text.strip_prefix(NodePublic::PREFIX)
        .unwrap_or(&text)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_101_and_refusals() {
        let k = NodePublic::from_bytes([7; 32]);
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\nDerp-Public-Key: {}\r\n\r\nxx",
            key_hex(&k)
        );
        let (n, key) = parse_upgrade_response(head.as_bytes()).unwrap().unwrap();
        assert_eq!(key, k);
        assert_eq!(&head.as_bytes()[n..], b"xx");
        assert!(
            parse_upgrade_response(&head.as_bytes()[..20])
                .unwrap()
                .is_none()
        );
        let e = parse_upgrade_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("426"), "{e}");
        assert!(
            parse_upgrade_response(b"HTTP/1.1 101 OK\r\nUpgrade: DERP\r\n\r\n").is_err(),
            "no key"
        );
        assert!(parse_upgrade_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_upgrade_response(&[b'a'; MAX_HEAD]).is_err());
        let req = String::from_utf8(upgrade_request("h:1", Some("1a"))).unwrap();
        assert!(req.starts_with("GET /derp HTTP/1.1\r\n"));
        assert!(req.contains("Upgrade: DERP\r\n") && req.contains("Ideal-Node: 1a\r\n"));
    }
}
