//! PulseWave's signaling protocol: the JSON messages exchanged over the
//! WebSocket, the ids they carry, the stable error-code table and the RTP
//! parameter and capability types in mediasoup's shapes.
//!
//! This crate does no I/O. Servers decode with [`decode_client`] and encode
//! with [`encode_server`]; Rust clients do the reverse with [`encode_client`]
//! and [`decode_server`]. `docs/protocol.md` in the repository describes
//! every message, the order of a session and the error table.
//!
//! ```
//! use pulsewave_protocol::{decode_client, encode_server, ClientMessage, ErrorCode, ServerMessage};
//!
//! let req = decode_client(r#"{"type":"join","room":"my-room","requestId":7}"#).unwrap();
//! assert_eq!(req.message, ClientMessage::Join { room: "my-room".into(), resume: None });
//!
//! let err = ServerMessage::error(ErrorCode::RoomNotFound, "Room not found");
//! let text = encode_server(&err, req.request_id.as_ref());
//! assert_eq!(text, r#"{"requestId":7,"type":"error","code":100,"message":"Room not found"}"#);
//! ```

mod codec;
mod error;
mod ids;
mod messages;
pub mod rtp;
pub mod transport;

pub use codec::{
    ClientRequest, DecodeError, ServerFrame, decode_client, decode_server, encode_client,
    encode_server, peek_request_id,
};
pub use error::ErrorCode;
pub use ids::{
    ConsumerId, DataConsumerId, DataProducerId, ParticipantSid, ProducerId, RANDOM_ID_LEN, RoomSid,
    TrackSid, TransportId, random_string, random_string_from,
};
pub use messages::{
    ClientMessage, ConnectionQualityInfo, ConsumerStats, DataChannelInfo, DataEncoding, DataKind,
    DisconnectReason, ParticipantInfo, ParticipantPermission, PublishSources, Quality, RequestId,
    ResumeRequest, RoomInfo, ServerMessage, SpeakerInfo, StreamState, SubscribedLayer, TrackInfo,
    TrackSource, TransportStats,
};
pub use rtp::MediaKind;
