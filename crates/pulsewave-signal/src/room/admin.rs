//! What the server API (`/twirp/livekit.RoomService/...`) and a
//! participant's own `update-metadata` do inside a room. Everything runs in
//! the room's actor, so a change is applied and announced in the same order
//! for everyone, and enforced before the next request of the participant
//! concerned is looked at.

use std::time::Duration;

use std::collections::BTreeMap;

use pulsewave_protocol::{
    DataKind, DisconnectReason, ParticipantInfo, ParticipantSid, PublishSources, RequestId,
    RoomInfo, ServerMessage, TrackInfo,
};
use serde_json::{Value, json};
use tracing::info;

use super::actor::RoomActor;
use super::media::{Cause, media_error};
use crate::error::SignalError;
use crate::handlers::{MAX_METADATA_BYTES, MAX_NAME_BYTES, check_attributes};
use crate::outbound::{GrantUpdate, encode};

/// A participant's permissions as the admin API sets them (LiveKit's
/// `ParticipantPermission`: the whole set is replaced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PermissionUpdate {
    pub(crate) can_publish: bool,
    pub(crate) can_subscribe: bool,
    pub(crate) can_publish_data: bool,
    pub(crate) can_update_metadata: bool,
    /// Hidden from the other participants (LiveKit's `hidden`).
    pub(crate) hidden: bool,
    /// The sources it may publish (`canPublishSources`; empty: all).
    pub(crate) can_publish_sources: PublishSources,
}

/// An administrative operation on one room.
#[derive(Debug)]
pub(crate) enum AdminOp {
    /// `CreateRoom`'s settings for this room (each only when given).
    Configure {
        empty_timeout: Option<u32>,
        max_participants: Option<u32>,
        metadata: Option<String>,
    },
    /// The room, hidden participants included.
    Snapshot,
    /// `UpdateRoomMetadata`.
    UpdateRoomMetadata { metadata: String },
    /// `GetParticipant`.
    GetParticipant { identity: String },
    /// `RemoveParticipant`.
    RemoveParticipant { identity: String },
    /// `MutePublishedTrack`.
    MuteTrack {
        identity: String,
        track_sid: String,
        muted: bool,
    },
    /// `UpdateParticipant` (empty strings and `None` leave a field as it is;
    /// `attributes` are merged: an empty value deletes its key).
    UpdateParticipant {
        identity: String,
        metadata: Option<String>,
        name: Option<String>,
        permission: Option<PermissionUpdate>,
        attributes: BTreeMap<String, String>,
    },
    /// `UpdateSubscriptions`.
    UpdateSubscriptions {
        identity: String,
        track_sids: Vec<String>,
        subscribe: bool,
    },
    /// `GetRoomStats` (a PulseWave extension): per-participant quality,
    /// per-track counters and per-subscriber allocations.
    Stats,
    /// Counts for `/metrics` (no media call).
    Summary,
    /// `SendData`: a `data` message from the server (empty
    /// `participantIdentity`).
    SendData {
        /// The payload's bytes.
        data: Vec<u8>,
        kind: DataKind,
        destinations: Vec<String>,
        topic: Option<String>,
    },
}

/// What an [`AdminOp`] answers.
#[derive(Debug)]
pub(crate) enum AdminReply {
    Room(RoomInfo),
    Stats(Value),
    Summary(RoomSummary),
    Participant(ParticipantInfo),
    Track(TrackInfo),
    Done,
}

/// A room's counts for the per-room series of `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoomSummary {
    pub(crate) participants: usize,
    pub(crate) tracks: usize,
    /// Participants by quality: excellent, good, poor, lost.
    pub(crate) quality: [usize; 4],
}

impl RoomActor {
    fn sid_by_identity(&self, identity: &str) -> Result<ParticipantSid, SignalError> {
        self.participants
            .iter()
            .find(|p| p.info.identity == identity)
            .map(|p| p.info.sid.clone())
            .ok_or_else(|| SignalError::ParticipantNotFound(identity.to_owned()))
    }

