//! Media requests of a room: transports, tracks, subscriptions, data
//! channels. The room actor runs them on the room's media worker and turns
//! the results and the media events into messages.

use pulsewave_core::{
    AppData, Error as RoomError, Event as MediaEvent, Owner, StateChange, TransportAllocation, View,
};
use pulsewave_media::{MediaError, MediaRoom};
use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{DtlsParameters, SctpStreamParameters, TransportDirection};
use pulsewave_protocol::{
    ConnectionQualityInfo, ConsumerId, ConsumerStats, DataChannelInfo, DataConsumerId, DataKind,
    DataProducerId, ErrorCode, MediaKind, ParticipantSid, ProducerId, Quality, RequestId,
    ServerMessage, SpeakerInfo, StreamState, SubscribedLayer, TrackInfo, TrackSid, TrackSource,
    TransportId, TransportStats,
};
use tracing::debug;

use super::actor::{RoomActor, json_len};
use crate::limits::Limit;
use crate::webhook::WebhookKind;

/// Longest data channel `label` or `protocol`, in bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 256;
/// Room left for a track's `mimeType` when checking the listing size before
/// the media core has parsed the codec (`video/H264` is 10 bytes).
const MIME_TYPE_ALLOWANCE: usize = 32;
use crate::error::SignalError;

/// A media request from a participant, checked by its handler.
#[derive(Debug)]
pub(crate) enum MediaRequest {
    CreateTransport {
        direction: TransportDirection,
        rtp_capabilities: Option<RtpCapabilities>,
    },
    ConnectTransport {
        transport_id: TransportId,
        dtls_parameters: DtlsParameters,
    },
    RestartIce {
        transport_id: TransportId,
    },
    Publish {
        transport_id: Option<TransportId>,
        kind: MediaKind,
        source: TrackSource,
        rtp_parameters: RtpParameters,
        name: Option<String>,
        muted: bool,
    },
    Unpublish {
        producer_id: ProducerId,
    },
    Subscribe {
        producer_id: ProducerId,
        rtp_capabilities: RtpCapabilities,
        transport_id: Option<TransportId>,
    },
    Unsubscribe {
        consumer_id: ConsumerId,
    },
    ResumeConsumer {
        consumer_id: ConsumerId,
    },
    PauseConsumer {
        consumer_id: ConsumerId,
    },
    SetPreferredLayers {
        consumer_id: ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
    },
    SetConsumerPriority {
        consumer_id: ConsumerId,
        priority: Option<u8>,
    },
    UpdateTrackSettings {
        consumer_id: ConsumerId,
        view: View,
    },
    GetStats,
    Mute {
        producer_id: ProducerId,
        muted: bool,
    },
    PublishDataChannel {
        transport_id: Option<TransportId>,
        params: SctpStreamParameters,
        label: String,
        protocol: String,
    },
    UnpublishDataChannel {
        data_producer_id: DataProducerId,
    },
    SubscribeData {
        data_producer_id: DataProducerId,
        transport_id: Option<TransportId>,
    },
    UnsubscribeData {
        data_consumer_id: DataConsumerId,
    },
}

/// The one place where a media failure becomes a wire error.
pub(crate) fn media_error(e: MediaError) -> SignalError {
    match e {
        MediaError::Room(e) => SignalError::Media {
            code: room_error_code(&e),
            message: e.to_string(),
        },
        MediaError::Gone => SignalError::Unavailable("the room's media is not running".into()),
        other => SignalError::Internal(other.to_string()),
    }
}

