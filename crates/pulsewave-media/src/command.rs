//! The commands a [`MediaRoom`](crate::MediaRoom) sends to its worker
//! thread: one typed variant per room command, each with the channel its
//! result goes back on.

use std::time::Instant;

use pulsewave_core::{
    AppData, Consumed, DataConsumed, Error, Owner, Produced, Room, RoomStats, TransportAllocation,
    View,
};
use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{
    DtlsParameters, IceParameters, SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One command for a room; run on its worker thread by [`Op::run`].
#[derive(Debug)]
pub(crate) enum Op {
    CreateTransport {
        owner: Owner,
        direction: TransportDirection,
        reply: Reply<TransportOptions>,
    },
    ConnectTransport {
        owner: Owner,
        id: TransportId,
        dtls: Box<DtlsParameters>,
        reply: Reply<()>,
    },
    CloseTransport {
        owner: Owner,
        id: TransportId,
        reply: Reply<()>,
    },
    RestartIce {
        owner: Owner,
        id: TransportId,
        reply: Reply<IceParameters>,
    },
    CloseParticipant {
        owner: Owner,
        reply: oneshot::Sender<()>,
    },
    Produce {
        owner: Owner,
        transport: Option<TransportId>,
        kind: MediaKind,
        parameters: Box<RtpParameters>,
        paused: bool,
        app_data: AppData,
        reply: Reply<Produced>,
    },
    CloseProducer {
        owner: Owner,
        id: ProducerId,
        reply: Reply<()>,
    },
    PauseProducer {
        owner: Owner,
        id: ProducerId,
        reply: Reply<()>,
    },
    ResumeProducer {
        owner: Owner,
        id: ProducerId,
        reply: Reply<()>,
    },
    Consume {
        owner: Owner,
        transport: Option<TransportId>,
        producer: ProducerId,
        capabilities: Box<RtpCapabilities>,
        reply: Reply<Consumed>,
    },
    ResumeConsumer {
        owner: Owner,
        id: ConsumerId,
        reply: Reply<()>,
    },
    PauseConsumer {
        owner: Owner,
        id: ConsumerId,
        reply: Reply<()>,
    },
    SetPreferredLayers {
        owner: Owner,
        id: ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
        reply: Reply<()>,
    },
    SetConsumerPriority {
        owner: Owner,
        id: ConsumerId,
        priority: Option<u8>,
        reply: Reply<u8>,
    },
    SetProducerPriority {
        owner: Owner,
        id: ProducerId,
        priority: u8,
        reply: Reply<()>,
    },
    SetConsumerView {
        owner: Owner,
        id: ConsumerId,
        view: View,
        reply: Reply<()>,
    },
    TransportAllocations {
        owner: Owner,
        reply: oneshot::Sender<Vec<TransportAllocation>>,
    },
    ProducerStats {
        owner: Owner,
        reply: oneshot::Sender<Vec<pulsewave_core::ProducerStats>>,
    },
    CloseConsumer {
        owner: Owner,
        id: ConsumerId,
        reply: Reply<ProducerId>,
    },
    ProduceData {
        owner: Owner,
        transport: Option<TransportId>,
        parameters: SctpStreamParameters,
        label: String,
        protocol: String,
        app_data: AppData,
        reply: Reply<DataProducerId>,
    },
    CloseDataProducer {
        owner: Owner,
        id: DataProducerId,
        reply: Reply<()>,
    },
    ConsumeData {
        owner: Owner,
        transport: Option<TransportId>,
        data_producer: DataProducerId,
        reply: Reply<DataConsumed>,
    },
    CloseDataConsumer {
        owner: Owner,
        id: DataConsumerId,
        reply: Reply<()>,
    },
    DataProducerReliable {
        id: DataProducerId,
        reply: oneshot::Sender<Option<bool>>,
    },
    Stats {
        reply: oneshot::Sender<RoomStats>,
    },
    #[cfg(test)]
    PanicForTest,
}

/// A command's result, sent to its caller once the worker has forwarded
/// the events the command caused: a caller that sees the result then finds
/// those events already in its room's event channel.
pub(crate) type Answer = Box<dyn FnOnce() + Send>;

/// An [`Answer`] sending `result` on `reply` (a caller that stopped waiting
/// is not an error).
fn answer<T: Send + 'static>(reply: oneshot::Sender<T>, result: T) -> Answer {
    Box::new(move || {
        let _ = reply.send(result);
    })
}

