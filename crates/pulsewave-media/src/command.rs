//! The commands a [`MediaRoom`] runs on its worker thread, written once: the
//! table at the end of this file declares each command with its arguments,
//! its result and the [`Room`] call it makes, and [`commands!`] derives from
//! it the typed variant of [`Op`] sent to the worker (with the channel its
//! result goes back on), the arm of [`Op::run`] that executes it there, and
//! the public async method of [`MediaRoom`].

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

use crate::room::{MediaError, MediaRoom};

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

/// Derives [`Op`], [`Op::run`] and [`MediaRoom`]'s command methods from one
/// table. Each entry reads
/// `fallible|infallible fn method / Variant(args) -> T = |room, now| call;`:
/// a fallible command's `call` returns `Result<T, pulsewave_core::Error>`
/// (a refusal reaches the caller as [`MediaError::Room`]), an infallible
/// one's returns `T`.
macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        $kind:ident fn $method:ident / $variant:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $out:ty
            = |$room:ident, $now:ident| $call:expr;
    )*) => {
        /// One command for a room; run on its worker thread by [`Op::run`].
        #[derive(Debug)]
        pub(crate) enum Op {
            $(
                $variant {
                    $($arg: $ty,)*
                    reply: commands!(@reply $kind $out),
                },
            )*
            #[cfg(test)]
            PanicForTest,
        }

        impl Op {
            /// Runs the command on `room`; returns its answer, to send after
            /// the room's events.
            pub(crate) fn run(self, room: &mut Room, now: Instant) -> Answer {
                match self {
                    $(
                        Op::$variant { $($arg,)* reply } => {
                            let $room = &mut *room;
                            let $now = now;
                            answer(reply, $call)
                        }
                    )*
                    #[cfg(test)]
                    Op::PanicForTest => {
                        room.panic_for_test();
                        Box::new(|| {})
                    }
                }
            }
        }

        impl MediaRoom {
            $(
                $(#[$doc])*
                pub async fn $method(&self, $($arg: $ty),*) -> Result<$out, MediaError> {
                    self.$kind(|reply| Op::$variant { $($arg,)* reply }).await
                }
            )*
        }
    };
    (@reply fallible $out:ty) => { oneshot::Sender<Result<$out, Error>> };
    (@reply infallible $out:ty) => { oneshot::Sender<$out> };
}

