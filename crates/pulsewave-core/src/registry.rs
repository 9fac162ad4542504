//! The room's objects (transports, producers, consumers, data producers,
//! data consumers): a slab for stable keys, an index from their wire ids,
//! and the owner check every command makes, in one place.

use crate::owners::Owner;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Index, IndexMut};

use slab::Slab;

/// An object of a [`Registry`]: it knows its id and its owner.
pub(crate) trait Entry {
    /// The wire id.
    type Id: Clone + Eq + Hash;
    /// Its id.
    fn id(&self) -> &Self::Id;
    /// The participant it belongs to.
    fn owner(&self) -> Owner;
}

/// Why [`Registry::owned`] found nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No object with this id.
    NotFound,
    /// It exists and belongs to someone else.
    NotOwner,
}

/// Objects by key and by id.
#[derive(Debug)]
pub(crate) struct Registry<T: Entry> {
    slab: Slab<T>,
    ids: HashMap<T::Id, usize>,
}

impl<T: Entry> Default for Registry<T> {
    fn default() -> Self {
        Self {
            slab: Slab::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: Entry> Registry<T> {
    /// Every object with its key, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slab.iter_mut()
    }

    /// Adds an object; returns its key.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let id = value.id().clone();
        let key = self.slab.insert(value);
        self.ids.insert(id, key);
        key
    }

    /// The key the next [`Registry::insert`] returns.
    pub(crate) fn next_key(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Removes an object by key.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.slab.try_remove(key)?;
        self.ids.remove(value.id());
        Some(value)
    }

    /// An object by key.
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        self.slab.get(key)
    }

    /// An object by key, to change.
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slab.get_mut(key)
    }

    /// The key of an id.
    pub(crate) fn key(&self, id: &T::Id) -> Option<usize> {
        self.ids.get(id).copied()
    }

    /// The object with this id, if any.
    pub(crate) fn by_id(&self, id: &T::Id) -> Option<&T> {
        self.key(id).and_then(|k| self.slab.get(k))
    }

    /// The key of `owner`'s object `id`.
    pub(crate) fn owned(&self, id: &T::Id, owner: Owner) -> Result<usize, Lookup> {
        let key = self.key(id).ok_or(Lookup::NotFound)?;
        match self.slab.get(key) {
            Some(v) if v.owner() == owner => Ok(key),
            Some(_) => Err(Lookup::NotOwner),
            None => Err(Lookup::NotFound),
        }
    }

    /// Objects held.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

impl<T: Entry> Index<usize> for Registry<T> {
    type Output = T;
    fn index(&self, key: usize) -> &T {
        &self.slab[key]
    }
}

impl<T: Entry> IndexMut<usize> for Registry<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        &mut self.slab[key]
    }
}

/// Implements [`Entry`] for a type with `id` and `owner` fields.
macro_rules! entry {
    ($t:ty, $id:ty) => {
        impl crate::registry::Entry for $t {
            type Id = $id;
            fn id(&self) -> &$id {
                &self.id
            }
            fn owner(&self) -> crate::Owner {
                self.owner
            }
        }
    };
}
pub(crate) use entry;