impl Op {
    /// Runs the command on `room`; returns its answer, to send after the
    /// room's events.
    pub(crate) fn run(self, room: &mut Room, now: Instant) -> Answer {
        match self {
            Op::CreateTransport {
                owner,
                direction,
                reply,
            } => answer(reply, room.create_transport(now, owner, direction)),
            Op::ConnectTransport {
                owner,
                id,
                dtls,
                reply,
            } => answer(reply, room.connect_transport(now, owner, &id, &dtls)),
            Op::RestartIce { owner, id, reply } => answer(reply, room.restart_ice(now, owner, &id)),
            Op::CloseTransport { owner, id, reply } => {
                answer(reply, room.close_transport(now, owner, &id))
            }
            Op::CloseParticipant { owner, reply } => {
                room.close_participant(now, owner);
                answer(reply, ())
            }
            Op::Produce {
                owner,
                transport,
                kind,
                parameters,
                paused,
                app_data,
                reply,
            } => answer(
                reply,
                room.produce(
                    now,
                    owner,
                    transport.as_ref(),
                    kind,
                    *parameters,
                    paused,
                    app_data,
                ),
            ),
            Op::CloseProducer { owner, id, reply } => {
                answer(reply, room.close_producer(now, owner, &id))
            }
            Op::PauseProducer { owner, id, reply } => {
                answer(reply, room.pause_producer(now, owner, &id))
            }
            Op::ResumeProducer { owner, id, reply } => {
                answer(reply, room.resume_producer(now, owner, &id))
            }
            Op::Consume {
                owner,
                transport,
                producer,
                capabilities,
                reply,
            } => answer(
                reply,
                room.consume(now, owner, transport.as_ref(), &producer, &capabilities),
            ),
            Op::ResumeConsumer { owner, id, reply } => {
                answer(reply, room.resume_consumer(now, owner, &id))
            }
            Op::PauseConsumer { owner, id, reply } => {
                answer(reply, room.pause_consumer(now, owner, &id))
            }
            Op::SetPreferredLayers {
                owner,
                id,
                spatial_layer,
                temporal_layer,
                reply,
            } => answer(
                reply,
                room.set_consumer_preferred_layers(now, owner, &id, spatial_layer, temporal_layer),
            ),
            Op::SetConsumerPriority {
                owner,
                id,
                priority,
                reply,
            } => answer(reply, room.set_consumer_priority(now, owner, &id, priority)),
            Op::SetProducerPriority {
                owner,
                id,
                priority,
                reply,
            } => answer(reply, room.set_producer_priority(now, owner, &id, priority)),
            Op::SetConsumerView {
                owner,
                id,
                view,
                reply,
            } => answer(reply, room.set_consumer_view(now, owner, &id, view)),
            Op::TransportAllocations { owner, reply } => {
                answer(reply, room.transport_allocations(owner))
            }
            Op::ProducerStats { owner, reply } => answer(reply, room.producer_stats(owner)),
            Op::CloseConsumer { owner, id, reply } => {
                answer(reply, room.close_consumer(now, owner, &id))
            }
            Op::ProduceData {
                owner,
                transport,
                parameters,
                label,
                protocol,
                app_data,
                reply,
            } => answer(
                reply,
                room.produce_data(
                    now,
                    owner,
                    transport.as_ref(),
                    parameters,
                    &label,
                    &protocol,
                    app_data,
                ),
            ),
            Op::CloseDataProducer { owner, id, reply } => {
                answer(reply, room.close_data_producer(now, owner, &id))
            }
            Op::ConsumeData {
                owner,
                transport,
                data_producer,
                reply,
            } => answer(
                reply,
                room.consume_data(now, owner, transport.as_ref(), &data_producer),
            ),
            Op::CloseDataConsumer { owner, id, reply } => {
                answer(reply, room.close_data_consumer(now, owner, &id))
            }
            Op::DataProducerReliable { id, reply } => {
                answer(reply, room.data_producer_reliable(&id))
            }
            Op::Stats { reply } => answer(reply, room.stats()),
            #[cfg(test)]
            Op::PanicForTest => {
                room.panic_for_test();
                Box::new(|| {})
            }
        }
    }
}
