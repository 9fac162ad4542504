//! The forwarding path: RTP from a producer to its consumers, and data
//! channel messages from a data producer to its data consumers.

use std::time::Instant;

use str0m::channel::ChannelId;
use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};

use crate::event::Event;
use crate::keyframe::VideoCodec;
use crate::media::{Producer, ProducerKey};
use crate::rate::PACKET_OVERHEAD;
use crate::registry::Registry;
use crate::transport::{RxSsrc, Transport, TransportKey, drain};
use crate::vp8::{Verdict, Vp8Info, keyframe_size};

use super::Room;

impl Room {
    /// The forwarding path: one RTP packet from a producer to each of its
    /// consumers, with payload type, ssrc, sequence number and timestamp
    /// rewritten per consumer. The payload is shared, not copied; nothing is
    /// allocated per consumer.
    pub(super) fn forward(&mut self, now: Instant, key: TransportKey, pkt: RtpPacket) {
        if let Some(pkey) = self.forward_packet(now, key, &pkt) {
            // A consumer waits for a keyframe: ask now, or when the throttle
            // allows.
            self.request_keyframe(now, pkey);
        }
    }

    /// Forwards `pkt`; returns its producer when a keyframe is wanted.
    fn forward_packet(
        &mut self,
        now: Instant,
        key: TransportKey,
        pkt: &RtpPacket,
    ) -> Option<ProducerKey> {
        let max_ssrcs = self.config.max_ssrcs_per_transport;
        let Room {
            transports,
            producers,
            consumers,
            stats,
            out,
            events,
            ..
        } = self;
        let ssrc = *pkt.header.ssrc;
        let t = transports.get_mut(key)?;
        let (pkey, layer) = match t.rx_ssrcs.get(&ssrc).copied() {
            Some(RxSsrc {
                producer,
                layer: Some(layer),
            }) => (producer, layer),
            // str0m hands RTX over unwrapped, on the media ssrc.
            Some(RxSsrc { layer: None, .. }) => return None,
            // A simulcast layer announces itself with its mid and rid on its
            // first packets: bind its ssrc once.
            None => learn_layer(t, producers, ssrc, pkt, max_ssrcs)?,
        };
        // The publisher's budget: a flood is dropped here, before it costs
        // any subscriber anything.
        if !t.ingress.take(now, pkt.payload.len() as f64) {
            stats.rtp_ingress_dropped += 1;
            return None;
        }
        let p = producers.get_mut(pkey)?;
        stats.rtp_in += 1;
        p.packets += 1;
        p.bytes += pkt.payload.len() as u64;
        if let Some(level) = pkt.header.ext_vals.audio_level {
            p.speech.observe(level); // active speakers (speaker.rs)
        }
        // VP8 descriptors are read once per packet, for every consumer.
        let vp8 = match p.video {
            Some(VideoCodec::Vp8) => Vp8Info::parse(&pkt.payload),
            _ => None,
        };
        let keyframe = match &vp8 {
            Some(info) => info.start && p.video.is_some_and(|c| c.is_keyframe_start(&pkt.payload)),
            None => p.video.is_none_or(|c| c.is_keyframe_start(&pkt.payload)),
        };
        if let Some(l) = p.layers.get_mut(layer) {
            if !l.is_live(now) {
                // A layer (re)appeared: its consumers' allocations change.
                for &ckey in &p.consumers {
                    if let Some(c) = consumers.get(ckey)
                        && let Some(u) = transports.get_mut(c.transport)
                    {
                        out.want_allocation(c.transport, u);
                    }
                }
            }
            l.last_packet = Some(now);
            l.link.observe(now, *pkt.seq_no, pkt.header.timestamp); // quality.rs
            let tid = vp8.as_ref().and_then(|v| v.tid).unwrap_or(0);
            l.rate.record(now, tid, pkt.payload.len() + PACKET_OVERHEAD);
            if keyframe
                && let Some(info) = &vp8
                && let Some((_, height)) = keyframe_size(&pkt.payload, info)
            {
                l.height = Some(height);
            }
        }
        if p.paused {
            return None;
        }
        // A keyframe on this layer answers any request still waiting for
        // the throttle: drop it, as mediasoup's KeyFrameRequestManager does.
        // (Found by the simulcast tests: packets arriving between a PLI and
        // its keyframe re-armed the wish, and a second, useless PLI went out
        // 500 ms after the switch.)
        if keyframe && layer < 32 {
            p.keyframe_layers &= !(1 << layer);
        }
        let last_layer = p.layers.len().saturating_sub(1);
        let in_pt = *pkt.header.payload_type;
        let in_seq = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let ext_in = &pkt.header.ext_vals;
        // Layers a consumer waits for a keyframe on (bit i: layer i).
        let mut keyframe_needed = 0u32;
        for &ckey in &p.consumers {
            let Some(c) = consumers.get_mut(ckey) else {
                continue;
            };
            if c.paused || c.congested {
                continue;
            }
            // The spatial layer the allocator chose (none yet: nothing).
            let Some((target, _)) = c.target else {
                continue;
            };
            let target = usize::from(target).min(last_layer);
            let Some(u) = transports.get_mut(c.transport) else {
                continue;
            };
            if !u.connected {
                continue;
            }
            let Some(out_pt) = c.map_pt(in_pt) else {
                continue;
            };
            // Forward the consumer's current layer; switch to its target at
            // the target's next keyframe (any packet, for audio).
            let resync = if c.layer == Some(layer) {
                if layer != target && target < 32 {
                    keyframe_needed |= 1 << target;
                }
                c.needs_resync
            } else if layer == target {
                if !keyframe {
                    if target < 32 {
                        keyframe_needed |= 1 << target;
                    }
                    continue;
                }
                c.layer = Some(layer);
                true
            } else {
                continue;
            };
            if resync {
                c.vp8.restart();
            }
            // Temporal layers: whole pictures above the consumer's are
            // dropped, and its sequence numbers close over them.
            let mut patch = None;
            if let Some(info) = &vp8 {
                match c.vp8.packet(in_ts, info) {
                    Verdict::Forward(rewrite) => patch = rewrite.patch,
                    Verdict::Drop => {
                        c.needs_resync = false;
                        c.rewriter.skip(in_seq);
                        continue;
                    }
                    Verdict::Stale => continue,
                }
            }
            c.needs_resync = false;
            let Some((seq, ts)) = c.rewriter.rewrite(in_seq, in_ts, now, resync) else {
                continue;
            };
            if !u.egress.take(now, pkt.payload.len() as f64) {
                stats.rtp_egress_dropped += 1;
                continue;
            }
            let ext = ExtensionValues {
                audio_level: ext_in.audio_level,
                voice_activity: ext_in.voice_activity,
                video_orientation: ext_in.video_orientation,
                ..ExtensionValues::default()
            };
            let mut api = u.rtc.direct_api();
            let Some(stream) = api.stream_tx(&Ssrc::from(c.ssrc)) else {
                continue;
            };
            let mut write = RtpWrite::new(
                Pt::from(out_pt),
                SeqNo::from(seq),
                ts,
                pkt.timestamp,
                pkt.payload.clone(),
            )
            .marker(pkt.header.marker)
            .ext_vals(ext)
            .nackable(c.nackable);
            if let Some(patch) = patch {
                write = write.vp8_patch(patch);
            }
            stream.write_rtp(write);
            // str0m hands a written packet to its pacer, which encrypts and
            // emits it, only on the transport's next timeout input: draining
            // now would poll the whole stack for nothing. Mark the transport
            // due instead: the room's `poll_timeout` is then `now`, and the
            // next `handle_timeout` polls it once for every packet written
            // since (right away, or after a burst of datagrams).
            out.mark_due(c.transport, u);
            c.packets += 1;
            stats.rtp_forwarded += 1;
            // What it forwards changed: tell its subscriber (mediasoup's
            // `layerschange`). Video only; rare.
            if p.video.is_some() {
                let now_layers = Some((layer as u8, c.vp8.current.min(3)));
                if c.reported_layers != now_layers {
                    c.reported_layers = now_layers;
                    stats.layer_switches += 1;
                    events.push_back(Event::ConsumerLayersChanged {
                        consumer_id: c.id.clone(),
                        owner: c.owner,
                        layers: now_layers,
                    });
                }
            }
        }
        p.keyframe_layers |= keyframe_needed;
        (keyframe_needed != 0).then_some(pkey)
    }

