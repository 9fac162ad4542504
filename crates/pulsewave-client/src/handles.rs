//! Handles on published tracks, subscriptions and data channels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pulsewave_protocol::rtp::{MediaKind, RtpParameters};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, ProducerId, TrackInfo, TrackSid,
};
use tokio::sync::mpsc;

use crate::driver::{Command, TransportHandle};
use crate::error::ClientError;
use crate::peer::LocalTrack;
use crate::synthetic::{SyntheticConfig, SyntheticPacket, SyntheticSource};

/// Where a published track currently lives: its transport task, its mid
/// and its producer. A reconnection republishes the track and updates it.
#[derive(Debug)]
pub(crate) struct TrackLink {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) mid: String,
    pub(crate) producer_id: ProducerId,
}

/// A published track: its producer id and a way to send RTP on it.
#[derive(Debug)]
pub struct LocalTrackHandle {
    pub(crate) producer_id: ProducerId,
    pub(crate) track: TrackInfo,
    pub(crate) local: LocalTrack,
    pub(crate) next_seq: u64,
    pub(crate) link: Arc<Mutex<TrackLink>>,
    /// True while the client reconnects: packets are dropped, not errors.
    pub(crate) reconnecting: Arc<AtomicBool>,
}

impl LocalTrackHandle {
    /// The producer id (for `mute`, `unpublish`, and others' `subscribe`)
    /// given by the first `published`; see
    /// [`current_producer_id`](Self::current_producer_id) after a
    /// reconnection.
    pub fn producer_id(&self) -> &ProducerId {
        &self.producer_id
    }

    /// The producer id now: a new one after each reconnection that
    /// republished the track.
    pub fn current_producer_id(&self) -> ProducerId {
        self.link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .producer_id
            .clone()
    }

    /// The track as the server describes it.
    pub fn info(&self) -> &TrackInfo {
        &self.track
    }

    /// Mid, SSRCs, payload type, clock rate and RTP parameters, as first
    /// published (a reconnection republishes on a new transport).
    pub fn local(&self) -> &LocalTrack {
        &self.local
    }

    /// The sequence number the next packet gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sends one RTP packet with the next sequence number; waits when the
    /// transport's command queue is full. Returns the sequence number used.
    /// Packets written before the transport connects, or after it lost the
    /// connection, are dropped by the transport.
    pub async fn send_rtp(
        &mut self,
        payload: impl Into<Arc<[u8]>>,
        rtp_time: u32,
        marker: bool,
    ) -> Result<u64, ClientError> {
        let seq_no = self.next_seq;
        let (commands, mid) = {
            let link = self.link.lock().unwrap_or_else(|p| p.into_inner());
            (link.commands.clone(), link.mid.clone())
        };
        let sent = commands
            .send(Command::WriteRtp {
                mid,
                seq_no,
                rtp_time,
                marker,
                payload: payload.into(),
            })
            .await;
        // While the client reconnects the old transport is gone: the packet
        // is dropped, as before a transport connects.
        if sent.is_err() && !self.reconnecting.load(Ordering::Relaxed) {
            return Err(ClientError::Closed);
        }
        self.next_seq += 1;
        Ok(seq_no)
    }

    /// Sends a packet made by a [`SyntheticSource`].
    pub async fn send_synthetic(&mut self, packet: &SyntheticPacket) -> Result<u64, ClientError> {
        self.send_rtp(packet.payload.clone(), packet.rtp_time, packet.marker)
            .await
    }

    /// A synthetic source suited to this track's codec and clock rate.
    pub fn synthetic_source(&self) -> SyntheticSource {
        let mut config = SyntheticConfig::for_mime(&self.local.mime_type);
        config.clock_rate = self.local.clock_rate;
        SyntheticSource::new(config)
    }
}

/// A subscription.
#[derive(Clone, Debug)]
pub struct RemoteTrack {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The producer.
    pub producer_id: ProducerId,
    /// The track sid.
    pub track_sid: TrackSid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Publisher identity.
    pub participant_identity: String,
    /// The consumer's RTP parameters (router payload types).
    pub rtp_parameters: RtpParameters,
    /// The consumer's mid on the receive transport.
    pub mid: String,
    /// The consumer's media SSRC.
    pub ssrc: u32,
    /// The consumer's RTX SSRC.
    pub rtx_ssrc: Option<u32>,
    pub(crate) transport: TransportHandle,
}

impl RemoteTrack {
    /// Asks the server for a keyframe (RTCP PLI; video only).
    pub async fn request_keyframe(&self) -> Result<(), ClientError> {
        let consumer_id = self.consumer_id.clone();
        self.transport
            .call(|reply| Command::RequestKeyframe { consumer_id, reply })
            .await
    }
}

/// A data channel we publish.
#[derive(Clone, Debug)]
pub struct DataChannelHandle {
    /// The data producer id.
    pub data_producer_id: DataProducerId,
    /// SCTP stream id on the send transport.
    pub stream_id: u16,
    /// Label.
    pub label: String,
    pub(crate) transport: TransportHandle,
}

impl DataChannelHandle {
    /// Sends a message. `Ok(false)`: the channel's buffer is full.
    /// [`ClientError::NotConnected`] until the channel opened
    /// ([`ClientEvent::DataChannelOpen`](crate::ClientEvent::DataChannelOpen)).
    pub async fn send(&self, binary: bool, data: &[u8]) -> Result<bool, ClientError> {
        let stream_id = self.stream_id;
        let data = data.to_vec();
        self.transport
            .call(|reply| Command::SendData {
                stream_id,
                binary,
                data,
                reply,
            })
            .await
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: &str) -> Result<bool, ClientError> {
        self.send(false, text.as_bytes()).await
    }
}

/// A data channel we receive.
#[derive(Clone, Debug)]
pub struct DataSubscription {
    /// The data consumer id.
    pub data_consumer_id: DataConsumerId,
    /// The data producer id.
    pub data_producer_id: DataProducerId,
    /// SCTP stream id on the receive transport (chosen by the server).
    pub stream_id: u16,
    /// Label.
    pub label: String,
    /// Publisher identity.
    pub participant_identity: String,
    pub(crate) transport: TransportHandle,
}
