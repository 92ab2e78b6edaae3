//! Kernel WireGuard over its generic netlink family ("wireguard").

pub(crate) mod decode;
pub(crate) mod encode;

use std::io;

use futures::StreamExt;
use genetlink::{GenetlinkError, GenetlinkHandle};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd, WireguardMessage};

use crate::device::DeviceState;
use crate::diff::DeviceUpdate;
use crate::error::Error;

/// A connection to the kernel's WireGuard family (clones share it).
#[derive(Debug, Clone)]
pub struct KernelWg {
    handle: GenetlinkHandle,
}

impl KernelWg {
    /// Opens a generic netlink socket in the calling thread's network namespace. Must be called
    /// within a tokio runtime: the socket's reader runs as a task on it.
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) = genetlink::new_connection()
            .map_err(|e| Error::netlink("opening generic netlink", e))?;
        tokio::spawn(connection);
        Ok(KernelWg { handle })
    }

    pub async fn get(&mut self, ifname: &str) -> Result<DeviceState, Error> {
        let context = format!("reading WireGuard device {ifname}");
        let request = message(
            WireguardCmd::GetDevice,
            vec![WireguardAttribute::IfName(ifname.to_string())],
            NLM_F_REQUEST | NLM_F_DUMP,
        );
        let replies = self.exchange(&context, request).await?;
        decode::decode(replies)
    }

    /// Writes `update` in as few netlink messages as fit; returns how many were sent.
    pub async fn set(&mut self, ifname: &str, update: &DeviceUpdate) -> Result<usize, Error> {
        if update.is_empty() {
            return Ok(0);
        }
        let context = format!("configuring WireGuard device {ifname}");
        let messages = encode::encode(ifname, update, encode::MESSAGE_BUDGET);
        let count = messages.len();
        for attributes in messages {
            let request = message(
                WireguardCmd::SetDevice,
                attributes,
                NLM_F_REQUEST | NLM_F_ACK,
            );
            self.exchange(&context, request).await?;
        }
        Ok(count)
    }

    async fn exchange(
        &mut self,
        context: &str,
        request: NetlinkMessage<GenlMessage<WireguardMessage>>,
    ) -> Result<Vec<Vec<WireguardAttribute>>, Error> {
        let mut replies = self
            .handle
            .request(request)
            .await
            .map_err(|e| genl_error(context, e))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            let reply = reply.map_err(|e| Error::NetlinkReply {
                context: context.to_string(),
                reason: e.to_string(),
            })?;
            match reply.payload {
                NetlinkPayload::InnerMessage(genl) => out.push(genl.payload.attributes),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::netlink(context, e.to_io()));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn message(
    cmd: WireguardCmd,
    attributes: Vec<WireguardAttribute>,
    flags: u16,
) -> NetlinkMessage<GenlMessage<WireguardMessage>> {
    let mut message = NetlinkMessage::from(GenlMessage::from_payload(WireguardMessage {
        cmd,
        attributes,
    }));
    message.header.flags = flags;
    message
}

fn genl_error(context: &str, error: GenetlinkError) -> Error {
    match error {
        GenetlinkError::NetlinkError(e) => Error::netlink(context, e),
        other => Error::netlink(context, io::Error::other(other.to_string())),
    }
}