    pub(super) fn relay_data(
        &mut self,
        now: Instant,
        key: TransportKey,
        channel: ChannelId,
        binary: bool,
        data: &[u8],
    ) {
        let Room {
            transports,
            data_producers,
            data_consumers,
            out,
            stats,
            config,
            ..
        } = self;
        let Some(dp) = transports
            .get(key)
            .and_then(|t| t.sctp_streams.iter().find(|s| s.channel == channel))
            .and_then(|s| data_producers.get_mut(s.key))
        else {
            return;
        };
        dp.messages += 1;
        // One sender must not be amplified to every subscriber without
        // bound: past its budget, messages are dropped here.
        if !dp.message_budget.take(now, 1.0) || !dp.byte_budget.take(now, data.len() as f64) {
            stats.data_dropped += 1;
            return;
        }
        for &dckey in &dp.consumers {
            let Some(dc) = data_consumers.get(dckey) else {
                continue;
            };
            let Some(u) = transports.get_mut(dc.transport) else {
                continue;
            };
            if let Some(mut ch) = u.rtc.channel(dc.channel)
                && let Ok(true) = ch.write(binary, data)
            {
                stats.data_relayed += 1;
            }
            drain(dc.transport, u, out, config.ice_timeout);
        }
    }
}

/// Binds the ssrc of a packet that carries its mid (and rid) to the
/// producer layer it belongs to: rid-based simulcast layers, and single
/// encodings announced by mid only.
pub(super) fn learn_layer(
    t: &mut Transport,
    producers: &mut Registry<Producer>,
    ssrc: u32,
    pkt: &RtpPacket,
    max_ssrcs: usize,
) -> Option<(ProducerKey, usize)> {
    if t.rx_ssrcs.len() >= max_ssrcs {
        return None;
    }
    let mid = pkt.header.ext_vals.mid?;
    let rid = pkt.header.ext_vals.rid;
    let pkey = t
        .mids
        .iter()
        .find(|(m, _)| m.as_str() == &*mid)
        .map(|(_, k)| *k)?;
    let p = producers.get_mut(pkey)?;
    let layer = p.layers.iter().position(|l| {
        l.ssrc.is_none()
            && match (&l.rid, rid) {
                (Some(want), Some(got)) => want.as_str() == &*got,
                (None, None) => true,
                _ => false,
            }
    })?;
    p.layers[layer].ssrc = Some(ssrc);
    t.rx_ssrcs.insert(
        ssrc,
        RxSsrc {
            producer: pkey,
            layer: Some(layer),
        },
    );
    Some((pkey, layer))
}
