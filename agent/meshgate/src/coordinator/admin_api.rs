//! Starts the admin HTTP API next to the ts2021 listener in `coordinator serve`: a unix socket
//! (default `<db dir>/admin.sock`) and optionally a loopback TCP address, both asking for the
//! bearer token in `<db dir>/admin.token` (created at first start). Its changes call
//! `Server::notify()` at once instead of waiting for the data_version poll (the API shares the
//! server's store connection, whose own commits that poll does not see).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshgate_coordinator::Server;
use meshgate_coordinator_admin::http::SOCKET_FILE_NAME;
use meshgate_coordinator_admin::{
    AdminApi, TOKEN_FILE_NAME, bind_tcp, bind_unix, load_or_create_token,
};
use meshgate_coordinator_store::Store;
use tokio::task::JoinHandle;

/// Where the admin API listens and where its token is.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// `None`: no unix socket.
    pub socket: Option<PathBuf>,
    /// `None`: no TCP listener.
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback `listen` address.
    pub listen_any: bool,
    pub token_file: PathBuf,
}

impl AdminOptions {
    /// From `serve`'s flags (`--admin-socket`, `--admin-listen`, `--admin-listen-any`,
    /// `--admin-token-file`); the socket and the token default to files next to the
    /// database. `serve` has no such flags yet and passes `None`/`false`.
    pub fn new(
        db_dir: &Path,
        socket: Option<PathBuf>,
        listen: Option<SocketAddr>,
        listen_any: bool,
        token_file: Option<PathBuf>,
    ) -> AdminOptions {
        AdminOptions {
            socket: Some(socket.unwrap_or_else(|| db_dir.join(SOCKET_FILE_NAME))),
            listen,
            listen_any,
            token_file: token_file.unwrap_or_else(|| db_dir.join(TOKEN_FILE_NAME)),
        }
    }
}

/// The running API: its tasks end and its socket file goes when this drops.
#[derive(Debug)]
pub struct AdminApiHandle {
    tasks: Vec<JoinHandle<()>>,
    socket: Option<PathBuf>,
}

impl Drop for AdminApiHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds every listener first (so a bad address fails `serve` before anything runs), then
/// serves them.
pub async fn start(
    store: Arc<dyn Store>,
    server: &Server,
    options: &AdminOptions,
) -> Result<AdminApiHandle, String> {
    let token = load_or_create_token(&options.token_file).map_err(|e| e.to_string())?;
    let tcp = match options.listen {
        Some(addr) => Some(
            bind_tcp(addr, options.listen_any)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let unix = match &options.socket {
        Some(path) => Some(bind_unix(path).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let hook = {
        let server = server.clone();
        Arc::new(move || server.notify())
    };
    let api = AdminApi::new(store, token, hook);
    let mut handle = AdminApiHandle {
        tasks: Vec::new(),
        socket: None,
    };
    if let Some(listener) = tcp {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, "admin API listening");
        let api = api.clone();
        handle.tasks.push(tokio::spawn(async move {
            if let Err(e) = api.serve_tcp(listener).await {
                tracing::error!(%addr, "admin API stopped: {e}");
            }
        }));
    }
    if let (Some(listener), Some(path)) = (unix, &options.socket) {
        tracing::info!(socket = %path.display(), "admin API listening");
        handle.socket = Some(path.clone());
        let path = path.clone();
        handle.tasks.push(tokio::spawn(async move {
            if let Err(e) = api.serve_unix(listener).await {
                tracing::error!(socket = %path.display(), "admin API stopped: {e}");
            }
        }));
    }
    Ok(handle)
}
