//! The room's network inputs: datagrams routed to one of its transports,
//! and timers.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::{IceCreds, Input};
use tracing::{debug, trace};

use crate::datagram::is_well_formed;
use crate::event::CloseReason;
use crate::media::ProducerKey;
use crate::transport::{TransportKey, drain};

use super::{DatagramError, Room};

impl Room {
    /// Takes a datagram that arrived on `destination` from `source`. The
    /// room routes it to its transport by ICE username (STUN) or by source
    /// address. Errors only count: the caller drops the datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), DatagramError> {
        let now = self.advance(now);
        // Check the framing first, so that a malformed datagram changes
        // nothing (no address binding, no remote ufrag) and is counted as
        // dropped: str0m itself silently ignores truncated DTLS records and
        // RTP headers (found by the simulation's garbage-datagram test).
        if !is_well_formed(contents) {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::Malformed);
        }
        // Look up without binding: a STUN request may only bind its source
        // address or teach the remote ufrag once str0m has checked its
        // MESSAGE-INTEGRITY with the transport's password. (Found by the
        // simulation's garbage-datagram test: a damaged or foreign request
        // from a peer's address rebound that address to another transport,
        // and the peer's media was dropped until its next consent check.)
        let Some(route) = self.demux.lookup(source, contents) else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::UnknownSource);
        };
        let key = route.key;
        let Some(t) = self.transports.get_mut(key) else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::UnknownSource);
        };
        let Ok(datagram) = contents.try_into() else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::Malformed);
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.config.local_addr,
                contents: datagram,
            },
        );
        if let Some(remote) = route.remote_ufrag {
            if !t.rtc.accepts(&input) {
                trace!("STUN request failed authentication");
                self.stats.datagrams_dropped += 1;
                return Err(DatagramError::Rejected);
            }
            self.demux.bind(source, key);
            if t.remote_ufrag.as_deref() != Some(remote) {
                // mediasoup-client never sends the browser's ufrag: learn it
                // from the first binding request. ICE-lite never sends
                // checks, so the remote password is not needed.
                t.remote_ufrag = Some(remote.to_owned());
                t.rtc.direct_api().set_remote_ice_credentials(IceCreds {
                    ufrag: remote.to_owned(),
                    pass: String::new(),
                });
                drain(key, t, &mut self.transmits, &mut self.rtc_events);
            }
        }
        let result = t.rtc.handle_input(input);
        // Only what the stack took counts as a sign of life: spoofed garbage
        // from a peer's address must not keep a dead transport open.
        if result.is_ok() {
            t.last_received = Some(now);
        }
        drain(key, t, &mut self.transmits, &mut self.rtc_events);
        self.stats.datagrams_in += 1;
        self.process(now);
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                trace!(error = %e, "datagram rejected");
                self.stats.datagrams_dropped += 1;
                Err(DatagramError::Rejected)
            }
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let due: Vec<TransportKey> = self
            .transports
            .iter()
            .filter(|(_, t)| t.next_timeout <= now)
            .map(|(k, _)| k)
            .collect();
        for key in due {
            if let Some(t) = self.transports.get_mut(key) {
                if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                    debug!(transport = %t.id, error = %e, "timeout input failed");
                    t.failed = Some(CloseReason::Failed);
                }
                drain(key, t, &mut self.transmits, &mut self.rtc_events);
            }
        }
        let expired: Vec<TransportKey> = self
            .transports
            .iter()
            .filter(|(_, t)| self.ice_deadline(t).is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(t) = self.transports.get_mut(key) {
                debug!(transport = %t.id, "ICE timed out");
                t.failed = Some(CloseReason::IceTimeout);
            }
        }
        let wanted: Vec<ProducerKey> = self
            .producers
            .iter()
            .filter(|(_, p)| p.keyframe_layers != 0)
            .map(|(k, _)| k)
            .collect();
        for key in wanted {
            self.request_keyframe(now, key);
        }
        self.process(now);
    }
}
