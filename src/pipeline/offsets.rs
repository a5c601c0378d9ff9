//! Per-partition offset tracking for at-least-once delivery.
//!
//! Events finish out of order (a dead-letter record can be acknowledged before an earlier
//! event's prediction), but a committed offset says "everything before this is done". So an
//! offset becomes storable only when it and every earlier in-flight offset of its partition
//! have been acknowledged.

use std::collections::VecDeque;

/// Keyed by partition id: small integers the broker assigns, looked up several times per event,
/// so a fast hash (foldhash's) rather than std's SipHash, which resists keys an attacker picks.
type ByPartition<V> = foldhash::HashMap<i32, V>;

#[derive(Debug, Default)]
struct PartitionTrack {
    /// In-flight offsets in consumption order, with a done flag and the event's bytes.
    pending: VecDeque<(i64, bool, u32)>,
}

/// Tracks in-flight offsets of every assigned partition.
///
/// Each partition has a generation, bumped whenever its in-flight offsets are given up (a
/// revoke, or offsets that went backwards without one, as `auto.offset.reset` does after log
/// truncation). A report carries the generation its record was sent in, so a late report from
/// before cannot mark a re-read record of the same offset done.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: ByPartition<PartitionTrack>,
    generations: ByPartition<u32>,
    in_flight: usize,
    /// Bytes of the events in flight (their message values).
    in_flight_bytes: usize,
}