/// The stable wire code of each core error.
pub(crate) fn room_error_code(e: &RoomError) -> ErrorCode {
    match e {
        RoomError::TransportNotFound(_) => ErrorCode::TransportNotFound,
        RoomError::AmbiguousTransport(_) => ErrorCode::InvalidParameters,
        RoomError::TransportNotConnected(_) => ErrorCode::TransportNotConnected,
        RoomError::TransportAlreadyConnected(_) => ErrorCode::TransportAlreadyConnected,
        RoomError::WrongTransportDirection { .. } => ErrorCode::WrongTransportDirection,
        RoomError::ProducerNotFound(_) => ErrorCode::ProducerNotFound,
        RoomError::ConsumerNotFound(_) => ErrorCode::ConsumerNotFound,
        RoomError::DataProducerNotFound(_) => ErrorCode::DataProducerNotFound,
        RoomError::DataConsumerNotFound(_) => ErrorCode::DataConsumerNotFound,
        RoomError::NotOwner(_) => ErrorCode::NotOwner,
        RoomError::UnsupportedCodec(_) => ErrorCode::UnsupportedCodec,
        RoomError::DuplicateSsrc(_) => ErrorCode::DuplicateSsrc,
        RoomError::InvalidRtpParameters(_) => ErrorCode::InvalidRtpParameters,
        RoomError::InvalidDtlsParameters(_) => ErrorCode::InvalidParameters,
        RoomError::CannotConsume(_) => ErrorCode::CannotConsume,
        RoomError::InvalidSctpParameters(_) => ErrorCode::InvalidSctpParameters,
        RoomError::LimitReached(_) => ErrorCode::LimitReached,
        // A variant added to the core later: a generic failure until mapped.
        _ => ErrorCode::InvalidParameters,
    }
}

impl RoomActor {
    /// The room's media, or `Unavailable` on a server without media.
    fn media(&self) -> Result<&MediaRoom, SignalError> {
        self.media
            .as_ref()
            .ok_or_else(|| SignalError::Unavailable("this server has no media workers".into()))
    }

