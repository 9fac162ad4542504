//! Data producers and consumers: SCTP data channels relayed between
//! transports.

use crate::owners::Owner;
use pulsewave_protocol::transport::SctpStreamParameters;
use pulsewave_protocol::{DataConsumerId, DataProducerId};
use str0m::channel::ChannelId;

use crate::bucket::TokenBucket;
use crate::event::AppData;
use crate::transport::TransportKey;

pub(crate) type DataProducerKey = usize;
pub(crate) type DataConsumerKey = usize;

/// A channel a participant sends on.
pub(crate) struct DataProducer {
    pub(crate) id: DataProducerId,
    pub(crate) owner: Owner,
    pub(crate) transport: TransportKey,
    pub(crate) channel: ChannelId,
    pub(crate) params: SctpStreamParameters,
    pub(crate) label: String,
    pub(crate) protocol: String,
    pub(crate) consumers: Vec<DataConsumerKey>,
    pub(crate) messages: u64,
    /// The application's data (`produce_data`).
    pub(crate) app_data: AppData,
    /// Message and byte budgets: a flood is dropped, not relayed to every
    /// subscriber.
    pub(crate) message_budget: TokenBucket,
    pub(crate) byte_budget: TokenBucket,
}

/// A channel a participant receives another's data on.
pub(crate) struct DataConsumer {
    pub(crate) id: DataConsumerId,
    pub(crate) owner: Owner,
    pub(crate) transport: TransportKey,
    pub(crate) data_producer: DataProducerKey,
    pub(crate) channel: ChannelId,
    pub(crate) stream_id: u16,
}

/// Whether these stream parameters are reliable: every message is
/// retransmitted until it arrives (ordered or not). A channel with
/// `maxRetransmits` or `maxPacketLifeTime` may lose messages ("lossy").
pub(crate) fn is_reliable(p: &SctpStreamParameters) -> bool {
    p.max_retransmits.is_none() && p.max_packet_life_time.is_none()
}

crate::registry::entry!(DataProducer, DataProducerId);
crate::registry::entry!(DataConsumer, DataConsumerId);