    pub(crate) async fn admin(&mut self, op: AdminOp) -> Result<AdminReply, SignalError> {
        match op {
            AdminOp::Configure {
                empty_timeout,
                max_participants,
                metadata,
            } => {
                if let Some(secs) = empty_timeout.filter(|s| *s > 0) {
                    self.empty_timeout = Duration::from_secs(u64::from(secs));
                }
                if let Some(max) = max_participants {
                    self.max_participants = max;
                }
                if let Some(metadata) = metadata {
                    check_len("metadata", &metadata, MAX_METADATA_BYTES)?;
                    if metadata != self.metadata {
                        self.metadata = metadata;
                        self.announce_room();
                    }
                }
                Ok(AdminReply::Room(self.info(None, true)))
            }
            AdminOp::Snapshot => Ok(AdminReply::Room(self.info(None, true))),
            AdminOp::Summary => {
                let mut summary = RoomSummary {
                    participants: self.participants.len(),
                    ..RoomSummary::default()
                };
                for p in &self.participants {
                    summary.tracks += p.info.tracks.len();
                    if let Some(q) = p.quality {
                        summary.quality[q as usize] += 1;
                    }
                }
                Ok(AdminReply::Summary(summary))
            }
            AdminOp::Stats => {
                let mut participants = Vec::with_capacity(self.participants.len());
                for p in &self.participants {
                    let (producers, transports) = match &self.media {
                        Some(media) => (
                            media.producer_stats(p.owner).await.map_err(media_error)?,
                            media
                                .transport_allocations(p.owner)
                                .await
                                .map_err(media_error)?,
                        ),
                        None => (Vec::new(), Vec::new()),
                    };
                    let tracks: Vec<Value> = p
                        .info
                        .tracks
                        .iter()
                        .map(|t| {
                            let s = producers.iter().find(|s| s.producer_id == t.producer_id);
                            json!({"trackSid": t.sid, "producerId": t.producer_id, "kind": t.kind,
                                   "source": t.source, "muted": t.muted, "mimeType": t.mime_type,
                                   "packets": s.map_or(0, |s| s.packets), "bytes": s.map_or(0, |s| s.bytes)})
                        })
                        .collect();
                    let subscriptions: Vec<_> = transports
                        .into_iter()
                        .map(super::media::transport_stats)
                        .collect();
                    participants.push(json!({
                        "identity": p.info.identity, "sid": p.info.sid,
                        "quality": p.quality.map(|q| q.as_str()),
                        "tracks": tracks, "subscriptions": subscriptions,
                    }));
                }
                Ok(AdminReply::Stats(json!({
                    "room": self.name, "sid": self.sid, "participants": participants,
                })))
            }
            AdminOp::UpdateRoomMetadata { metadata } => {
                check_len("metadata", &metadata, MAX_METADATA_BYTES)?;
                self.metadata = metadata;
                self.announce_room();
                Ok(AdminReply::Room(self.info(None, true)))
            }
            AdminOp::GetParticipant { identity } => {
                let sid = self.sid_by_identity(&identity)?;
                Ok(AdminReply::Participant(
                    self.participant(&sid)?.info.clone(),
                ))
            }
            AdminOp::RemoveParticipant { identity } => {
                let sid = self.sid_by_identity(&identity)?;
                info!(room = %self.name, %identity, "participant removed by the server API");
                self.remove(&sid, Some(DisconnectReason::ParticipantRemoved))
                    .await;
                Ok(AdminReply::Done)
            }
            AdminOp::MuteTrack {
                identity,
                track_sid,
                muted,
            } => {
                let sid = self.sid_by_identity(&identity)?;
                let p = self.participant(&sid)?;
                let owner = p.owner;
                let track = p
                    .info
                    .tracks
                    .iter()
                    .find(|t| t.sid.as_str() == track_sid)
                    .cloned()
                    .ok_or_else(|| {
                        SignalError::InvalidParameters(format!(
                            "participant `{identity}` has no track `{track_sid}`"
                        ))
                    })?;
                if track.muted != muted {
                    if let Some(media) = &self.media {
                        let result = if muted {
                            media.pause_producer(owner, track.producer_id.clone()).await
                        } else {
                            media
                                .resume_producer(owner, track.producer_id.clone())
                                .await
                        };
                        result.map_err(media_error)?;
                    }
                    // Everyone, the publisher included, gets `track-muted`
                    // / `track-unmuted`: its client pauses or resumes its
                    // producer.
                    self.apply_media_events(Cause::Other);
                }
                let now = self
                    .participant(&sid)?
                    .info
                    .tracks
                    .iter()
                    .find(|t| t.sid.as_str() == track_sid)
                    .cloned()
                    .unwrap_or(track);
                Ok(AdminReply::Track(now))
            }
            AdminOp::UpdateParticipant {
                identity,
                metadata,
                name,
                permission,
                attributes,
            } => {
                let sid = self.sid_by_identity(&identity)?;
                // Everything is checked before anything changes.
                if let Some(m) = &metadata {
                    check_len("metadata", m, MAX_METADATA_BYTES)?;
                }
                if let Some(n) = &name {
                    check_len("name", n, MAX_NAME_BYTES)?;
                }
                let attributes = if attributes.is_empty() {
                    None
                } else {
                    let merged =
                        merge_attributes(&self.participant(&sid)?.info.attributes, attributes);
                    check_attributes(&merged)?;
                    Some(merged)
                };
                if let Some(permission) = permission {
                    self.set_permission(&sid, permission).await?;
                }
                self.update_info(&sid, metadata, name, attributes, None)?;
                self.push_grants(&sid);
                Ok(AdminReply::Participant(
                    self.participant(&sid)?.info.clone(),
                ))
            }
            AdminOp::UpdateSubscriptions {
                identity,
                track_sids,
                subscribe,
            } => {
                let sid = self.sid_by_identity(&identity)?;
                // One lookup per track of the room (the list is capped).
                let wanted: std::collections::HashSet<&str> =
                    track_sids.iter().map(String::as_str).collect();
                let mut sids = Vec::new();
                let mut producers = Vec::new();
                for t in self
                    .participants
                    .iter()
                    .filter(|p| p.info.sid != sid)
                    .flat_map(|p| p.info.tracks.iter())
                {
                    if wanted.contains(t.sid.as_str()) {
                        sids.push(t.sid.clone());
                        producers.push(t.producer_id.clone());
                    }
                }
                if !subscribe && !producers.is_empty() {
                    // Enforced here, not left to the client: its consumers
                    // of those tracks close at once (it may subscribe again
                    // itself, as in LiveKit, or be told to by this API).
                    self.close_consumers_of(&sid, &producers).await?;
                }
                if !sids.is_empty() {
                    self.send_to(
                        &sid,
                        &ServerMessage::UpdateSubscriptions {
                            track_sids: sids,
                            producer_ids: producers,
                            subscribe,
                        },
                        None,
                    );
                }
                Ok(AdminReply::Done)
            }
            AdminOp::SendData {
                data,
                kind,
                destinations,
                topic,
            } => {
                let (data, encoding) = crate::twirp::data_value(data);
                let text = encode(
                    &ServerMessage::Data {
                        participant_identity: String::new(),
                        kind,
                        data,
                        topic,
                        encoding,
                    },
                    None,
                );
                for p in &self.participants {
                    if !destinations.is_empty() && !destinations.contains(&p.info.identity) {
                        continue;
                    }
                    match kind {
                        DataKind::Reliable => {
                            p.outbound.send_encoded(text.clone());
                        }
                        DataKind::Lossy => p.outbound.send_unnumbered(text.clone(), true),
                    }
                }
                Ok(AdminReply::Done)
            }
        }
    }