    pub(crate) async fn media_request(
        &mut self,
        from: &ParticipantSid,
        request: MediaRequest,
        rid: Option<RequestId>,
    ) -> Result<(), SignalError> {
        let rid = rid.as_ref();
        let owner = self.participant(from)?.owner;
        match request {
            MediaRequest::CreateTransport {
                direction,
                rtp_capabilities,
            } => {
                let perm = self.participant(from)?.info.permission;
                if direction == TransportDirection::Send
                    && !perm.can_publish
                    && !perm.can_publish_data
                {
                    return Err(SignalError::PermissionDenied("canPublish"));
                }
                // Accepted for older clients and checked, but not used: each
                // `publish` carries the sender's payload types and extension
                // ids, which are the ones it really uses.
                if let Some(caps) = &rtp_capabilities {
                    pulsewave_core::ortc::validate_rtp_capabilities(caps).map_err(|e| {
                        SignalError::Media {
                            code: ErrorCode::InvalidRtpParameters,
                            message: format!("invalid RTP parameters: rtpCapabilities: {e}"),
                        }
                    })?;
                }
                let mut transport = self
                    .media()?
                    .create_transport(owner, direction)
                    .await
                    .map_err(media_error)?;
                let p = self.participant_mut(from)?;
                p.media_tried = true;
                let identity = p.info.identity.clone();
                transport.ice_servers = self.manager.settings().ice_servers_for(&identity);
                self.send_to(
                    from,
                    &ServerMessage::TransportCreated {
                        direction,
                        transport,
                    },
                    rid,
                );
            }
            MediaRequest::ConnectTransport {
                transport_id,
                dtls_parameters,
            } => {
                self.media()?
                    .connect_transport(owner, transport_id.clone(), dtls_parameters)
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::TransportConnected { transport_id },
                    rid,
                );
            }
            MediaRequest::RestartIce { transport_id } => {
                let ice_parameters = self
                    .media()?
                    .restart_ice(owner, transport_id.clone())
                    .await
                    .map_err(media_error)?;
                // Fresh credentials: the embedded TURN server's expire.
                let identity = &self.participant(from)?.info.identity;
                let ice_servers = self.manager.settings().ice_servers_for(identity);
                self.send_to(
                    from,
                    &ServerMessage::IceRestarted {
                        transport_id,
                        ice_parameters,
                        ice_servers,
                    },
                    rid,
                );
            }
            MediaRequest::Publish {
                transport_id,
                kind,
                source,
                rtp_parameters,
                name,
                muted,
            } => {
                if source.kind() != kind {
                    return Err(SignalError::InvalidParameters(format!(
                        "source `{}` carries {}, not {kind}",
                        source.as_str(),
                        source.kind()
                    )));
                }
                // Caps on what every newcomer's `joined` lists for this
                // participant, checked before the media core does any work.
                let p = self.participant(from)?;
                if !p.info.permission.can_publish {
                    return Err(SignalError::PermissionDenied("canPublish"));
                }
                // The sources allowed now (the server API may change them).
                if !p.info.permission.can_publish_sources.allows(source) {
                    return Err(SignalError::PermissionDenied("canPublishSources"));
                }
                let max = self.manager.settings().max_tracks_per_participant;
                if max > 0 && p.info.tracks.len() >= max as usize {
                    self.manager.counters().hit(Limit::Tracks);
                    return Err(SignalError::LimitReached(format!(
                        "at most {max} published tracks per participant (MAX_TRACKS_PER_PARTICIPANT)"
                    )));
                }
                let estimate = TrackInfo {
                    sid: TrackSid::generate(),
                    producer_id: ProducerId::generate(),
                    participant_identity: p.info.identity.clone(),
                    participant_sid: p.info.sid.clone(),
                    kind,
                    source,
                    muted: false,
                    name: name.clone(),
                    mime_type: "x".repeat(MIME_TYPE_ALLOWANCE),
                    simulcast: false,
                };
                self.check_listing(json_len(&estimate) + 2)?;
                // The track's signaling fields ride with the producer: the
                // room's `ProducerCreated` state change brings them back,
                // and the track list is built from those changes alone.
                let meta = TrackMeta {
                    sid: TrackSid::generate(),
                    source,
                    name,
                };
                let media = self.media()?;
                let produced = media
                    .produce(
                        owner,
                        transport_id,
                        kind,
                        rtp_parameters,
                        muted,
                        AppData::new(meta),
                    )
                    .await
                    .map_err(media_error)?;
                // A screen share keeps its layers over cameras when a
                // subscriber's bandwidth is short (LiveKit's priorities).
                if source == TrackSource::Screen {
                    media
                        .set_producer_priority(owner, produced.producer_id, SCREEN_PRIORITY)
                        .await
                        .map_err(media_error)?;
                }
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::Unpublish { producer_id } => {
                self.media()?
                    .close_producer(owner, producer_id)
                    .await
                    .map_err(media_error)?;
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::Subscribe {
                producer_id,
                rtp_capabilities,
                transport_id,
            } => {
                if !self.participant(from)?.info.permission.can_subscribe {
                    return Err(SignalError::PermissionDenied("canSubscribe"));
                }
                let track = self
                    .participants
                    .iter()
                    .flat_map(|p| p.info.tracks.iter())
                    .find(|t| t.producer_id == producer_id)
                    .cloned()
                    .ok_or_else(|| SignalError::Media {
                        code: pulsewave_protocol::ErrorCode::ProducerNotFound,
                        message: format!("producer `{producer_id}` not found"),
                    })?;
                let consumed = self
                    .media()?
                    .consume(owner, transport_id, producer_id, rtp_capabilities)
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::TrackSubscribed {
                        track_sid: track.sid,
                        consumer_id: consumed.consumer_id,
                        producer_id: consumed.producer_id,
                        kind: consumed.kind,
                        rtp_parameters: consumed.rtp_parameters,
                        participant_identity: track.participant_identity,
                        paused: consumed.paused,
                    },
                    rid,
                );
            }
            MediaRequest::Unsubscribe { consumer_id } => {
                let producer_id = self
                    .media()?
                    .close_consumer(owner, consumer_id.clone())
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::TrackUnsubscribed {
                        consumer_id,
                        producer_id,
                    },
                    rid,
                );
            }
            MediaRequest::ResumeConsumer { consumer_id } => {
                self.media()?
                    .resume_consumer(owner, consumer_id.clone())
                    .await
                    .map_err(media_error)?;
                self.send_to(from, &ServerMessage::ConsumerResumed { consumer_id }, rid);
            }
            MediaRequest::PauseConsumer { consumer_id } => {
                self.media()?
                    .pause_consumer(owner, consumer_id.clone())
                    .await
                    .map_err(media_error)?;
                self.send_to(from, &ServerMessage::ConsumerPaused { consumer_id }, rid);
            }
            MediaRequest::SetPreferredLayers {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } => {
                self.media()?
                    .set_consumer_preferred_layers(
                        owner,
                        consumer_id.clone(),
                        spatial_layer,
                        temporal_layer,
                    )
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::PreferredLayersSet {
                        consumer_id,
                        spatial_layer,
                        temporal_layer,
                    },
                    rid,
                );
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::SetConsumerPriority {
                consumer_id,
                priority,
            } => {
                let priority = self
                    .media()?
                    .set_consumer_priority(owner, consumer_id.clone(), priority)
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::ConsumerPrioritySet {
                        consumer_id,
                        priority,
                    },
                    rid,
                );
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::UpdateTrackSettings { consumer_id, view } => {
                self.media()?
                    .set_consumer_view(owner, consumer_id.clone(), view)
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::TrackSettingsUpdated { consumer_id },
                    rid,
                );
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::GetStats => {
                let allocations = self
                    .media()?
                    .transport_allocations(owner)
                    .await
                    .map_err(media_error)?;
                let transports = allocations.into_iter().map(transport_stats).collect();
                self.send_to(from, &ServerMessage::Stats { transports }, rid);
            }
            MediaRequest::Mute { producer_id, muted } => {
                let media = self.media()?;
                if muted {
                    media.pause_producer(owner, producer_id).await
                } else {
                    media.resume_producer(owner, producer_id).await
                }
                .map_err(media_error)?;
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::PublishDataChannel {
                transport_id,
                params,
                label,
                protocol,
            } => {
                if !self.participant(from)?.info.permission.can_publish_data {
                    return Err(SignalError::PermissionDenied("canPublishData"));
                }
                for (field, value) in [("label", &label), ("protocol", &protocol)] {
                    if value.len() > MAX_LABEL_BYTES {
                        return Err(SignalError::InvalidParameters(format!(
                            "`{field}` is at most {MAX_LABEL_BYTES} bytes"
                        )));
                    }
                }
                let p = self.participant(from)?;
                let max = self.manager.settings().max_data_channels_per_participant;
                if max > 0 && p.info.data_channels.len() >= max as usize {
                    self.manager.counters().hit(Limit::DataChannels);
                    return Err(SignalError::LimitReached(format!(
                        "at most {max} published data channels per participant (MAX_DATA_CHANNELS_PER_PARTICIPANT)"
                    )));
                }
                let estimate = DataChannelInfo {
                    data_producer_id: DataProducerId::generate(),
                    participant_identity: p.info.identity.clone(),
                    participant_sid: p.info.sid.clone(),
                    label: label.clone(),
                    protocol: protocol.clone(),
                    kind: DataKind::Reliable,
                };
                self.check_listing(json_len(&estimate) + 1)?;
                self.media()?
                    .produce_data(
                        owner,
                        transport_id,
                        params,
                        label,
                        protocol,
                        AppData::default(),
                    )
                    .await
                    .map_err(media_error)?;
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::UnpublishDataChannel { data_producer_id } => {
                self.media()?
                    .close_data_producer(owner, data_producer_id)
                    .await
                    .map_err(media_error)?;
                self.apply_media_events(Cause::Request { from, rid });
            }
            MediaRequest::SubscribeData {
                data_producer_id,
                transport_id,
            } => {
                let publisher = self
                    .participants
                    .iter()
                    .flat_map(|p| p.info.data_channels.iter())
                    .find(|d| d.data_producer_id == data_producer_id)
                    .map(|d| d.participant_identity.clone())
                    .ok_or_else(|| SignalError::Media {
                        code: pulsewave_protocol::ErrorCode::DataProducerNotFound,
                        message: format!("data producer `{data_producer_id}` not found"),
                    })?;
                let consumed = self
                    .media()?
                    .consume_data(owner, transport_id, data_producer_id)
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::DataSubscribed {
                        data_consumer_id: consumed.data_consumer_id,
                        data_producer_id: consumed.data_producer_id,
                        sctp_stream_parameters: consumed.sctp_stream_parameters,
                        label: consumed.label,
                        protocol: consumed.protocol,
                        participant_identity: publisher,
                    },
                    rid,
                );
            }
            MediaRequest::UnsubscribeData { data_consumer_id } => {
                self.media()?
                    .close_data_consumer(owner, data_consumer_id.clone())
                    .await
                    .map_err(media_error)?;
                self.send_to(
                    from,
                    &ServerMessage::DataUnsubscribed { data_consumer_id },
                    rid,
                );
            }
        }
        Ok(())
    }

