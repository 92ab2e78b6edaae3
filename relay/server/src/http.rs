//! The HTTP/1.1 side of the relay, sans-I/O (reference §2.1): parse a request head, decide the
//! answer. Only `GET /derp` with `Upgrade: DERP` switches to DERP; everything else gets one
//! response and the connection is closed.

use meshgate_tailcfg::NodePublic;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8 << 10;
/// Longest `X-Tailscale-Challenge` echoed.
const MAX_CHALLENGE: usize = 64;

/// The parts of a request the relay looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// `Upgrade` header value, lower-cased.
    pub upgrade: Option<String>,
    pub challenge: Option<String>,
}

/// A malformed or oversized head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest;

/// Parses the head at the start of `buf`: `Ok(None)` = incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(BadRequest),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadRequest),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p).to_owned();
    Ok(Some((
        n,
        Request {
            method: req.method.unwrap_or("").to_owned(),
            path,
            upgrade: header("Upgrade").map(|u| u.to_ascii_lowercase()),
            challenge: header("X-Tailscale-Challenge"),
        },
    )))
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Write this 101 and switch to DERP.
    Upgrade(Vec<u8>),
    /// Write this response and close.
    Reply(Vec<u8>),
}

fn reply(status: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The 400 for a bad head.
pub fn bad_request() -> Vec<u8> {
    reply("400 Bad Request", "", "bad request\n")
}

fn sane_challenge(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CHALLENGE
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Decides the answer to `req` for a server whose key is `server_key`.
pub fn route(req: &Request, server_key: &NodePublic) -> Route {
    let get_or_head = req.method == "GET" || req.method == "HEAD";
    match req.path.as_str() {
        "/derp" => {
            if req.method == "GET" && req.upgrade.as_deref() == Some("derp") {
                Route::Upgrade(
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: {}\r\nDerp-Public-Key: {}\r\n\r\n",
                        meshgate_derp::PROTOCOL_VERSION,
                        meshgate_derp::http::key_hex(server_key)
                    )
                    .into_bytes(),
                )
            } else {
                Route::Reply(reply(
                    "426 Upgrade Required",
                    "",
                    "DERP requires connection upgrade\n",
                ))
            }
        }
        "/derp/probe" | "/derp/latency-check" if get_or_head => {
            Route::Reply(reply("200 OK", "", ""))
        }
        "/generate_204" if get_or_head => {
            let extra = match &req.challenge {
                Some(c) if sane_challenge(c) => format!("X-Tailscale-Response: response {c}\r\n"),
                _ => String::new(),
            };
            Route::Reply(
                format!("HTTP/1.1 204 No Content\r\n{extra}Connection: close\r\n\r\n").into_bytes(),
            )
        }
        _ => Route::Reply(reply("404 Not Found", "", "not found\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(raw: &str) -> String {
        let (_, req) = parse_head(raw.as_bytes()).unwrap().unwrap();
        match route(&req, &NodePublic::from_bytes([1; 32])) {
            Route::Upgrade(b) | Route::Reply(b) => String::from_utf8(b).unwrap(),
        }
    }

    #[test]
    fn routes() {
        let up =
            ask("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n");
        assert!(up.starts_with("HTTP/1.1 101 "), "{up}");
        assert!(up.contains(&format!("Derp-Public-Key: {}\r\n", "01".repeat(32))));
        assert!(up.contains("Derp-Version: 2\r\n"));
        assert!(ask("GET /derp HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 426 "));
        assert!(ask("GET /derp/probe HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        assert!(ask("HEAD /derp/latency-check HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        let r = ask("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: abc.D-_9\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 204 "));
        assert!(
            r.contains("X-Tailscale-Response: response abc.D-_9\r\n"),
            "{r}"
        );
        let r = ask("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: a b<\r\n\r\n");
        assert!(!r.contains("X-Tailscale-Response"), "{r}");
        let long = "a".repeat(65);
        let r = ask(&format!(
            "GET /generate_204?x=1 HTTP/1.1\r\nX-Tailscale-Challenge: {long}\r\n\r\n"
        ));
        assert!(r.starts_with("HTTP/1.1 204 ") && !r.contains("X-Tailscale-Response"));
        assert!(ask("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert_eq!(parse_head(b"GET /derp HTTP/1.1\r\nHo").unwrap(), None);
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'A'; MAX_HEAD]).is_err());
    }
}
