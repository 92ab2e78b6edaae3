//! Where the control server is and how to reach it: the `--login-server` forms
//! (`https://host[:port]`, `http://host[:port]`, bare `host:port`) and, for `https`, the TLS
//! client configuration (public roots from `webpki-roots`, plus an optional private CA file).
//!
//! Both `GET /key` and the `/ts2021` upgrade go through [`ControlServer::dial`], so an
//! `https` server gets TLS for both (reference §5.1–5.2), with SNI = the URL's host.
//!
//! With a firewall mark ([`ControlServer::with_fwmark`], WireGuard's 0x80000) the TCP socket
//! carries it from before its SYN, so the `not fwmark … lookup 52` rule keeps the control
//! connection off the tailnet's table: it never goes through an exit node (reference §7.3).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to control: plain TCP or TLS over TCP.
pub trait ControlStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ControlStream for T {}

/// A connected stream to control (see [`ControlServer::dial`]).
pub type BoxStream = Pin<Box<dyn ControlStream>>;

/// A bad `--login-server` or `--login-server-ca`.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "login server {input:?}: {reason} (expected https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT)"
    )]
    Url { input: String, reason: String },
    #[error("login server CA {}: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
}

/// The control server: scheme, host and port, and the TLS settings for `https`.
#[derive(Clone)]
pub struct ControlServer {
    /// Host name or IP literal (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    /// `Some` for `https://` URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether the port was given (it goes into the Host header only then).
    explicit_port: bool,
    /// The form it was given in, for logs and messages.
    text: String,
    /// SO_MARK for the TCP socket; 0 = none.
    fwmark: u32,
}

impl fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlServer")
            .field("url", &self.text)
            .field("tls", &self.tls.is_some())
            .field("fwmark", &self.fwmark)
            .finish()
    }
}

impl fmt::Display for ControlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<SocketAddr> for ControlServer {
    /// Plain ts2021 to `addr` (what tests and bare `host:port` use).
    fn from(addr: SocketAddr) -> Self {
        ControlServer {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: None,
            explicit_port: true,
            text: addr.to_string(),
            fwmark: 0,
        }
    }
}

