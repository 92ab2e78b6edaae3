//! The agent's own connections, marked so they bypass the tailnet's routing. See README.md.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

/// TCP to `addr` (`host:port`), trying each address it resolves to in turn, the socket marked
/// with `fwmark` (unless 0) before it connects. `what` names the connection in the warning
/// logged when marking is not permitted.
pub async fn connect_tcp(addr: &str, fwmark: u32, what: &str) -> io::Result<TcpStream> {
    if fwmark == 0 {
        return TcpStream::connect(addr).await;
    }
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        match connect_marked(target, fwmark, what).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr}: the name has no addresses"),
        )
    }))
}

async fn connect_marked(target: SocketAddr, fwmark: u32, what: &str) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    match socket2::SockRef::from(&socket).set_mark(fwmark) {
        Ok(()) => {}
        // A process without CAP_NET_ADMIN cannot have installed the routing the mark escapes.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(
                %target,
                fwmark,
                "no permission to mark the {what} connection (needs CAP_NET_ADMIN); \
                 connecting unmarked"
            );
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("setting SO_MARK: {e}"))),
    }
    socket.connect(target).await
}