    /// Applies the media events waiting in the room's channel: the
    /// worker puts a command's events there before its answer, so after a
    /// media call this applies exactly what the call caused (and whatever
    /// happened before it).
    pub(crate) fn apply_media_events(&mut self, cause: Cause<'_>) {
        let mut batch = Vec::new();
        if let Some(rx) = self.events.as_mut() {
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
        }
        for e in batch {
            self.media_event(e, cause);
        }
        self.flush_quality();
    }

    /// Sends the quality changes gathered from the events just applied:
    /// one `connection-quality` to everyone with the visible ones, and to
    /// each hidden participant its own.
    fn flush_quality(&mut self) {
        if self.quality_updates.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.quality_updates);
        let mut visible = Vec::with_capacity(updates.len());
        for (hidden, info) in updates {
            if hidden {
                let sid = info.participant_sid.clone();
                self.send_to(
                    &sid,
                    &ServerMessage::ConnectionQuality {
                        updates: vec![info],
                    },
                    None,
                );
            } else {
                visible.push(info);
            }
        }
        if !visible.is_empty() {
            self.broadcast(&ServerMessage::ConnectionQuality { updates: visible }, None);
        }
    }

    /// Tells participants what changed in the media core. The track and
    /// data channel lists change here only, from the room's state changes:
    /// the media core is their one source of truth.
    pub(crate) fn media_event(&mut self, event: MediaEvent, cause: Cause<'_>) {
        match event {
            MediaEvent::State(change) => self.state_change(change, cause),
            MediaEvent::TransportConnected {
                transport_id,
                owner,
            } => {
                debug!(room = %self.name, transport = %transport_id, "transport connected");
                if let Some(p) = self.participants.iter_mut().find(|p| p.owner == owner) {
                    p.media_connected = true;
                }
            }
            MediaEvent::TransportClosed {
                transport_id,
                owner,
                reason,
            } => {
                self.send_to_owner(
                    owner,
                    &ServerMessage::TransportClosed {
                        transport_id,
                        reason: reason.as_str().to_owned(),
                    },
                );
            }
            MediaEvent::ConsumerClosed {
                consumer_id,
                producer_id,
                owner,
                ..
            } => {
                self.send_to_owner(
                    owner,
                    &ServerMessage::TrackUnsubscribed {
                        consumer_id,
                        producer_id,
                    },
                );
            }
            MediaEvent::ConsumerLayersChanged {
                consumer_id,
                owner,
                layers,
            } => {
                self.send_to_owner(
                    owner,
                    &ServerMessage::ConsumerLayersChanged {
                        consumer_id,
                        spatial_layer: layers.map(|l| l.0),
                        temporal_layer: layers.map(|l| l.1),
                    },
                );
            }
            MediaEvent::ConsumerCongested {
                consumer_id,
                owner,
                congested,
            } => {
                self.send_to_owner(
                    owner,
                    &ServerMessage::StreamStateChanged {
                        consumer_id,
                        state: if congested {
                            StreamState::Paused
                        } else {
                            StreamState::Active
                        },
                        reason: "congestion".into(),
                    },
                );
            }
            MediaEvent::ProducerLayersWanted {
                producer_id,
                owner,
                layers,
            } => {
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let layers = layers
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| SubscribedLayer {
                        spatial_layer: i as u8,
                        rid: l.rid,
                        active: l.wanted,
                    })
                    .collect();
                self.send_to(
                    &owner,
                    &ServerMessage::SubscribedLayers {
                        producer_id,
                        layers,
                    },
                    None,
                );
            }
            MediaEvent::DataConsumerClosed {
                data_consumer_id,
                owner,
                ..
            } => {
                self.send_to_owner(owner, &ServerMessage::DataUnsubscribed { data_consumer_id });
            }
            MediaEvent::ConnectionQuality { owner, quality } => {
                let quality = match quality {
                    pulsewave_core::ConnectionQuality::Excellent => Quality::Excellent,
                    pulsewave_core::ConnectionQuality::Good => Quality::Good,
                    pulsewave_core::ConnectionQuality::Poor => Quality::Poor,
                    pulsewave_core::ConnectionQuality::Lost => Quality::Lost,
                };
                let Some(p) = self.participants.iter_mut().find(|p| p.owner == owner) else {
                    return;
                };
                self.manager
                    .counters()
                    .quality_changed(p.quality, Some(quality));
                p.quality = Some(quality);
                let info = ConnectionQualityInfo {
                    participant_identity: p.info.identity.clone(),
                    participant_sid: p.info.sid.clone(),
                    quality,
                };
                let hidden = p.info.permission.hidden;
                self.quality_updates
                    .retain(|(_, u)| u.participant_sid != info.participant_sid);
                self.quality_updates.push((hidden, info));
            }
            MediaEvent::ActiveSpeakers { speakers } => {
                // One entry per participant (its loudest track), loudest first.
                let mut list: Vec<SpeakerInfo> = Vec::new();
                for s in speakers {
                    let Some(p) = self.participants.iter().find(|p| p.owner == s.owner) else {
                        continue;
                    };
                    if list.iter().any(|l| l.participant_sid == p.info.sid) {
                        continue;
                    }
                    list.push(SpeakerInfo {
                        participant_identity: p.info.identity.clone(),
                        participant_sid: p.info.sid.clone(),
                        level: f32::from(s.level) / 1000.0,
                    });
                }
                self.broadcast(&ServerMessage::ActiveSpeakers { speakers: list }, None);
            }
            // Producers and data producers: their `State` change says it.
            _ => {}
        }
    }

    /// The participant holding the media of `owner`.
    fn sid_of(&self, owner: Owner) -> Option<ParticipantSid> {
        self.participants
            .iter()
            .find(|p| p.owner == owner)
            .map(|p| p.info.sid.clone())
    }

    /// Sends `message` to the participant of media owner `owner`, if it is
    /// still in the room.
    fn send_to_owner(&mut self, owner: Owner, message: &ServerMessage) {
        if let Some(sid) = self.sid_of(owner) {
            self.send_to(&sid, message, None);
        }
    }

    /// Sends `message` about `owner`'s object to everyone: to the
    /// requester with its request id when `owner` asked for the change,
    /// not to `owner` when it is leaving.
    fn announce(&self, message: &ServerMessage, owner: &ParticipantSid, cause: Cause<'_>) {
        match cause {
            Cause::Request { from, rid } if from == owner => {
                self.broadcast_reply(message, from, rid)
            }
            Cause::Leaving(who) if who == owner => self.broadcast(message, Some(who)),
            _ => self.broadcast(message, None),
        }
    }

    fn state_change(&mut self, change: StateChange, cause: Cause<'_>) {
        match change {
            StateChange::ProducerCreated {
                producer_id,
                owner,
                kind,
                mime_type,
                simulcast,
                paused,
                app_data,
            } => {
                let Some(meta) = app_data.get::<TrackMeta>() else {
                    return;
                };
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let Ok(p) = self.participant_mut(&owner) else {
                    return;
                };
                let track = TrackInfo {
                    sid: meta.sid.clone(),
                    producer_id: producer_id.clone(),
                    participant_identity: p.info.identity.clone(),
                    participant_sid: p.info.sid.clone(),
                    kind,
                    source: meta.source,
                    muted: paused,
                    name: meta.name.clone(),
                    mime_type,
                    simulcast,
                };
                p.info.tracks.push(track.clone());
                self.recount(&owner);
                debug!(room = %self.name, identity = %track.participant_identity, producer = %producer_id, "track published");
                if let Cause::Request { from, rid } = cause
                    && *from == owner
                {
                    self.send_to(
                        from,
                        &ServerMessage::Published {
                            producer_id,
                            track: track.clone(),
                        },
                        rid,
                    );
                }
                if let Ok(p) = self.participant(&owner) {
                    self.webhook(WebhookKind::TrackPublished, Some(&p.info), Some(&track));
                }
                self.broadcast(&ServerMessage::TrackPublished { track }, Some(&owner));
            }
            StateChange::ProducerPaused {
                producer_id,
                owner,
                paused,
                ..
            } => {
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let Ok(p) = self.participant_mut(&owner) else {
                    return;
                };
                let identity = p.info.identity.clone();
                let Some(track) = p
                    .info
                    .tracks
                    .iter_mut()
                    .find(|t| t.producer_id == producer_id)
                else {
                    return;
                };
                track.muted = paused;
                let track_sid = track.sid.clone();
                let message = if paused {
                    ServerMessage::TrackMuted {
                        producer_id,
                        track_sid,
                        participant_identity: identity,
                    }
                } else {
                    ServerMessage::TrackUnmuted {
                        producer_id,
                        track_sid,
                        participant_identity: identity,
                    }
                };
                self.announce(&message, &owner, cause);
            }
            StateChange::ProducerClosed {
                producer_id, owner, ..
            } => {
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let Ok(p) = self.participant_mut(&owner) else {
                    return;
                };
                let identity = p.info.identity.clone();
                let Some(track) = take_track(&mut p.info.tracks, &producer_id) else {
                    return;
                };
                self.recount(&owner);
                if let Ok(p) = self.participant(&owner) {
                    self.webhook(WebhookKind::TrackUnpublished, Some(&p.info), Some(&track));
                }
                let message = ServerMessage::TrackUnpublished {
                    producer_id,
                    track_sid: track.sid,
                    participant_identity: identity,
                };
                self.announce(&message, &owner, cause);
            }
            StateChange::DataProducerCreated {
                data_producer_id,
                owner,
                label,
                protocol,
                reliable,
                ..
            } => {
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let Ok(p) = self.participant_mut(&owner) else {
                    return;
                };
                let info = DataChannelInfo {
                    data_producer_id: data_producer_id.clone(),
                    participant_identity: p.info.identity.clone(),
                    participant_sid: p.info.sid.clone(),
                    label,
                    protocol,
                    kind: if reliable {
                        DataKind::Reliable
                    } else {
                        DataKind::Lossy
                    },
                };
                p.info.data_channels.push(info.clone());
                self.recount(&owner);
                if let Cause::Request { from, rid } = cause
                    && *from == owner
                {
                    self.send_to(
                        from,
                        &ServerMessage::DataChannelPublished {
                            data_producer_id,
                            data_channel: info.clone(),
                        },
                        rid,
                    );
                }
                self.broadcast(
                    &ServerMessage::DataTrackPublished { data_channel: info },
                    Some(&owner),
                );
            }
            StateChange::DataProducerClosed {
                data_producer_id,
                owner,
                ..
            } => {
                let Some(owner) = self.sid_of(owner) else {
                    return;
                };
                let Ok(p) = self.participant_mut(&owner) else {
                    return;
                };
                let identity = p.info.identity.clone();
                let before = p.info.data_channels.len();
                p.info
                    .data_channels
                    .retain(|d| d.data_producer_id != data_producer_id);
                if p.info.data_channels.len() == before {
                    return;
                }
                self.recount(&owner);
                let message = ServerMessage::DataTrackUnpublished {
                    data_producer_id,
                    participant_identity: identity,
                };
                self.announce(&message, &owner, cause);
            }
            _ => {}
        }
    }
}

