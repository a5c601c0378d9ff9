//! Per-partition offset tracking for at-least-once delivery.
//!
//! Events finish out of order (a dead-letter record can be acknowledged before an earlier
//! event's prediction), but a committed offset says "everything before this is done". So an
//! offset becomes storable only when it and every earlier in-flight offset of its partition
//! have been acknowledged.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
struct PartitionTrack {
    /// In-flight offsets in consumption order, with a done flag.
    pending: VecDeque<(i64, bool)>,
}

/// Tracks in-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionTrack>,
    in_flight: usize,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `partition` was consumed and is now in flight.
    pub fn begin(&mut self, partition: i32, offset: i64) {
        let track = self.partitions.entry(partition).or_default();
        debug_assert!(track.pending.back().is_none_or(|(o, _)| *o < offset), "offsets arrive in order");
        track.pending.push_back((offset, false));
        self.in_flight += 1;
    }

    /// Marks `offset` acknowledged. Returns the highest offset that is now safe to store, if the
    /// contiguous done prefix advanced. Unknown offsets (from a partition already given up) are
    /// ignored.
    pub fn complete(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let track = self.partitions.get_mut(&partition)?;
        let i = track.pending.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        if track.pending[i].1 {
            return None;
        }
        track.pending[i].1 = true;
        self.in_flight -= 1;
        let mut storable = None;
        while let Some(&(o, true)) = track.pending.front() {
            storable = Some(o);
            track.pending.pop_front();
        }
        storable
    }

    /// Events in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Events in flight on any of `partitions`.
    pub fn in_flight_for(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p))
            .map(|t| t.pending.iter().filter(|(_, done)| !done).count())
            .sum()
    }

    /// Stops tracking `partition` (revoked); returns how many of its events were still in flight.
    pub fn forget(&mut self, partition: i32) -> usize {
        let abandoned =
            self.partitions.remove(&partition).map(|t| t.pending.iter().filter(|(_, done)| !done).count()).unwrap_or(0);
        self.in_flight -= abandoned;
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_contiguous_prefix() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.begin(0, o);
        }
        assert_eq!(t.complete(0, 12), None);
        assert_eq!(t.complete(0, 11), None);
        assert_eq!(t.complete(0, 10), Some(12));
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete(0, 14), None);
        assert_eq!(t.complete(0, 13), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_duplicates_ignored() {
        let mut t = OffsetTracker::new();
        t.begin(0, 1);
        t.begin(1, 1);
        t.begin(0, 2);
        assert_eq!(t.complete(1, 1), Some(1));
        assert_eq!(t.complete(1, 1), None);
        assert_eq!(t.complete(0, 2), None);
        assert_eq!(t.in_flight_for(&[0]), 1);
        assert_eq!(t.complete(7, 1), None);
        assert_eq!(t.complete(0, 1), Some(2));
    }

    #[test]
    fn forgetting_a_partition_releases_its_in_flight_count() {
        let mut t = OffsetTracker::new();
        t.begin(3, 5);
        t.begin(3, 6);
        t.complete(3, 6);
        assert_eq!(t.forget(3), 1);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(3, 5), None);
    }
}
