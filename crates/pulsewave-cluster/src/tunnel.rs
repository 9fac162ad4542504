//! Tunnels: one client's signaling WebSocket carried between the node the
//! client is connected to (the relay) and the node that owns its room.
//!
//! A [`TunnelEnd`] sends and receives [`TunnelFrame`]s. On the relay, the
//! frames come from and go to the client's WebSocket; on the owner, they
//! feed a real signaling session. [`TunnelFrame::Lost`] is the last frame
//! an end receives when the tunnel died without a close (the peer node is
//! gone, the Redis connection was lost, or the peer fell silent).

use pulsewave_auth::Claims;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::ClusterError;

/// Frames queued towards one tunnel end before it is declared too slow.
pub(crate) const TUNNEL_QUEUE: usize = 1024;

/// One WebSocket frame carried through a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelFrame {
    /// A text message (a signaling message, JSON).
    Text(String),
    /// A binary frame. Its content is not carried: the protocol refuses
    /// binary frames, and the owner answers with the usual error.
    Binary,
    /// A WebSocket ping (owner to relay: ping the client).
    Ping,
    /// A WebSocket pong (relay to owner: the client answered).
    Pong,
    /// The other end closed the connection.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The tunnel died without a close: the peer node is gone, the Redis
    /// connection was lost, or nothing was heard for too long. Only ever
    /// received, as the last frame.
    Lost,
}

/// One end of a tunnel.
#[derive(Debug)]
pub struct TunnelEnd {
    id: String,
    peer: String,
    tx: mpsc::Sender<TunnelFrame>,
    rx: mpsc::Receiver<TunnelFrame>,
}

impl TunnelEnd {
    pub(crate) fn new(
        id: String,
        peer: String,
        tx: mpsc::Sender<TunnelFrame>,
        rx: mpsc::Receiver<TunnelFrame>,
    ) -> Self {
        Self { id, peer, tx, rx }
    }

    /// Two ends joined in memory, without Redis: what one sends the other
    /// receives. For tests of code that runs over tunnels.
    pub fn memory_pair(id: &str) -> (TunnelEnd, TunnelEnd) {
        let (a_tx, b_rx) = mpsc::channel(TUNNEL_QUEUE);
        let (b_tx, a_rx) = mpsc::channel(TUNNEL_QUEUE);
        (
            TunnelEnd::new(id.to_owned(), "memory-b".into(), a_tx, a_rx),
            TunnelEnd::new(id.to_owned(), "memory-a".into(), b_tx, b_rx),
        )
    }

    /// The tunnel id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Id of the node at the other end.
    pub fn peer_node(&self) -> &str {
        &self.peer
    }

    /// Sends a frame to the other end, in order. Waits when the outgoing
    /// queue is full.
    pub async fn send(&self, frame: TunnelFrame) -> Result<(), ClusterError> {
        self.tx
            .send(frame)
            .await
            .map_err(|_| ClusterError::TunnelClosed)
    }

    /// The next frame from the other end; `None` when the tunnel is gone.
    pub async fn recv(&mut self) -> Option<TunnelFrame> {
        self.rx.recv().await
    }

    /// The sending and receiving halves. Dropping every sender closes the
    /// tunnel: the other end gets a [`TunnelFrame::Close`] if none was sent.
    pub fn into_channels(self) -> (mpsc::Sender<TunnelFrame>, mpsc::Receiver<TunnelFrame>) {
        (self.tx, self.rx)
    }
}

/// A tunnel another node opened towards this one: a client connected there
/// for a room that lives here.
#[derive(Debug)]
pub struct IncomingTunnel {
    /// The room the client's token grants.
    pub room: String,
    /// The claims of the client's access token, verified by the relaying
    /// node. They are trusted because the tunnel's `open` message carries a
    /// valid signature under the cluster key from a registered node; the
    /// token itself never travels through Redis.
    pub claims: Claims,
    /// The tunnel.
    pub end: TunnelEnd,
}

/// What a tunnel message does: the body of a signed message on a node
/// channel (`pw:node:<id>:in` / `pw:node:<id>:out`); the tunnel id and the
/// sender are in the signed header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Op {
    /// Relay to owner: a client holding a token with these (verified)
    /// claims connected for `room`.
    Open { room: String, claims: Box<Claims> },
    /// Owner to relay: the session runs.
    Opened,
    /// A text frame.
    Msg { text: String },
    /// A binary frame (content not carried).
    Binary,
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// Keepalive: the tunnel is alive at the sender.
    Ka,
    /// The sender closed the tunnel.
    Close { code: u16, reason: String },
}

impl Op {
    /// The op carrying `frame`; `None` for [`TunnelFrame::Lost`], which is
    /// never sent.
    pub(crate) fn from_frame(frame: TunnelFrame) -> Option<Op> {
        Some(match frame {
            TunnelFrame::Text(text) => Op::Msg { text },
            TunnelFrame::Binary => Op::Binary,
            TunnelFrame::Ping => Op::Ping,
            TunnelFrame::Pong => Op::Pong,
            TunnelFrame::Close { code, reason } => Op::Close { code, reason },
            TunnelFrame::Lost => return None,
        })
    }

    /// The frame this op delivers; `None` for control ops.
    pub(crate) fn into_frame(self) -> Option<TunnelFrame> {
        Some(match self {
            Op::Msg { text } => TunnelFrame::Text(text),
            Op::Binary => TunnelFrame::Binary,
            Op::Ping => TunnelFrame::Ping,
            Op::Pong => TunnelFrame::Pong,
            Op::Close { code, reason } => TunnelFrame::Close { code, reason },
            Op::Open { .. } | Op::Opened | Op::Ka => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_tagged_json() {
        let op = Op::Msg {
            text: "{\"type\":\"ping\"}".into(),
        };
        let json = serde_json::to_string(&op).unwrap_or_default();
        assert_eq!(json, r#"{"op":"msg","text":"{\"type\":\"ping\"}"}"#);
        let back: Op = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, op);
        let open: Op = serde_json::from_str(
            r#"{"op":"open","room":"r","claims":{"sub":"alice","exp":2000000000,"video":{"room":"r","roomJoin":true}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&open, Op::Open { room, claims } if room == "r" && claims.sub == "alice" && claims.video.room_join)
        );
        let close: Op = serde_json::from_str(r#"{"op":"close","code":1000,"reason":"bye"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            close.into_frame(),
            Some(TunnelFrame::Close {
                code: 1000,
                reason: "bye".into()
            })
        );
    }

    #[tokio::test]
    async fn memory_pair_carries_frames_both_ways() {
        let (mut a, mut b) = TunnelEnd::memory_pair("t");
        a.send(TunnelFrame::Text("hi".into())).await.ok();
        assert_eq!(b.recv().await, Some(TunnelFrame::Text("hi".into())));
        b.send(TunnelFrame::Ping).await.ok();
        assert_eq!(a.recv().await, Some(TunnelFrame::Ping));
        drop(b);
        assert_eq!(a.recv().await, None);
    }
}
