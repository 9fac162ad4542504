//! What each participant holds in a room: its transports and the number of
//! its producers, consumers, data producers and data consumers, so that the
//! per-participant limits and "my transports" are O(1), not scans of the
//! room.

use std::collections::HashMap;
use std::fmt;

use crate::transport::TransportKey;

/// Who holds an object in a room: an opaque key the caller chooses (a
/// participant, a session, a bot), unique within the room. The core never
/// interprets it; it only checks that commands name the object's owner and
/// reports it back in events.
///
/// ```
/// use pulsewave_core::Owner;
/// let alice = Owner::new(1);
/// assert_eq!(alice.get(), 1);
/// assert_ne!(alice, Owner::new(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(u64);

impl Owner {
    /// The owner with the caller's key `key`.
    pub const fn new(key: u64) -> Self {
        Self(key)
    }

    /// The caller's key.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Owner {
    fn from(key: u64) -> Self {
        Self(key)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "owner#{}", self.0)
    }
}

/// One participant's holdings.
#[derive(Debug, Default, Clone)]
pub(crate) struct Holdings {
    /// Its transports (at most `max_transports_per_participant`).
    pub(crate) transports: Vec<TransportKey>,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) data_producers: usize,
    pub(crate) data_consumers: usize,
}

impl Holdings {
    fn is_empty(&self) -> bool {
        self.transports.is_empty()
            && self.producers == 0
            && self.consumers == 0
            && self.data_producers == 0
            && self.data_consumers == 0
    }
}

/// Every participant's holdings; a participant holding nothing has no entry.
#[derive(Debug, Default)]
pub(crate) struct Owners(HashMap<Owner, Holdings>);

/// Nothing, for participants without an entry.
static NOTHING: Holdings = Holdings {
    transports: Vec::new(),
    producers: 0,
    consumers: 0,
    data_producers: 0,
    data_consumers: 0,
};

impl Owners {
    /// What `owner` holds (nothing if unknown).
    pub(crate) fn of(&self, owner: Owner) -> &Holdings {
        self.0.get(&owner).unwrap_or(&NOTHING)
    }

    /// Every participant holding something, with its holdings.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Owner, &Holdings)> {
        self.0.iter().map(|(o, h)| (*o, h))
    }

    /// Whether nobody holds anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds to what `owner` holds.
    pub(crate) fn add(&mut self, owner: Owner, f: impl FnOnce(&mut Holdings)) {
        f(self.0.entry(owner).or_default());
    }

    /// Takes from what `owner` holds; forgets the owner once it holds
    /// nothing.
    pub(crate) fn remove(&mut self, owner: Owner, f: impl FnOnce(&mut Holdings)) {
        if let Some(h) = self.0.get_mut(&owner) {
            f(h);
            if h.is_empty() {
                self.0.remove(&owner);
            }
        }
    }
}
