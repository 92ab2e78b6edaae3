//! The admin API's listeners (a unix socket, a loopback TCP address) and the accept loops:
//! hyper's HTTP/1.1 server, one request per connection.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::handler::AdminApi;
use crate::error::{AdminError, Result};

/// The socket's file name next to the database when no other is given.
pub const SOCKET_FILE_NAME: &str = "admin.sock";

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole connection (body, operation, answer).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds `addr`, refusing a non-loopback address unless `allow_any` (`--admin-listen-any`).
pub async fn bind_tcp(addr: SocketAddr, allow_any: bool) -> Result<TcpListener> {
    if !allow_any && !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Binds a unix socket at `path`, mode 0600. A stale socket file (nobody listening) is
/// replaced; a live one, or any other kind of file, is an error.
pub async fn bind_unix(path: &Path) -> Result<UnixListener> {
    let fail = |source: std::io::Error| AdminError::Listen {
        addr: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is serving on it",
            )));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

/// A listener the API serves: TCP or unix socket.
trait Accept: Send {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl AdminApi {
    /// Serves TCP connections until accepting fails for good.
    pub async fn serve_tcp(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_accepted(listener).await
    }

    /// Serves unix-socket connections until accepting fails for good.
    pub async fn serve_unix(self, listener: UnixListener) -> std::io::Result<()> {
        self.serve_accepted(listener).await
    }

    /// Serves what `listener` accepts, at most [`MAX_CONNECTIONS`] at a time.
    async fn serve_accepted<L: Accept>(self, listener: L) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return Ok(());
            };
            match listener.accept_stream().await {
                Ok(stream) => {
                    let api = self.clone();
                    tokio::spawn(async move {
                        api.serve_connection(stream).await;
                        drop(permit);
                    });
                }
                Err(e) => accept_failed(e).await?,
            }
        }
    }

    /// One HTTP/1.1 connection (any byte stream), with the header and connection timeouts.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let api = self.clone();
        let service = service_fn(move |request| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("admin API connection: {e}"),
            Err(_) => tracing::debug!("admin API connection timed out"),
        }
    }
}

/// Out of file descriptors and similar: wait a little and go on. Anything else ends serving.
async fn accept_failed(e: std::io::Error) -> std::io::Result<()> {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || e.raw_os_error().is_some_and(|c| c == 23 || c == 24)
    {
        tracing::warn!("admin API accept: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(());
    }
    Err(e)
}
