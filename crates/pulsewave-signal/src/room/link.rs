//! A participant's link to its client: the WebSocket queue while one is
//! attached, the numbering of room messages (`seq`) and the bounded replay
//! buffer that lets a client whose socket dropped resume its session.
//!
//! Only the room actor touches a link. It sends through `&self` from many
//! places (broadcasts iterate the participant list), so the numbering state
//! sits behind a `Mutex` that is never contended (one task) and never held
//! across an `.await`; a `Mutex` rather than a `RefCell` only so that the
//! actor's future stays `Send`. Nothing here is on the media forwarding
//! path.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pulsewave_protocol::{DisconnectReason, RequestId, ServerMessage};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::outbound::{Outbound, encode};

/// Bytes of a resume token's random part.
const TOKEN_LEN: usize = 32;
/// Most bytes of messages kept for replay per participant, whatever their
/// count: large reliable data messages push the oldest out sooner.
pub(crate) const MAX_BUFFER_BYTES: usize = 256 << 10;

/// Why a resume was refused (the text goes into the `error` message).
pub(crate) type Refusal = &'static str;

#[derive(Debug)]
struct Numbering {
    /// The `seq` of the last numbered message (0: none yet).
    seq: u64,
    /// The last `capacity` numbered messages (at most `MAX_BUFFER_BYTES`),
    /// oldest first.
    buffer: VecDeque<(u64, Utf8Bytes)>,
    /// Bytes in `buffer`.
    bytes: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Link {
    /// The last session's queue: written to while attached, kept while
    /// detached only to recognize that session's late `Leave`/`Detach`.
    outbound: Outbound,
    /// When the session's socket went away, while detached.
    detached_at: Option<Instant>,
    /// The secret a resume must present (empty: resume is off).
    token: String,
    /// How many messages are kept for replay (0: resume is off, messages
    /// carry no `seq`).
    capacity: usize,
    numbering: Mutex<Numbering>,
}

impl Link {
    /// A link attached to `outbound`; `capacity` 0 turns resume off.
    pub(crate) fn new(outbound: Outbound, capacity: usize) -> Self {
        Link {
            outbound,
            detached_at: None,
            token: if capacity > 0 {
                pulsewave_protocol::random_string(TOKEN_LEN)
            } else {
                String::new()
            },
            capacity,
            numbering: Mutex::new(Numbering {
                seq: 0,
                buffer: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    fn numbering(&self) -> MutexGuard<'_, Numbering> {
        // Never poisoned in practice: nothing here panics while holding it.
        self.numbering.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current resume token, if resume is on.
    pub(crate) fn token(&self) -> Option<String> {
        (!self.token.is_empty()).then(|| self.token.clone())
    }

    /// Queues an encoded room message: numbered and kept for replay when
    /// resume is on; dropped (but kept) while detached. Returns false if the
    /// client is gone or too slow.
    pub(crate) fn send_encoded(&self, text: Utf8Bytes) -> bool {
        let text = if self.capacity > 0 {
            let mut n = self.numbering();
            n.seq += 1;
            let seq = n.seq;
            let numbered = with_seq(&text, seq);
            n.bytes += numbered.len();
            n.buffer.push_back((seq, numbered.clone()));
            while n.buffer.len() > self.capacity
                || (n.bytes > MAX_BUFFER_BYTES && n.buffer.len() > 1)
            {
                if let Some((_, old)) = n.buffer.pop_front() {
                    n.bytes -= old.len();
                }
            }
            numbered
        } else {
            text
        };
        match self.attached() {
            Some(o) => o.send_encoded(text),
            None => true,
        }
    }

    /// Encodes and queues a room message.
    pub(crate) fn send(&self, message: &ServerMessage, request_id: Option<&RequestId>) -> bool {
        self.send_encoded(encode(message, request_id))
    }

    /// Queues a message outside the numbering (the reply to `join`, lossy
    /// data): never replayed; dropped while detached.
    pub(crate) fn send_unnumbered(&self, text: Utf8Bytes, lossy: bool) {
        if let Some(o) = self.attached() {
            if lossy {
                o.send_lossy(text);
            } else {
                o.send_encoded(text);
            }
        }
    }

    /// Hands the attached session the participant's new grants.
    pub(crate) fn update_grants(&self, update: crate::outbound::GrantUpdate) {
        if let Some(o) = self.attached() {
            o.update_grants(update);
        }
    }

    /// Tells the attached client why it is disconnected.
    pub(crate) fn disconnect(&self, reason: DisconnectReason) {
        if let Some(o) = self.attached() {
            o.disconnect(reason);
        }
    }

    /// Whether the attached session ended without telling the room.
    pub(crate) fn is_closed(&self) -> bool {
        self.attached().is_some_and(Outbound::is_closed)
    }

    /// The session's queue while attached.
    fn attached(&self) -> Option<&Outbound> {
        self.detached_at.is_none().then_some(&self.outbound)
    }

    /// Whether `outbound` belongs to the session this link was last
    /// attached to (attached now, or detached from it).
    pub(crate) fn is_attached_to(&self, outbound: &Outbound) -> bool {
        self.outbound.same_channel(outbound)
    }

    /// When the link went detached, if it is.
    pub(crate) fn detached_at(&self) -> Option<Instant> {
        self.detached_at
    }

    /// Stops writing to the session's queue; messages are kept for replay
    /// from now.
    pub(crate) fn detach(&mut self, now: Instant) {
        self.detached_at.get_or_insert(now);
    }

    /// Checks a resume's credentials and that every message after
    /// `last_seq` is still buffered.
    pub(crate) fn check_resume(&self, token: &str, last_seq: u64) -> Result<(), Refusal> {
        if self.token.is_empty() || !constant_time_eq(self.token.as_bytes(), token.as_bytes()) {
            return Err("the resume credentials do not match this session");
        }
        let n = self.numbering();
        if last_seq > n.seq {
            return Err("`lastSeq` is ahead of what the server sent");
        }
        if last_seq < n.seq
            && n.buffer
                .front()
                .is_none_or(|(first, _)| *first > last_seq + 1)
        {
            return Err("messages the client missed are no longer buffered");
        }
        Ok(())
    }

    /// Attaches a new session's queue after [`check_resume`](Self::check_resume):
    /// rotates the token, tells the old session (if still attached) that it
    /// was replaced, and returns the new token and the messages after
    /// `last_seq`, in order, for the caller to send after `resumed`.
    pub(crate) fn resume(&mut self, outbound: Outbound, last_seq: u64) -> (String, Vec<Utf8Bytes>) {
        let old = std::mem::replace(&mut self.outbound, outbound);
        if self.detached_at.take().is_none() {
            old.disconnect(DisconnectReason::DuplicateIdentity);
        }
        self.token = pulsewave_protocol::random_string(TOKEN_LEN);
        let missed = self
            .numbering()
            .buffer
            .iter()
            .filter(|(seq, _)| *seq > last_seq)
            .map(|(_, text)| text.clone())
            .collect();
        (self.token.clone(), missed)
    }

    /// Sends `resumed` and then the missed messages, bypassing the
    /// numbering (they already carry their `seq`).
    pub(crate) fn send_replay(&self, resumed: Utf8Bytes, missed: Vec<Utf8Bytes>) {
        if let Some(o) = self.attached() {
            o.send_encoded(resumed);
            for text in missed {
                o.send_encoded(text);
            }
        }
    }
}

/// `text` (a JSON object) with `"seq":n` added as its last field.
fn with_seq(text: &Utf8Bytes, seq: u64) -> Utf8Bytes {
    let s = text.as_str();
    match s.strip_suffix('}') {
        Some(head) if head.len() > 1 => Utf8Bytes::from(format!("{head},\"seq\":{seq}}}")),
        Some(_) => Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        None => text.clone(),
    }
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound;

    #[test]
    fn numbers_buffers_and_replays_in_order() {
        let (tx, _rx) = outbound::channel(16);
        let mut link = Link::new(tx, 2);
        for i in 0..3 {
            link.send_encoded(Utf8Bytes::from(format!("{{\"type\":\"x\",\"i\":{i}}}")));
        }
        let token = link.token().unwrap_or_default();
        assert!(link.check_resume("nope", 3).is_err());
        // Message 1 fell out of the buffer of 2.
        assert!(link.check_resume(&token, 0).is_err());
        assert!(link.check_resume(&token, 4).is_err());
        assert!(link.check_resume(&token, 1).is_ok());
        link.detach(Instant::now());
        link.send_encoded(Utf8Bytes::from_static("{\"type\":\"y\"}"));
        let (tx2, _rx2) = outbound::channel(16);
        let (new_token, missed) = link.resume(tx2, 2);
        assert_ne!(new_token, token);
        let missed: Vec<&str> = missed.iter().map(Utf8Bytes::as_str).collect();
        assert_eq!(
            missed,
            [
                "{\"type\":\"x\",\"i\":2,\"seq\":3}",
                "{\"type\":\"y\",\"seq\":4}"
            ]
        );
        assert!(link.check_resume(&token, 4).is_err());
    }
}
