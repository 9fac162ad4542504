//! The room's network inputs: datagrams the endpoint routed to one of its
//! transports, and timers.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::{IceCreds, Input};
use tracing::{debug, trace};

use crate::endpoint::Protocol as Proto;
use crate::event::CloseReason;
use crate::transport::{Timer, TransportKey, drain};

use super::{DatagramError, Room};

/// A datagram the endpoint routed to a transport.
pub(crate) struct Routed<'a> {
    pub(crate) transport: TransportKey,
    pub(crate) proto: Protocol,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) contents: &'a [u8],
    /// For a STUN request found by its ufrag: the sender's ufrag.
    pub(crate) remote_ufrag: Option<&'a str>,
}

impl Room {
    /// Takes a well-formed datagram for one of the room's transports.
    /// Errors only count: the caller drops the datagram.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        d: Routed<'_>,
    ) -> Result<(), DatagramError> {
        let now = self.advance(now);
        let key = d.transport;
        let ice_timeout = self.config.ice_timeout;
        let initial_estimate = self.config.initial_available_outgoing_bitrate;
        let Some(t) = self.transports.get_mut(key) else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::UnknownSource);
        };
        let Ok(datagram) = d.contents.try_into() else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::Malformed);
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: d.proto,
                source: d.source,
                destination: d.destination,
                contents: datagram,
            },
        );
        if let Some(remote) = d.remote_ufrag {
            // A STUN request may only bind its source address or teach the
            // remote ufrag once str0m has checked its MESSAGE-INTEGRITY with
            // the transport's password. (Found by the simulation's
            // garbage-datagram test: a damaged or foreign request from a
            // peer's address rebound that address to another transport.)
            if !t.rtc.accepts(&input) {
                trace!("STUN request failed authentication");
                self.stats.datagrams_dropped += 1;
                return Err(DatagramError::Rejected);
            }
            t.add_remote_addr(key, Proto::from_str0m(d.proto), d.source, &mut self.out);
            if t.remote_ufrag.as_deref() != Some(remote) {
                // mediasoup-client never sends the browser's ufrag: learn it
                // from the first binding request. ICE-lite never sends
                // checks, so the remote password is not needed.
                t.remote_ufrag = Some(remote.to_owned());
                t.rtc.direct_api().set_remote_ice_credentials(IceCreds {
                    ufrag: remote.to_owned(),
                    pass: String::new(),
                });
                if std::mem::take(&mut t.estimate_restart_pending) {
                    // The path after an ICE restart: its estimate starts
                    // here, not at the restart (see `Room::restart_ice`).
                    t.restart_estimate(key, initial_estimate, &mut self.out);
                }
                drain(key, t, &mut self.out, ice_timeout);
            }
        }
        let result = t.rtc.handle_input(input);
        // Only what the stack took counts as a sign of life: spoofed garbage
        // from a peer's address must not keep a dead transport open.
        if result.is_ok() {
            t.last_received = Some(now);
        }
        drain(key, t, &mut self.out, ice_timeout);
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

    /// Runs what is due at `now`: the transports that forwarded packets
    /// wait on, then the timers that came due. Each step costs what is due,
    /// never a scan of the room.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let ice_timeout = self.config.ice_timeout;
        for key in std::mem::take(&mut self.out.due) {
            if let Some(t) = self.transports.get_mut(key)
                && t.due
            {
                t.due = false;
                self.poll_transport(now, key);
            }
        }
        // The timers due now, taken before any runs: one that re-arms at
        // `now` (str0m may ask for its next timeout at the instant it was
        // given) waits for the next call instead of looping here.
        let mut due = std::mem::take(&mut self.due_timers);
        while let Some(entry) = self.out.timers.pop_due(now) {
            due.push(entry);
        }
        for (at, timer) in due.drain(..) {
            match timer {
                Timer::Transport(key) => {
                    let Some(t) = self.transports.get_mut(key) else {
                        continue;
                    };
                    if t.armed == Some(at) {
                        t.armed = None;
                    }
                    if t.next_timeout <= now {
                        self.poll_transport(now, key);
                    }
                    let Some(t) = self.transports.get_mut(key) else {
                        continue;
                    };
                    if t.ice_deadline(ice_timeout).is_some_and(|d| d <= now) {
                        debug!(transport = %t.id, "ICE timed out");
                        self.out.fail(key, t, CloseReason::IceTimeout);
                    } else {
                        self.out.arm(key, t, ice_timeout);
                    }
                }
                Timer::Allocate(key) => {
                    if let Some(t) = self.transports.get_mut(key)
                        && t.bwe.timer == Some(at)
                    {
                        t.bwe.timer = None;
                        self.out.want_allocation(key, t);
                    }
                }
                Timer::Dynacast(pkey) => self.dynacast_timer(pkey, at),
                Timer::Speakers => self.speakers_tick(now),
                Timer::Quality => self.quality_tick(now),
                Timer::Keyframe(pkey) => {
                    if let Some(p) = self.producers.get_mut(pkey)
                        && p.keyframe_timer == Some(at)
                    {
                        p.keyframe_timer = None;
                        self.request_keyframe(now, pkey);
                    }
                }
            }
        }
        self.due_timers = due;
        self.process(now);
    }

    /// Gives one transport its timeout input and drains it.
    fn poll_transport(&mut self, now: Instant, key: TransportKey) {
        let ice_timeout = self.config.ice_timeout;
        if let Some(t) = self.transports.get_mut(key) {
            if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                debug!(transport = %t.id, error = %e, "timeout input failed");
                self.out.fail(key, t, CloseReason::Failed);
            }
            drain(key, t, &mut self.out, ice_timeout);
        }
    }
}