impl ControlServer {
    /// Parses a login server: `https://host[:port]` (TLS, port 443 by default),
    /// `http://host[:port]` (plain, 80) or a bare `host:port` (plain). A trailing `/` is
    /// allowed; other paths, queries and user info are not. `ca_file` (PEM, one or more
    /// certificates) is trusted besides the public roots; it is read now, and only for
    /// `https`.
    pub fn parse(input: &str, ca_file: Option<&Path>) -> Result<ControlServer, EndpointError> {
        let bad = |reason: &str| EndpointError::Url {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = input.trim();
        let (tls, rest, default_port) = if let Some(rest) = strip_prefix_ci(trimmed, "https://") {
            (true, rest, Some(443))
        } else if let Some(rest) = strip_prefix_ci(trimmed, "http://") {
            (false, rest, Some(80))
        } else if trimmed.contains("://") {
            return Err(bad("unsupported scheme (only https and http)"));
        } else {
            (false, trimmed, None)
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a path, query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let (host, port) = split_host_port(authority).map_err(|r| bad(&r))?;
        let explicit_port = port.is_some();
        let port = match (port, default_port) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => return Err(bad("no port (give HOST:PORT, or a URL)")),
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        let tls = if tls {
            // SNI needs a DNS name or an IP address.
            ServerName::try_from(host.clone()).map_err(|e| bad(&format!("host: {e}")))?;
            Some(Arc::new(client_config(ca_file)?))
        } else {
            None
        };
        Ok(ControlServer {
            host,
            port,
            tls,
            explicit_port,
            text: trimmed.to_owned(),
            fwmark: 0,
        })
    }

    /// The same server, dialled with firewall mark `fwmark` (SO_MARK) on the TCP socket; 0 =
    /// no mark. Setting a mark needs CAP_NET_ADMIN: without it the connection is made
    /// unmarked, with a warning (a process without it cannot have set up the routing the mark
    /// is meant to escape either).
    #[must_use]
    pub fn with_fwmark(mut self, fwmark: u32) -> ControlServer {
        self.fwmark = fwmark;
        self
    }

    /// The firewall mark of the TCP connections (0 = none).
    pub fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Whether this server is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The host (no brackets, no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port` for connecting (IPv6 literals bracketed).
    pub fn addr(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The HTTP Host header / HTTP/2 authority: `host`, plus `:port` if one was given.
    pub fn authority(&self) -> String {
        if self.explicit_port {
            self.addr()
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// Connects TCP and, for `https`, runs the TLS handshake (SNI = host, certificate checked
    /// against the roots). Not bounded in time: callers wrap it in a timeout.
    pub async fn dial(&self) -> io::Result<BoxStream> {
        let tcp = meshgate_netns::connect_tcp(&self.addr(), self.fwmark, "control").await?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(Box::pin(tcp));
        };
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        Ok(Box::pin(tls))
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("bad port {p:?} (a number 1-65535)"))
    };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("unclosed [ in an IPv6 address")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 address {v6:?}"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':').ok_or("junk after ]".to_owned())?,
            )?),
        };
        (v6.to_owned(), port)
    } else {
        match authority.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 addresses go in brackets: [ADDR]:PORT".into());
            }
            Some((h, p)) => (h.to_owned(), Some(parse_port(p)?)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("spaces or control characters in the host".into());
    }
    Ok((host, port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The TLS client configuration: public roots (webpki-roots) plus the certificates in
/// `ca_file`. No ALPN: the ts2021 upgrade is HTTP/1.1.
fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, EndpointError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let ca = |reason: String| EndpointError::Ca {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ca("no CERTIFICATE block in the file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca(format!("unusable certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ControlServer, EndpointError> {
        ControlServer::parse(s, None)
    }

    #[test]
    fn url_forms() {
        let s = parse("https://control.example.com").unwrap();
        assert!(s.is_tls());
        assert_eq!(s.addr(), "control.example.com:443");
        assert_eq!(s.authority(), "control.example.com");
        let s = parse("HTTPS://control.example.com:8443/").unwrap();
        assert_eq!(
            (s.addr().as_str(), s.is_tls()),
            ("control.example.com:8443", true)
        );
        assert_eq!(s.authority(), "control.example.com:8443");
        let s = parse("http://10.0.0.1").unwrap();
        assert_eq!((s.addr().as_str(), s.is_tls()), ("10.0.0.1:80", false));
        let s = parse("127.0.0.1:8080").unwrap();
        assert_eq!((s.addr().as_str(), s.is_tls()), ("127.0.0.1:8080", false));
        assert_eq!(s.authority(), "127.0.0.1:8080");
        let s = parse("https://[::1]:9443").unwrap();
        assert_eq!((s.host(), s.addr().as_str()), ("::1", "[::1]:9443"));
        let s = parse("http://[fd00::1]").unwrap();
        assert_eq!(
            (s.addr().as_str(), s.authority().as_str()),
            ("[fd00::1]:80", "[fd00::1]")
        );
        let s = ControlServer::from("127.0.0.1:5".parse::<SocketAddr>().unwrap());
        assert_eq!((s.addr().as_str(), s.is_tls()), ("127.0.0.1:5", false));
    }

    #[test]
    fn bad_urls() {
        for (input, why) in [
            ("control.example.com", "no port"),
            ("ftp://x:1", "unsupported scheme"),
            ("https://", "no host"),
            ("https://h:x", "bad port"),
            ("https://h:70000", "bad port"),
            ("http://h:0", "port 0"),
            ("https://h/path", "path"),
            ("https://u@h", "user info"),
            ("::1:80", "brackets"),
            ("https://[::1", "unclosed"),
            ("https://[zz]:1", "bad IPv6"),
        ] {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
            assert!(err.contains("expected https://"), "{input}: {err}");
        }
    }

    /// Needs root (CAP_NET_ADMIN) for SO_MARK (meshgate-netns tests the mark itself).
    #[tokio::test]
    async fn a_marked_server_dials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ControlServer::from(addr).with_fwmark(0x80000);
        assert_eq!(server.fwmark(), 0x80000);
        let mut stream = server.dial().await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn ca_file_errors() {
        let dir = std::env::temp_dir().join(format!("meshgate-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = ControlServer::parse("https://h", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let err = ControlServer::parse("https://h", Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        // Plain servers ignore the CA file.
        assert!(ControlServer::parse("h:1", Some(&missing)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
