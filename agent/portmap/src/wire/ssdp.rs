//! SSDP M-SEARCH requests and the parts of their answers the probe needs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// SSDP's multicast group and port.
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// Answers longer than this are not SSDP answers we want.
pub const MAX_ANSWER: usize = 2048;
const IGD_V1: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";

/// An M-SEARCH for `st` (`ssdp:all` or a device type).
pub fn m_search(st: &str) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {MULTICAST}\r\nST: {st}\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n"
    )
    .into_bytes()
}

/// The probe's searches: `ssdp:all` (unicast to the gateway and multicast) and IGD:1 (multicast).
pub fn probe_requests() -> [Vec<u8>; 2] {
    [m_search("ssdp:all"), m_search(IGD_V1)]
}

/// A usable SSDP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The device description URL, as sent.
    pub location: String,
    /// Host part of `location` when it is an IP literal.
    pub location_host: Option<IpAddr>,
    pub st: Option<String>,
}

/// Why a datagram from port 1900 was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TooLong,
    NotUtf8,
    NotHttp200,
    NoLocation,
    /// The LOCATION points somewhere other than the gateway that answered: following it would
    /// let any LAN host steer our SOAP calls.
    LocationElsewhere,
}

/// Parses an answer from `from`. Only answers from `gateway` whose LOCATION is on `gateway`
/// count.
pub fn parse_answer(buf: &[u8], from: SocketAddr, gateway: Ipv4Addr) -> Result<Answer, Reject> {
    if buf.len() > MAX_ANSWER {
        return Err(Reject::TooLong);
    }
    let text = std::str::from_utf8(buf).map_err(|_| Reject::NotUtf8)?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.split_whitespace();
    if !parts
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case("HTTP/1.1"))
        || parts.next() != Some("200")
    {
        return Err(Reject::NotHttp200);
    }
    let mut location = None;
    let mut st = None;
    for line in lines.take(32) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("location") {
            location = Some(value.to_owned());
        } else if name.trim().eq_ignore_ascii_case("st") {
            st = Some(value.to_owned());
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or(Reject::NoLocation)?;
    let location_host = url_host(&location);
    if from.ip() != IpAddr::V4(gateway) || location_host != Some(IpAddr::V4(gateway)) {
        return Err(Reject::LocationElsewhere);
    }
    Ok(Answer {
        location,
        location_host,
        st,
    })
}

/// The IPv4 literal host of an `http://host[:port]/path` URL.
fn url_host(url: &str) -> Option<IpAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    fn from_gw() -> SocketAddr {
        SocketAddr::from((GW, 1900))
    }

    #[test]
    fn request_shape() {
        let r = String::from_utf8(m_search("ssdp:all")).unwrap();
        assert!(r.starts_with("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"));
        assert!(r.contains("ST: ssdp:all\r\n") && r.contains("MAN: \"ssdp:discover\"\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn good_answer() {
        let a = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: upnp:rootdevice\r\nlocation: http://10.1.0.1:41234/rootDesc.xml\r\n\r\n";
        let got = parse_answer(a, from_gw(), GW).unwrap();
        assert_eq!(got.location, "http://10.1.0.1:41234/rootDesc.xml");
        assert_eq!(got.st.as_deref(), Some("upnp:rootdevice"));
    }

    #[test]
    fn bad_answers() {
        let ok = b"HTTP/1.1 200 OK\r\nLOCATION: http://10.1.0.1:1/x\r\n\r\n";
        assert_eq!(
            parse_answer(ok, "10.1.0.9:1900".parse().unwrap(), GW),
            Err(Reject::LocationElsewhere)
        );
        let elsewhere = b"HTTP/1.1 200 OK\r\nLOCATION: http://10.1.0.9:1/x\r\n\r\n";
        assert_eq!(
            parse_answer(elsewhere, from_gw(), GW),
            Err(Reject::LocationElsewhere)
        );
        let named = b"HTTP/1.1 200 OK\r\nLOCATION: http://router.lan:1/x\r\n\r\n";
        assert_eq!(
            parse_answer(named, from_gw(), GW),
            Err(Reject::LocationElsewhere)
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 404 NF\r\n\r\n", from_gw(), GW),
            Err(Reject::NotHttp200)
        );
        assert_eq!(
            parse_answer(b"NOTIFY * HTTP/1.1\r\n\r\n", from_gw(), GW),
            Err(Reject::NotHttp200)
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\n\r\n", from_gw(), GW),
            Err(Reject::NoLocation)
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nLOCATION:\r\n", from_gw(), GW),
            Err(Reject::NoLocation)
        );
        assert_eq!(
            parse_answer(&[0xff, 0xfe], from_gw(), GW),
            Err(Reject::NotUtf8)
        );
        assert_eq!(
            parse_answer(&[b'a'; 4000], from_gw(), GW),
            Err(Reject::TooLong)
        );
        assert_eq!(parse_answer(b"", from_gw(), GW), Err(Reject::NotHttp200));
        for n in 0..ok.len() {
            let _ = parse_answer(&ok[..n], from_gw(), GW);
        }
    }
}