commands! {
    /// See [`Room::create_transport`].
    fallible fn create_transport / CreateTransport(owner: Owner, direction: TransportDirection)
        -> TransportOptions = |room, now| room.create_transport(now, owner, direction);
    /// See [`Room::connect_transport`].
    fallible fn connect_transport / ConnectTransport(
        owner: Owner,
        id: TransportId,
        dtls: DtlsParameters,
    ) -> () = |room, now| room.connect_transport(now, owner, &id, &dtls);
    /// See [`Room::restart_ice`]: new ICE parameters for the client's
    /// `transport.restartIce({iceParameters})`.
    fallible fn restart_ice / RestartIce(owner: Owner, id: TransportId)
        -> IceParameters = |room, now| room.restart_ice(now, owner, &id);
    /// See [`Room::close_transport`].
    fallible fn close_transport / CloseTransport(owner: Owner, id: TransportId)
        -> () = |room, now| room.close_transport(now, owner, &id);
    /// See [`Room::close_participant`].
    infallible fn close_participant / CloseParticipant(owner: Owner)
        -> () = |room, now| room.close_participant(now, owner);
    /// See [`Room::produce`].
    fallible fn produce / Produce(
        owner: Owner,
        transport: Option<TransportId>,
        kind: MediaKind,
        parameters: RtpParameters,
        paused: bool,
        app_data: AppData,
    ) -> Produced = |room, now| {
        room.produce(now, owner, transport.as_ref(), kind, parameters, paused, app_data)
    };
    /// See [`Room::close_producer`].
    fallible fn close_producer / CloseProducer(owner: Owner, id: ProducerId)
        -> () = |room, now| room.close_producer(now, owner, &id);
    /// See [`Room::pause_producer`].
    fallible fn pause_producer / PauseProducer(owner: Owner, id: ProducerId)
        -> () = |room, now| room.pause_producer(now, owner, &id);
    /// See [`Room::resume_producer`].
    fallible fn resume_producer / ResumeProducer(owner: Owner, id: ProducerId)
        -> () = |room, now| room.resume_producer(now, owner, &id);
    /// See [`Room::consume`].
    fallible fn consume / Consume(
        owner: Owner,
        transport: Option<TransportId>,
        producer: ProducerId,
        capabilities: RtpCapabilities,
    ) -> Consumed = |room, now| {
        room.consume(now, owner, transport.as_ref(), &producer, &capabilities)
    };
    /// See [`Room::resume_consumer`].
    fallible fn resume_consumer / ResumeConsumer(owner: Owner, id: ConsumerId)
        -> () = |room, now| room.resume_consumer(now, owner, &id);
    /// See [`Room::pause_consumer`].
    fallible fn pause_consumer / PauseConsumer(owner: Owner, id: ConsumerId)
        -> () = |room, now| room.pause_consumer(now, owner, &id);
    /// See [`Room::set_consumer_preferred_layers`].
    fallible fn set_consumer_preferred_layers / SetPreferredLayers(
        owner: Owner,
        id: ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
    ) -> () = |room, now| {
        room.set_consumer_preferred_layers(now, owner, &id, spatial_layer, temporal_layer)
    };
    /// See [`Room::set_consumer_priority`].
    fallible fn set_consumer_priority / SetConsumerPriority(
        owner: Owner,
        id: ConsumerId,
        priority: Option<u8>,
    ) -> u8 = |room, now| room.set_consumer_priority(now, owner, &id, priority);
    /// See [`Room::set_producer_priority`].
    fallible fn set_producer_priority / SetProducerPriority(
        owner: Owner,
        id: ProducerId,
        priority: u8,
    ) -> () = |room, now| room.set_producer_priority(now, owner, &id, priority);
    /// See [`Room::set_consumer_view`].
    fallible fn set_consumer_view / SetConsumerView(owner: Owner, id: ConsumerId, view: View)
        -> () = |room, now| room.set_consumer_view(now, owner, &id, view);
    /// See [`Room::transport_allocations`].
    infallible fn transport_allocations / TransportAllocations(owner: Owner)
        -> Vec<TransportAllocation> = |room, _now| room.transport_allocations(owner);
    /// See [`Room::producer_stats`].
    infallible fn producer_stats / ProducerStats(owner: Owner)
        -> Vec<pulsewave_core::ProducerStats> = |room, _now| room.producer_stats(owner);
    /// See [`Room::close_consumer`].
    fallible fn close_consumer / CloseConsumer(owner: Owner, id: ConsumerId)
        -> ProducerId = |room, now| room.close_consumer(now, owner, &id);
    /// See [`Room::produce_data`].
    fallible fn produce_data / ProduceData(
        owner: Owner,
        transport: Option<TransportId>,
        parameters: SctpStreamParameters,
        label: String,
        protocol: String,
        app_data: AppData,
    ) -> DataProducerId = |room, now| {
        room.produce_data(now, owner, transport.as_ref(), parameters, &label, &protocol, app_data)
    };
    /// See [`Room::close_data_producer`].
    fallible fn close_data_producer / CloseDataProducer(owner: Owner, id: DataProducerId)
        -> () = |room, now| room.close_data_producer(now, owner, &id);
    /// See [`Room::consume_data`].
    fallible fn consume_data / ConsumeData(
        owner: Owner,
        transport: Option<TransportId>,
        data_producer: DataProducerId,
    ) -> DataConsumed = |room, now| {
        room.consume_data(now, owner, transport.as_ref(), &data_producer)
    };
    /// See [`Room::close_data_consumer`].
    fallible fn close_data_consumer / CloseDataConsumer(owner: Owner, id: DataConsumerId)
        -> () = |room, now| room.close_data_consumer(now, owner, &id);
    /// See [`Room::data_producer_reliable`].
    infallible fn data_producer_reliable / DataProducerReliable(id: DataProducerId)
        -> Option<bool> = |room, _now| room.data_producer_reliable(&id);
    /// The room's counters.
    infallible fn stats / Stats() -> RoomStats = |room, _now| room.stats();
}
