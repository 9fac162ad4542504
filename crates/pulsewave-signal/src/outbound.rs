//! The queue of messages towards one WebSocket client.

use std::sync::Arc;

use pulsewave_protocol::{DisconnectReason, RequestId, ServerMessage, encode_server};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One item for a client's socket writer.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// An encoded message.
    Text(Utf8Bytes),
    /// Tell the client why, then close the socket.
    Disconnect(DisconnectReason),
    /// The participant's name, metadata, attributes or permissions changed
    /// in the room (server API): the session updates its claims and sends
    /// a `token-refresh` carrying them. Never written to the socket.
    Grants(Box<GrantUpdate>),
}

/// A participant as the room has it after a change, for the session's
/// claims (and so for the tokens it refreshes).
#[derive(Debug, Clone)]
pub(crate) struct GrantUpdate {
    pub(crate) name: String,
    pub(crate) metadata: String,
    pub(crate) attributes: std::collections::BTreeMap<String, String>,
    pub(crate) permission: pulsewave_protocol::ParticipantPermission,
}

/// Sending half of a client's queue. Cheap to clone. Sending never blocks: a
/// client whose queue is full is too slow to keep up and is disconnected, so
/// it cannot hold up the room.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<Outgoing>,
    overflow: Arc<Notify>,
}

/// Receiving half, owned by the session.
#[derive(Debug)]
pub(crate) struct OutboundRx {
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    pub(crate) overflow: Arc<Notify>,
}

/// A queue of `capacity` messages.
pub(crate) fn channel(capacity: usize) -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Notify::new());
    (
        Outbound {
            tx,
            overflow: overflow.clone(),
        },
        OutboundRx { rx, overflow },
    )
}

/// Encodes a message once, for sending to one or many clients.
pub(crate) fn encode(message: &ServerMessage, request_id: Option<&RequestId>) -> Utf8Bytes {
    Utf8Bytes::from(encode_server(message, request_id))
}

impl Outbound {
    /// Queues an encoded message. Returns false if the client is gone or too
    /// slow (it is then disconnected).
    pub(crate) fn send_encoded(&self, text: Utf8Bytes) -> bool {
        self.push(Outgoing::Text(text))
    }

    /// Encodes and queues a message.
    pub(crate) fn send(&self, message: &ServerMessage, request_id: Option<&RequestId>) -> bool {
        self.send_encoded(encode(message, request_id))
    }

    /// Queues a message that may be dropped when the client is behind
    /// (lossy data): a full queue drops it without disconnecting.
    pub(crate) fn send_lossy(&self, text: Utf8Bytes) {
        let _ = self.tx.try_send(Outgoing::Text(text));
    }

    /// Hands the session the participant's new grants (see
    /// [`Outgoing::Grants`]).
    pub(crate) fn update_grants(&self, update: GrantUpdate) -> bool {
        self.push(Outgoing::Grants(Box::new(update)))
    }

    /// Tells the client why it is disconnected and closes its socket.
    pub(crate) fn disconnect(&self, reason: DisconnectReason) {
        if self.tx.try_send(Outgoing::Disconnect(reason)).is_err() {
            self.overflow.notify_one();
        }
    }

    fn push(&self, item: Outgoing) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether `other` is a clone of this queue (the same session).
    pub(crate) fn same_channel(&self, other: &Outbound) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Whether the client's session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
