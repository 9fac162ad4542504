//! A room living on a worker thread, and its typed commands.

use pulsewave_core::{
    AppData, Consumed, DataConsumed, Error, Owner, Produced, RoomId, RoomStats,
    TransportAllocation, View,
};
use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{
    DtlsParameters, IceParameters, SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};
use tokio::sync::{mpsc, oneshot};

use crate::command::Op;
use crate::worker::Command;

/// Why a room command failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The room refused the command (bad parameters, unknown ids, a
    /// limit): nothing changed.
    #[error(transparent)]
    Room(#[from] Error),
    /// The room is gone (closed, or it panicked and was dropped), or its
    /// worker stopped.
    #[error("the room's media is gone")]
    Gone,
}

/// A room on a media worker. Each method runs one command on the worker
/// thread and waits for its result; the events the command caused are in
/// the room's event channel before the result arrives. Dropping the handle
/// closes the room.
#[derive(Debug)]
pub struct MediaRoom {
    pub(crate) id: RoomId,
    pub(crate) worker: usize,
    pub(crate) tx: mpsc::UnboundedSender<Command>,
}

impl MediaRoom {
    /// The worker the room lives on.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The room's key on its worker's endpoint.
    pub fn id(&self) -> RoomId {
        self.id
    }

    async fn op<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Op) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Op {
                room: self.id,
                op: make(tx),
            })
            .map_err(|_| MediaError::Gone)?;
        rx.await.map_err(|_| MediaError::Gone)
    }

    async fn fallible<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Op,
    ) -> Result<T, MediaError> {
        Ok(self.op(make).await??)
    }

    /// See [`pulsewave_core::Room::create_transport`].
    pub async fn create_transport(
        &self,
        owner: Owner,
        direction: TransportDirection,
    ) -> Result<TransportOptions, MediaError> {
        self.fallible(|reply| Op::CreateTransport {
            owner,
            direction,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::connect_transport`].
    pub async fn connect_transport(
        &self,
        owner: Owner,
        id: TransportId,
        dtls: DtlsParameters,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::ConnectTransport {
            owner,
            id,
            dtls: Box::new(dtls),
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::restart_ice`]: new ICE parameters for
    /// the client's `transport.restartIce({iceParameters})`.
    pub async fn restart_ice(
        &self,
        owner: Owner,
        id: TransportId,
    ) -> Result<IceParameters, MediaError> {
        self.fallible(|reply| Op::RestartIce { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::close_transport`].
    pub async fn close_transport(&self, owner: Owner, id: TransportId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::CloseTransport { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::close_participant`].
    pub async fn close_participant(&self, owner: Owner) -> Result<(), MediaError> {
        self.op(|reply| Op::CloseParticipant { owner, reply }).await
    }

    /// See [`pulsewave_core::Room::produce`].
    pub async fn produce(
        &self,
        owner: Owner,
        transport: Option<TransportId>,
        kind: MediaKind,
        parameters: RtpParameters,
        paused: bool,
        app_data: AppData,
    ) -> Result<Produced, MediaError> {
        self.fallible(|reply| Op::Produce {
            owner,
            transport,
            kind,
            parameters: Box::new(parameters),
            paused,
            app_data,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::close_producer`].
    pub async fn close_producer(&self, owner: Owner, id: ProducerId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::CloseProducer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::pause_producer`].
    pub async fn pause_producer(&self, owner: Owner, id: ProducerId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::PauseProducer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::resume_producer`].
    pub async fn resume_producer(&self, owner: Owner, id: ProducerId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::ResumeProducer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::consume`].
    pub async fn consume(
        &self,
        owner: Owner,
        transport: Option<TransportId>,
        producer: ProducerId,
        capabilities: RtpCapabilities,
    ) -> Result<Consumed, MediaError> {
        self.fallible(|reply| Op::Consume {
            owner,
            transport,
            producer,
            capabilities: Box::new(capabilities),
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::resume_consumer`].
    pub async fn resume_consumer(&self, owner: Owner, id: ConsumerId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::ResumeConsumer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::pause_consumer`].
    pub async fn pause_consumer(&self, owner: Owner, id: ConsumerId) -> Result<(), MediaError> {
        self.fallible(|reply| Op::PauseConsumer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::set_consumer_preferred_layers`].
    pub async fn set_consumer_preferred_layers(
        &self,
        owner: Owner,
        id: ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::SetPreferredLayers {
            owner,
            id,
            spatial_layer,
            temporal_layer,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::set_consumer_priority`].
    pub async fn set_consumer_priority(
        &self,
        owner: Owner,
        id: ConsumerId,
        priority: Option<u8>,
    ) -> Result<u8, MediaError> {
        self.fallible(|reply| Op::SetConsumerPriority {
            owner,
            id,
            priority,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::set_producer_priority`].
    pub async fn set_producer_priority(
        &self,
        owner: Owner,
        id: ProducerId,
        priority: u8,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::SetProducerPriority {
            owner,
            id,
            priority,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::set_consumer_view`].
    pub async fn set_consumer_view(
        &self,
        owner: Owner,
        id: ConsumerId,
        view: View,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::SetConsumerView {
            owner,
            id,
            view,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::transport_allocations`].
    pub async fn transport_allocations(
        &self,
        owner: Owner,
    ) -> Result<Vec<TransportAllocation>, MediaError> {
        self.op(|reply| Op::TransportAllocations { owner, reply })
            .await
    }

    /// See [`pulsewave_core::Room::producer_stats`].
    pub async fn producer_stats(
        &self,
        owner: Owner,
    ) -> Result<Vec<pulsewave_core::ProducerStats>, MediaError> {
        self.op(|reply| Op::ProducerStats { owner, reply }).await
    }

    /// See [`pulsewave_core::Room::close_consumer`].
    pub async fn close_consumer(
        &self,
        owner: Owner,
        id: ConsumerId,
    ) -> Result<ProducerId, MediaError> {
        self.fallible(|reply| Op::CloseConsumer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::produce_data`].
    pub async fn produce_data(
        &self,
        owner: Owner,
        transport: Option<TransportId>,
        parameters: SctpStreamParameters,
        label: String,
        protocol: String,
        app_data: AppData,
    ) -> Result<DataProducerId, MediaError> {
        self.fallible(|reply| Op::ProduceData {
            owner,
            transport,
            parameters,
            label,
            protocol,
            app_data,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::close_data_producer`].
    pub async fn close_data_producer(
        &self,
        owner: Owner,
        id: DataProducerId,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::CloseDataProducer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::consume_data`].
    pub async fn consume_data(
        &self,
        owner: Owner,
        transport: Option<TransportId>,
        data_producer: DataProducerId,
    ) -> Result<DataConsumed, MediaError> {
        self.fallible(|reply| Op::ConsumeData {
            owner,
            transport,
            data_producer,
            reply,
        })
        .await
    }

    /// See [`pulsewave_core::Room::close_data_consumer`].
    pub async fn close_data_consumer(
        &self,
        owner: Owner,
        id: DataConsumerId,
    ) -> Result<(), MediaError> {
        self.fallible(|reply| Op::CloseDataConsumer { owner, id, reply })
            .await
    }

    /// See [`pulsewave_core::Room::data_producer_reliable`].
    pub async fn data_producer_reliable(
        &self,
        id: DataProducerId,
    ) -> Result<Option<bool>, MediaError> {
        self.op(|reply| Op::DataProducerReliable { id, reply })
            .await
    }

    /// The room's counters.
    pub async fn stats(&self) -> Result<RoomStats, MediaError> {
        self.op(|reply| Op::Stats { reply }).await
    }

    /// Makes the room panic on its worker (tests of the isolation).
    #[cfg(test)]
    pub(crate) fn panic_for_test(&self) {
        let _ = self.tx.send(Command::Op {
            room: self.id,
            op: Op::PanicForTest,
        });
    }
}

impl Drop for MediaRoom {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Close { room: self.id });
    }
}
