//! The DERP relay server (reference §2): HTTP/1.1 upgrade, handshake, routing between
//! connected node keys with bounded per-client queues. See README.md.

mod config;
mod conn;
mod error;
pub mod http;
pub mod keyfile;
mod outbox;
pub mod ratelimit;
mod registry;
mod stats;
mod tls;

use std::fmt;
use std::sync::Arc;

use meshgate_tailcfg::{NodePrivate, NodePublic};
use tokio::net::TcpListener;

pub use config::{Config, KeySource, RateLimit, TlsMode};
pub use error::Error;
pub use registry::{DISCO_MAGIC, looks_like_disco};
pub use stats::{DropReason, StatsSnapshot};

use crate::registry::Registry;
use crate::stats::Stats;

/// State shared by every connection.
pub(crate) struct Shared {
    config: Config,
    private: NodePrivate,
    public: NodePublic,
    stats: Arc<Stats>,
    registry: Registry,
}

/// A relay: its key, TLS settings and counters. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cert_name: Option<String>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("public", &self.shared.public)
            .field("tls", &self.tls.is_some())
            .field("cert_name", &self.cert_name)
            .finish()
    }
}

impl Relay {
    /// Loads/creates the key and the TLS certificate.
    pub fn new(config: Config) -> Result<Relay, Error> {
        let private = match &config.key {
            KeySource::File(p) => keyfile::load_or_create_key(p)?,
            KeySource::Key(k) => k.clone(),
            KeySource::Ephemeral => NodePrivate::generate(),
        };
        let (tls, cert_name) = match tls::server_config(&config.tls)? {
            Some((c, name)) => (Some(tokio_rustls::TlsAcceptor::from(c)), Some(name)),
            None => (None, None),
        };
        let stats = Arc::new(Stats::default());
        Ok(Relay {
            shared: Arc::new(Shared {
                public: private.public(),
                private,
                registry: Registry::new(stats.clone()),
                stats,
                config,
            }),
            tls,
            cert_name,
        })
    }

    /// The server's node key (the `Derp-Public-Key`).
    pub fn public_key(&self) -> NodePublic {
        self.shared.public
    }

    /// For TLS: `sha256-raw:<hex>` of the leaf certificate, to put in a DerpNode's CertName.
    pub fn cert_name(&self) -> Option<&str> {
        self.cert_name.as_deref()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Accepts connections on `listener` until it fails; each runs in its own task.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!("relay accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            Stats::inc(&self.shared.stats.accepted);
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            match &self.tls {
                None => {
                    tokio::spawn(conn::serve_conn(shared, tcp));
                }
                Some(acc) => {
                    let acc = acc.clone();
                    let deadline = shared.config.handshake_timeout;
                    tokio::spawn(async move {
                        if let Ok(Ok(tls)) = tokio::time::timeout(deadline, acc.accept(tcp)).await {
                            conn::serve_conn(shared, tls).await;
                        }
                    });
                }
            }
        }
    }
}

/// Builds a [`Relay`] from `config` and serves `listener` with it.
pub async fn serve(listener: TcpListener, config: Config) -> Result<(), Error> {
    Relay::new(config)?.serve(listener).await
}
