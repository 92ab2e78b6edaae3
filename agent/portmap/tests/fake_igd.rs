//! Bad replies from a fake UPnP IGD on loopback (SSDP on 127.0.0.1:1900, HTTP description and
//! SOAP on 127.0.0.1:5000), for what igd-next parses and what we check on top. Each case runs in
//! a lab namespace of its own (only `lo`). Needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use meshgate_netns_lab::{Host, Lab};
use meshgate_portmap::{Config, Mapping, Options, Protocol};

mod common;

use common::{LO, WG_PORT, first_mapping};
const HTTP_PORT: u16 = 5000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Spoil {
    Nothing,
    /// SSDP LOCATION on another address: the probe must not count it, no SOAP at all.
    LocationElsewhere,
    ExternalZero,
    ExternalLoopback,
    ExternalGarbage,
    AddFault,
    AddGarbageXml,
    DescriptionGarbage,
}

const ROOT: &str = r#"<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>"#;

fn scpd() -> String {
    let action = |name: &str, args: &[&str]| {
        let args: String = args
            .iter()
            .map(|a| format!("<argument><name>{a}</name><direction>in</direction></argument>"))
            .collect();
        format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
    };
    let add = [
        "NewRemoteHost",
        "NewExternalPort",
        "NewProtocol",
        "NewInternalPort",
        "NewInternalClient",
        "NewEnabled",
        "NewPortMappingDescription",
        "NewLeaseDuration",
    ];
    format!(
        r#"<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0"><actionList>{}{}{}</actionList></scpd>"#,
        action("AddPortMapping", &add),
        action("GetExternalIPAddress", &[]),
        action(
            "DeletePortMapping",
            &["NewRemoteHost", "NewExternalPort", "NewProtocol"]
        ),
    )
}

fn soap(action: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:{action}Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">{body}</u:{action}Response></s:Body></s:Envelope>"#
    )
}

const FAULT: &str = r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>501</errorCode><errorDescription>ActionFailed</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#;

struct Fake {
    stop: Arc<AtomicBool>,
    soap_calls: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn fake(host: &Host, spoil: Spoil) -> Fake {
    let stop = Arc::new(AtomicBool::new(false));
    let soap_calls = Arc::new(AtomicUsize::new(0));
    let udp = host.udp_bind(SocketAddr::from((LO, 1900))).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let tcp = host
        .run(|| TcpListener::bind((LO, HTTP_PORT)))
        .unwrap()
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let s1 = stop.clone();
    let ssdp = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let host = if spoil == Spoil::LocationElsewhere {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:1::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nLOCATION: http://{host}:{HTTP_PORT}/root.xml\r\n\r\n"
        );
        for _ in 0..6000 {
            if s1.load(Ordering::Relaxed) {
                return;
            }
            if let Ok((n, from)) = udp.recv_from(&mut buf)
                && buf[..n].starts_with(b"M-SEARCH")
            {
                let _ = udp.send_to(reply.as_bytes(), from);
            }
        }
    });
    let (s2, calls) = (stop.clone(), soap_calls.clone());
    let http = std::thread::spawn(move || {
        for _ in 0..6000 {
            if s2.load(Ordering::Relaxed) {
                return;
            }
            match tcp.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let _ = answer(stream, spoil, &calls);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Fake {
        stop,
        soap_calls,
        threads: vec![ssdp, http],
    }
}

fn answer(stream: std::net::TcpStream, spoil: Spoil, calls: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (mut len, mut action) = (0usize, String::new());
    for _ in 0..64 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0).min(65536);
        }
        if lower.starts_with("soapaction:") {
            action = h
                .rsplit('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_owned();
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let (status, text) = match path.as_str() {
        "/root.xml" if spoil == Spoil::DescriptionGarbage => {
            ("200 OK", "<root><device>".to_owned())
        }
        "/root.xml" => ("200 OK", ROOT.to_owned()),
        "/scpd.xml" => ("200 OK", scpd()),
        "/ctl" => {
            calls.fetch_add(1, Ordering::Relaxed);
            match action.as_str() {
                "AddPortMapping" if spoil == Spoil::AddFault => {
                    ("500 Internal Server Error", FAULT.to_owned())
                }
                "AddPortMapping" if spoil == Spoil::AddGarbageXml => {
                    ("200 OK", "<<<not xml".to_owned())
                }
                "GetExternalIPAddress" => {
                    let ip = match spoil {
                        Spoil::ExternalZero => "0.0.0.0",
                        Spoil::ExternalLoopback => "127.0.0.1",
                        Spoil::ExternalGarbage => "44.0.0.999",
                        _ => "44.0.0.1",
                    };
                    (
                        "200 OK",
                        soap(
                            &action,
                            &format!("<NewExternalIPAddress>{ip}</NewExternalIPAddress>"),
                        ),
                    )
                }
                other => ("200 OK", soap(other, "")),
            }
        }
        _ => ("404 Not Found", String::new()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

fn options() -> Options {
    Options {
        mapper: Config {
            lease: Duration::from_secs(60),
            probe_cache: Duration::from_secs(600),
            retry_min: Duration::from_millis(300),
            retry_max: Duration::from_millis(600),
        },
        probe_window: Duration::from_millis(100),
        request_timeout: Duration::from_millis(250),
        route_poll: Duration::from_secs(60),
    }
}

fn run_case(host: &Host, spoil: Spoil, watch_for: Duration) -> (Option<Mapping>, usize) {
    let fake = fake(host, spoil);
    let published = first_mapping(host, options(), watch_for);
    (published, fake.soap_calls.load(Ordering::Relaxed))
}

#[test]
fn well_formed_igd_gives_a_mapping_and_stop_deletes_it() {
    let lab = Lab::new("igdgood").unwrap();
    let host = lab.add_host("gw").unwrap();
    let (m, calls) = run_case(&host, Spoil::Nothing, Duration::from_secs(5));
    let m = m.expect("no mapping from a well-formed IGD");
    assert_eq!(
        (m.protocol, m.external),
        (Protocol::Upnp, SocketAddr::from(([44, 0, 0, 1], WG_PORT)))
    );
    assert!(
        calls >= 3,
        "AddPortMapping, GetExternalIPAddress and DeletePortMapping expected, saw {calls}"
    );
}

#[test]
fn spoiled_igd_never_publishes() {
    let lab = Lab::new("igdbad").unwrap();
    let host = lab.add_host("gw").unwrap();
    for spoil in [
        Spoil::ExternalZero,
        Spoil::ExternalLoopback,
        Spoil::ExternalGarbage,
        Spoil::AddFault,
        Spoil::AddGarbageXml,
        Spoil::DescriptionGarbage,
        Spoil::LocationElsewhere,
    ] {
        let (m, calls) = run_case(&host, spoil, Duration::from_millis(2000));
        assert_eq!(m, None, "{spoil:?}: published a mapping from a bad reply");
        let expect_soap = !matches!(spoil, Spoil::LocationElsewhere | Spoil::DescriptionGarbage);
        assert_eq!(calls > 0, expect_soap, "{spoil:?}: {calls} SOAP calls");
    }
}