    /// A participant's own `update-metadata` (needs `canUpdateOwnMetadata`).
    pub(crate) fn update_own(
        &mut self,
        from: &ParticipantSid,
        metadata: Option<String>,
        name: Option<String>,
        rid: Option<&RequestId>,
    ) -> Result<(), SignalError> {
        if !self.participant(from)?.info.permission.can_update_metadata {
            return Err(SignalError::PermissionDenied("canUpdateOwnMetadata"));
        }
        self.update_info(from, metadata, name, None, Some(rid))?;
        self.push_grants(from);
        Ok(())
    }

    /// Hands `sid`'s session its grants as the room has them now, so that
    /// its `token-refresh` carries them (a reconnection keeps what the
    /// server API changed, and regains nothing it revoked).
    pub(crate) fn push_grants(&self, sid: &ParticipantSid) {
        if let Ok(p) = self.participant(sid) {
            p.outbound.update_grants(grant_update(&p.info));
        }
    }

    /// Sets a participant's metadata and name and tells everyone who can
    /// see it (`participant-updated`). `reply`: the participant asked, and
    /// its copy carries its request id (it gets one even without a change).
    fn update_info(
        &mut self,
        sid: &ParticipantSid,
        metadata: Option<String>,
        name: Option<String>,
        attributes: Option<BTreeMap<String, String>>,
        reply: Option<Option<&RequestId>>,
    ) -> Result<(), SignalError> {
        let metadata = metadata.filter(|m| !m.is_empty());
        let name = name.filter(|n| !n.is_empty());
        if let Some(m) = &metadata {
            check_len("metadata", m, MAX_METADATA_BYTES)?;
        }
        if let Some(n) = &name {
            check_len("name", n, MAX_NAME_BYTES)?;
        }
        let p = self.participant_mut(sid)?;
        let mut changed = false;
        if let Some(m) = metadata
            && m != p.info.metadata
        {
            p.info.metadata = m;
            changed = true;
        }
        if let Some(n) = name
            && n != p.info.name
        {
            p.info.name = n;
            changed = true;
        }
        if let Some(a) = attributes
            && a != p.info.attributes
        {
            p.info.attributes = a;
            changed = true;
        }
        if changed {
            self.recount(sid);
            self.announce_participant(sid, reply.flatten());
        } else if let Some(rid) = reply {
            let info = self.participant(sid)?.info.clone();
            self.send_to(
                sid,
                &ServerMessage::ParticipantUpdated { participant: info },
                rid,
            );
        }
        Ok(())
    }

