//! A min-heap of deadlines with lazy deletion: the room's (and the
//! endpoint's) next wakeup in O(log n), and the objects due at an instant
//! without a scan.
//!
//! An entry names an object and the deadline it had when pushed. Owners
//! push a new entry when an object's deadline moves earlier than the one it
//! has in the heap, and check, when an entry comes due, whether the object
//! still needs anything: an entry whose deadline moved later (or whose
//! object is gone) is a harmless early wakeup.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines of objects `K`.
#[derive(Debug, Clone)]
pub(crate) struct Timers<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Wakes `key` at `at`.
    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes an entry due at `now`, with its deadline.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries held (live and stale).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_due_entries_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        t.push(t0 + ms(30), 3u32);
        t.push(t0 + ms(10), 1);
        t.push(t0 + ms(20), 2);
        assert_eq!(t.next(), Some(t0 + ms(10)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(10), 1)));
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(20), 2)));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(t.len(), 1);
    }
}