/// The priority of a screen share's consumers (LiveKit's), above cameras'
/// [`pulsewave_core::DEFAULT_PRIORITY`].
pub(crate) const SCREEN_PRIORITY: u8 = 255;

/// A core allocation as the `stats` message shows it.
pub(crate) fn transport_stats(t: TransportAllocation) -> TransportStats {
    TransportStats {
        transport_id: t.transport_id,
        available_outgoing_bitrate: t.available_outgoing_bitrate,
        allocated_bitrate: t.allocated_bitrate,
        consumers: t
            .consumers
            .into_iter()
            .map(|c| ConsumerStats {
                consumer_id: c.consumer_id,
                kind: c.kind,
                priority: c.priority,
                spatial_layer: c.layers.map(|l| l.0),
                temporal_layer: c.layers.map(|l| l.1),
                target_spatial_layer: c.target.map(|l| l.0),
                target_temporal_layer: c.target.map(|l| l.1),
                congested: c.congested,
                bitrate: c.bitrate,
            })
            .collect(),
    }
}

/// What caused the media events being applied.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cause<'a> {
    /// The network, another participant's request, or nothing known.
    Other,
    /// A participant's request: it gets the replies, with its request id.
    Request {
        from: &'a ParticipantSid,
        rid: Option<&'a RequestId>,
    },
    /// A participant leaving: it is told nothing more.
    Leaving(&'a ParticipantSid),
}

/// The signaling fields of a published track, kept by the media core with
/// its producer ([`AppData`]).
#[derive(Debug, Clone)]
pub(crate) struct TrackMeta {
    pub(crate) sid: TrackSid,
    pub(crate) source: TrackSource,
    pub(crate) name: Option<String>,
}

fn take_track(tracks: &mut Vec<TrackInfo>, producer_id: &ProducerId) -> Option<TrackInfo> {
    let idx = tracks.iter().position(|t| &t.producer_id == producer_id)?;
    Some(tracks.remove(idx))
}