    /// Replaces a participant's permissions and enforces them at once:
    /// without `canPublish` its tracks are unpublished, without
    /// `canPublishData` its data channels, without `canSubscribe` its
    /// consumers are closed.
    async fn set_permission(
        &mut self,
        sid: &ParticipantSid,
        new: PermissionUpdate,
    ) -> Result<(), SignalError> {
        let p = self.participant_mut(sid)?;
        let before = p.info.permission;
        // The whole set is replaced, as LiveKit does; a hidden participant
        // publishes nothing.
        let hidden = new.hidden;
        p.info.permission.hidden = hidden;
        p.info.permission.can_publish = new.can_publish && !hidden;
        p.info.permission.can_publish_data = new.can_publish_data && !hidden;
        p.info.permission.can_subscribe = new.can_subscribe;
        p.info.permission.can_update_metadata = new.can_update_metadata;
        p.info.permission.can_publish_sources = new.can_publish_sources;
        let after = p.info.permission;
        let owner = p.owner;
        // Tracks it may no longer publish: all of them without
        // `canPublish`, else those of a source no longer allowed.
        let tracks: Vec<_> = p
            .info
            .tracks
            .iter()
            .filter(|t| !after.can_publish || !after.can_publish_sources.allows(t.source))
            .map(|t| t.producer_id.clone())
            .collect();
        let channels: Vec<_> = p
            .info
            .data_channels
            .iter()
            .map(|d| d.data_producer_id.clone())
            .collect();
        if before == after {
            return Ok(());
        }
        info!(room = %self.name, sid = %sid, ?after, "permissions updated by the server API");
        let mut closed_consumers = Vec::new();
        if let Some(media) = self.media.as_ref() {
            for producer in tracks {
                let _ = media.close_producer(owner, producer).await;
            }
            if before.can_publish_data && !after.can_publish_data {
                for producer in channels {
                    let _ = media.close_data_producer(owner, producer).await;
                }
            }
            if before.can_subscribe && !after.can_subscribe {
                let transports = media
                    .transport_allocations(owner)
                    .await
                    .map_err(media_error)?;
                for consumer in transports.into_iter().flat_map(|t| t.consumers) {
                    if let Ok(producer_id) = media
                        .close_consumer(owner, consumer.consumer_id.clone())
                        .await
                    {
                        closed_consumers.push((consumer.consumer_id, producer_id));
                    }
                }
            }
        }
        // Unpublished tracks and channels reach everyone (while it is
        // still visible, if it is being hidden).
        self.apply_media_events(Cause::Other);
        if before.hidden != after.hidden {
            // Hidden: the others see it leave; visible again: join.
            let info = self.participant(sid)?.info.clone();
            let message = if after.hidden {
                ServerMessage::ParticipantLeft { participant: info }
            } else {
                ServerMessage::ParticipantJoined { participant: info }
            };
            self.broadcast(&message, Some(sid));
        }
        for (consumer_id, producer_id) in closed_consumers {
            self.send_to(
                sid,
                &ServerMessage::TrackUnsubscribed {
                    consumer_id,
                    producer_id,
                },
                None,
            );
        }
        self.recount(sid);
        self.announce_participant(sid, None);
        Ok(())
    }

