//! `meshgate derp`: the DERP relay (meshgate-relay) and its STUN server (meshgate-stun) on
//! one address, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use meshgate_relay::{Config, KeySource, RateLimit, Relay, TlsMode};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::DerpArgs;

type BoxError = Box<dyn std::error::Error>;

/// The relay's identity, in the state directory.
const KEY_FILE: &str = "derp.key";

pub async fn run(args: DerpArgs) -> Result<(), BoxError> {
    let relay = Relay::new(config(&args)?)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let stun = match args.stun_port {
        0 => None,
        port => {
            let addr = SocketAddr::new(args.listen.ip(), port);
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| format!("STUN on {addr}: {e} (--stun-port 0 runs without)"))?;
            Some((addr, socket))
        }
    };
    tracing::info!(
        listen = %args.listen,
        tls = !args.plain_http,
        stun = ?stun.as_ref().map(|(addr, _)| addr),
        public_key = %relay.public_key(),
        "DERP relay serving"
    );
    if let Some(name) = relay.cert_name() {
        // What a DERP map needs to pin this relay's certificate.
        println!("CertName: {name}");
    }
    if let Some((_, socket)) = stun {
        let stats = Arc::new(meshgate_stun::ServerStats::default());
        tokio::spawn(async move {
            if let Err(e) = meshgate_stun::serve(socket, stats).await {
                tracing::error!("STUN server stopped: {e}");
            }
        });
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        result = relay.serve(listener) => result?,
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    let stats = relay.stats();
    tracing::info!(?stats, "DERP relay stopping");
    Ok(())
}

fn config(args: &DerpArgs) -> Result<Config, String> {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ if args.self_signed => TlsMode::SelfSigned {
            names: args.hostname.clone(),
        },
        _ if args.plain_http => TlsMode::Plain,
        _ => return Err("choose --cert/--key, --self-signed or --plain-http".to_owned()),
    };
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("{}: {e}", args.state_dir.display()))?;
    let rate_limit = args.rate_limit.map(|bytes_per_sec| RateLimit {
        bytes_per_sec,
        burst_bytes: args.rate_burst.unwrap_or(bytes_per_sec),
    });
    Ok(Config {
        tls,
        key: KeySource::File(args.state_dir.join(KEY_FILE)),
        rate_limit,
        ..Config::default()
    })
}
