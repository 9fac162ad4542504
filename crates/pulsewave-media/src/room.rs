//! A room living on a worker thread. Its command methods are declared in
//! `command.rs`, one table for the command, its message and its method.

use pulsewave_core::{Error, RoomId};
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

    /// Sends one command and waits for its result (the worker drops a
    /// command for a room that is gone, with its reply channel).
    pub(crate) async fn infallible<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Op,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Op {
                room: self.id,
                op: Box::new(make(tx)),
            })
            .map_err(|_| MediaError::Gone)?;
        rx.await.map_err(|_| MediaError::Gone)
    }

    /// [`Self::infallible`] for a command the room may refuse.
    pub(crate) async fn fallible<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Op,
    ) -> Result<T, MediaError> {
        Ok(self.infallible(make).await??)
    }

    /// Makes the room panic on its worker (tests of the isolation).
    #[cfg(test)]
    pub(crate) fn panic_for_test(&self) {
        let _ = self.tx.send(Command::Op {
            room: self.id,
            op: Box::new(Op::PanicForTest),
        });
    }
}

impl Drop for MediaRoom {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Close { room: self.id });
    }
}