    /// Closes `sid`'s consumers of `producers` and tells it
    /// (`track-unsubscribed`). One media call per consumer closed, at most
    /// one per track of the room.
    async fn close_consumers_of(
        &mut self,
        sid: &ParticipantSid,
        producers: &[pulsewave_protocol::ProducerId],
    ) -> Result<(), SignalError> {
        let owner = self.participant(sid)?.owner;
        let Some(media) = self.media.as_ref() else {
            return Ok(());
        };
        let transports = media
            .transport_allocations(owner)
            .await
            .map_err(media_error)?;
        let mut closed = Vec::new();
        for consumer in transports.into_iter().flat_map(|t| t.consumers) {
            if consumer
                .producer_id
                .as_ref()
                .is_some_and(|p| producers.contains(p))
                && let Ok(producer_id) = media
                    .close_consumer(owner, consumer.consumer_id.clone())
                    .await
            {
                closed.push((consumer.consumer_id, producer_id));
            }
        }
        for (consumer_id, producer_id) in closed {
            self.send_to(
                sid,
                &ServerMessage::TrackUnsubscribed {
                    consumer_id,
                    producer_id,
                },
                None,
            );
        }
        Ok(())
    }

    /// `participant-updated` to everyone who can see `sid` (a hidden
    /// participant: itself only); `sid`'s copy carries `rid`.
    fn announce_participant(&self, sid: &ParticipantSid, rid: Option<&RequestId>) {
        let Ok(p) = self.participant(sid) else {
            return;
        };
        let message = ServerMessage::ParticipantUpdated {
            participant: p.info.clone(),
        };
        if p.info.permission.hidden {
            self.send_to(sid, &message, rid);
        } else {
            self.broadcast_reply(&message, sid, rid);
        }
    }

    /// `room-updated` to everyone.
    fn announce_room(&self) {
        self.broadcast(
            &ServerMessage::RoomUpdated {
                name: self.name.clone(),
                sid: self.sid.clone(),
                metadata: self.metadata.clone(),
            },
            None,
        );
    }
}

/// LiveKit's merge of `UpdateParticipant`'s attributes: each key is set to
/// its new value, and a key with an empty value is deleted.
pub(crate) fn merge_attributes(
    current: &BTreeMap<String, String>,
    update: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = current.clone();
    for (k, v) in update {
        if v.is_empty() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    merged
}

/// What the session's claims become after a change in the room.
fn grant_update(info: &ParticipantInfo) -> GrantUpdate {
    GrantUpdate {
        name: info.name.clone(),
        metadata: info.metadata.clone(),
        attributes: info.attributes.clone(),
        permission: info.permission,
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), SignalError> {
    if value.len() > max {
        return Err(SignalError::InvalidParameters(format!(
            "`{field}` is {} bytes; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{RoomManager, RoomSettings};

    /// `CreateRoom`'s `emptyTimeout` replaces the node's default for that
    /// room: on tokio's paused clock a room created with 3 s (the default
    /// is 10 s) closes at 3 s, and one created without keeps the default.
    #[tokio::test(start_paused = true)]
    async fn create_rooms_empty_timeout_overrides_the_default() {
        let rooms = RoomManager::new(RoomSettings::default());
        assert_eq!(rooms.settings().empty_timeout, Duration::from_secs(10));
        let created = tokio::time::Instant::now();
        let short = rooms.open_room("short", true).unwrap();
        let reply = short
            .admin(AdminOp::Configure {
                empty_timeout: Some(3),
                max_participants: None,
                metadata: None,
            })
            .await
            .unwrap();
        match reply {
            AdminReply::Room(info) => assert_eq!(info.empty_timeout, 3),
            other => panic!("unexpected answer {other:?}"),
        }
        let default = rooms.open_room("default", true).unwrap();
        while !short.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let closed_after = created.elapsed();
        assert!(
            closed_after >= Duration::from_secs(3) && closed_after < Duration::from_millis(3100),
            "closed {closed_after:?} after it was created"
        );
        assert!(!default.is_closed(), "the default room closed at 3 s");
        assert_eq!(rooms.room_names(), vec!["default"]);
        while !default.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let default_after = created.elapsed();
        assert!(
            default_after >= Duration::from_secs(10)
                && default_after < Duration::from_millis(10_100),
            "the default room closed {default_after:?} after it was created"
        );
    }
}