/// What [`OffsetTracker::begin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    /// The generation the offset's report must carry.
    pub generation: u32,
    /// The offset was not past the partition's last one: the earlier in-flight offsets were
    /// given up and a new generation started.
    pub reset: bool,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn generation(&self, partition: i32) -> u32 {
        self.generations.get(&partition).copied().unwrap_or(0)
    }

    /// Records that `offset` of `partition` was consumed and is now in flight.
    pub fn begin(&mut self, partition: i32, offset: i64) -> Begun {
        self.begin_sized(partition, offset, 0)
    }

    /// [`Self::begin`] for an event of `bytes` bytes, which count until it is acknowledged.
    pub fn begin_sized(&mut self, partition: i32, offset: i64, bytes: usize) -> Begun {
        let went_back =
            self.partitions.get(&partition).and_then(|t| t.pending.back()).is_some_and(|(last, _, _)| offset <= *last);
        if went_back {
            self.forget(partition);
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.partitions.entry(partition).or_default().pending.push_back((offset, false, bytes));
        self.in_flight += 1;
        self.in_flight_bytes += bytes as usize;
        Begun { generation: self.generation(partition), reset: went_back }
    }

    /// Marks `offset` acknowledged. Returns the highest offset that is now safe to store, if the
    /// contiguous done prefix advanced. Offsets of an earlier generation, or from a partition
    /// already given up, are ignored.
    pub fn complete(&mut self, partition: i32, offset: i64, generation: u32) -> Option<i64> {
        if generation != self.generation(partition) {
            return None;
        }
        let track = self.partitions.get_mut(&partition)?;
        // Offsets are consecutive but where a topic is compacted or transactional, so try the
        // slot that assumes they are before searching.
        let guess = track.pending.front().map_or(usize::MAX, |(first, _, _)| offset.wrapping_sub(*first) as usize);
        let i = match track.pending.get(guess) {
            Some((o, _, _)) if *o == offset => guess,
            _ => track.pending.binary_search_by_key(&offset, |(o, _, _)| *o).ok()?,
        };
        if track.pending[i].1 {
            return None;
        }
        track.pending[i].1 = true;
        self.in_flight -= 1;
        self.in_flight_bytes -= track.pending[i].2 as usize;
        let mut storable = None;
        while let Some(&(o, true, _)) = track.pending.front() {
            storable = Some(o);
            track.pending.pop_front();
        }
        storable
    }

    /// Events in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes of the events in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    /// Events in flight on any of `partitions`.
    pub fn in_flight_for(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p))
            .map(|t| t.pending.iter().filter(|(_, done, _)| !done).count())
            .sum()
    }

    /// Stops tracking `partition`'s in-flight offsets (revoked, or reset) and starts a new
    /// generation; returns how many were still in flight.
    pub fn forget(&mut self, partition: i32) -> usize {
        let (abandoned, bytes) = self.partitions.remove(&partition).map_or((0, 0), |t| {
            t.pending.iter().filter(|(_, done, _)| !done).fold((0, 0), |(n, b), (_, _, s)| (n + 1, b + *s as usize))
        });
        self.in_flight -= abandoned;
        self.in_flight_bytes -= bytes;
        let g = self.generations.entry(partition).or_default();
        *g = g.wrapping_add(1);
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
        assert_eq!(t.complete(0, 12, 0), None);
        assert_eq!(t.complete(0, 11, 0), None);
        assert_eq!(t.complete(0, 10, 0), Some(12));
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete(0, 14, 0), None);
        assert_eq!(t.complete(0, 13, 0), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    /// Offsets with gaps (a compacted or transactional topic): the slot that assumes consecutive
    /// offsets holds another offset, or none, and the search finds the right one.
    #[test]
    fn offsets_with_gaps_are_found() {
        let mut t = OffsetTracker::new();
        for o in [10, 12, 15, 16] {
            t.begin(0, o);
        }
        // 12's guessed slot (2) holds 15; 16's (6) is past the end; 11 and 9 were never read.
        assert_eq!(t.complete(0, 12, 0), None);
        assert_eq!(t.complete(0, 16, 0), None);
        assert_eq!(t.complete(0, 11, 0), None);
        assert_eq!(t.complete(0, 9, 0), None);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete(0, 10, 0), Some(12));
        // Now 15 is first: its guessed slot (0) is right.
        assert_eq!(t.complete(0, 15, 0), Some(16));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_duplicates_ignored() {
        let mut t = OffsetTracker::new();
        t.begin(0, 1);
        t.begin(1, 1);
        t.begin(0, 2);
        assert_eq!(t.complete(1, 1, 0), Some(1));
        assert_eq!(t.complete(1, 1, 0), None);
        assert_eq!(t.complete(0, 2, 0), None);
        assert_eq!(t.in_flight_for(&[0]), 1);
        assert_eq!(t.complete(7, 1, 0), None);
        assert_eq!(t.complete(0, 1, 0), Some(2));
    }

    #[test]
    fn forgetting_a_partition_releases_its_in_flight_count() {
        let mut t = OffsetTracker::new();
        t.begin(3, 5);
        t.begin(3, 6);
        t.complete(3, 6, 0);
        assert_eq!(t.forget(3), 1);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(3, 5, 0), None);
    }

    #[test]
    fn bytes_in_flight_follow_begin_complete_and_forget() {
        let mut t = OffsetTracker::new();
        t.begin_sized(0, 1, 100);
        t.begin_sized(0, 2, 50);
        t.begin_sized(1, 7, 1000);
        assert_eq!(t.in_flight_bytes(), 1150);
        t.complete(0, 2, 0);
        assert_eq!(t.in_flight_bytes(), 1100);
        assert_eq!(t.forget(1), 1);
        assert_eq!(t.in_flight_bytes(), 100);
        t.complete(0, 1, 0);
        assert_eq!((t.in_flight(), t.in_flight_bytes()), (0, 0));
    }

    #[test]
    fn offsets_that_go_back_start_a_new_generation_and_old_reports_are_ignored() {
        let mut t = OffsetTracker::new();
        for o in 100..103 {
            assert_eq!(t.begin(0, o), Begun { generation: 0, reset: false });
        }
        assert_eq!(t.complete(0, 100, 0), Some(100));
        // auto.offset.reset after log truncation: the partition is re-read from 101 (or earlier).
        assert_eq!(t.begin(0, 101), Begun { generation: 1, reset: true });
        t.begin(0, 102);
        assert_eq!(t.in_flight(), 2, "the abandoned 101 and 102 no longer count");
        // Late reports of the first reading must not mark the re-read records done.
        assert_eq!(t.complete(0, 101, 0), None);
        assert_eq!(t.complete(0, 102, 0), None);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete(0, 101, 1), Some(101));
        assert_eq!(t.complete(0, 102, 1), Some(102));
        assert_eq!(t.in_flight(), 0);
        // A re-assignment after a revoke is a new generation too.
        t.forget(0);
        assert_eq!(t.begin(0, 50).generation, 2);
    }
}
