//! Userspace WireGuard (Debian's wireguard-go) over its UAPI socket: the fallback for kernels
//! without the WireGuard module, and an independent peer for tests.

pub(crate) mod codec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::device::DeviceState;
use crate::diff::DeviceUpdate;
use crate::error::Error;

/// Where wireguard-go puts its control sockets. The directory is shared by every network
/// namespace on the host, so userspace interface names must be unique host-wide.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The program started for a new userspace interface, unless `MESHGATE_WIREGUARD_GO` names
/// another.
pub const DEFAULT_PROGRAM: &str = "wireguard-go";

#[derive(Debug, Clone)]
pub struct UserspaceWg {
    socket: PathBuf,
}

impl UserspaceWg {
    pub fn socket_path(ifname: &str) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
    }

    /// The daemon serving `ifname`, if its socket answers.
    pub async fn find(ifname: &str) -> Option<Self> {
        let socket = Self::socket_path(ifname);
        UnixStream::connect(&socket).await.ok()?;
        Some(UserspaceWg { socket })
    }

    /// Starts wireguard-go for `ifname` in the calling thread's network namespace. It detaches
    /// itself, so the interface outlives this process as a kernel interface would.
    pub async fn start(ifname: &str) -> Result<Self, Error> {
        let program =
            std::env::var("MESHGATE_WIREGUARD_GO").unwrap_or_else(|_| DEFAULT_PROGRAM.into());
        let output = tokio::process::Command::new(&program)
            .arg(ifname)
            .env_remove("WG_PROCESS_FOREGROUND")
            // Its own process group: a Ctrl-C or group kill aimed at the agent must not take
            // the data plane down with it.
            .process_group(0)
            .output()
            .await
            .map_err(|e| Error::NoWireGuard(format!("cannot run {program}: {e}")))?;
        if !output.status.success() {
            return Err(Error::NoWireGuard(format!(
                "{program} {ifname} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        for _ in 0..50 {
            if let Some(found) = Self::find(ifname).await {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Uapi {
            socket: Self::socket_path(ifname).display().to_string(),
            reason: format!("{program} started but its socket never answered"),
        })
    }

    pub async fn get(&self) -> Result<DeviceState, Error> {
        let reply = self.exchange(codec::GET_REQUEST).await?;
        codec::decode_get(&reply).map_err(|reason| self.error(reason))
    }

    /// Writes `update` as one UAPI transaction; returns the number of requests (0 or 1).
    pub async fn set(&self, update: &DeviceUpdate) -> Result<usize, Error> {
        if update.is_empty() {
            return Ok(0);
        }
        let reply = self.exchange(&codec::encode_set(update)).await?;
        codec::decode_errno(&reply).map_err(|reason| self.error(reason))?;
        Ok(1)
    }

    async fn exchange(&self, request: &str) -> Result<String, Error> {
        let io = |e: std::io::Error| self.error(e.to_string());
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        // A reply ends with an empty line; the daemon keeps the connection open for more.
        while !reply.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(reply).map_err(|_| self.error("reply is not UTF-8".into()))
    }

    fn error(&self, reason: String) -> Error {
        Error::Uapi {
            socket: self.socket.display().to_string(),
            reason,
        }
    }
}
