//! The join of late actuals to earlier predictions, by event id.
//!
//! Either side may arrive first; the other side waits up to the TTL. Memory is bounded by a cap
//! on waiting entries: at the cap the oldest entry is evicted first and counted, never silently.
//! Ids already scored are remembered (bounded too), so a duplicate prediction or actual, as
//! at-least-once delivery produces, is scored once.
//!
//! Every waiting entry remembers the topic partition and offset it came from, so the monitor can
//! commit, per partition, the lowest offset still waiting: after a restart or a rebalance the
//! next owner re-reads from there and the pending joins are rebuilt from Kafka itself.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Which input topic an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Prediction,
    Actual,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
}

/// A waiting prediction: its values and which model version and variant (an index into the
/// monitor's key table) produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingPrediction {
    pub key: u16,
    pub values: Vec<f64>,
    /// The horizon step (0 = step 1) of `values[0]`: 0 for a whole forecast joined by id, h - 1
    /// for step h of a forecast joined by time.
    pub first_step: usize,
    /// The interval the forecast was served with, per value of `values` (`(lower, upper)`);
    /// empty when it carried none, or an uncalibrated one.
    pub bounds: Vec<(f64, f64)>,
    /// A quantile bundle's forecast: per value of `values`, one value per quantile level;
    /// empty otherwise.
    pub quantiles: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Waiting {
    Prediction(WaitingPrediction),
    Actual(Vec<f64>),
}

impl Waiting {
    fn side(&self) -> Side {
        match self {
            Waiting::Prediction(_) => Side::Prediction,
            Waiting::Actual(_) => Side::Actual,
        }
    }
}

#[derive(Debug)]
struct Entry {
    waiting: Waiting,
    source: Source,
    since: Instant,
}

/// What offering a record to the join did.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// Both sides are here: score them. `sources` are the prediction's and the actual's records.
    Joined { prediction: WaitingPrediction, actual: Vec<f64>, sources: [Source; 2] },
    /// Waiting for the other side.
    Waiting,
    /// This id was already scored, or the same side is already waiting: ignored.
    Duplicate,
}

/// Cumulative counters of the join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinCounts {
    pub joined: u64,
    /// Predictions whose actual did not arrive within the TTL.
    pub expired: u64,
    /// Actuals whose prediction did not arrive within the TTL.
    pub unmatched_actuals: u64,
    /// Entries pushed out by the memory cap (oldest first), per side.
    pub evicted_predictions: u64,
    pub evicted_actuals: u64,
    pub duplicates: u64,
}

/// Memory an entry costs beyond its id and values: the LRU node, the map slot, the entry itself
/// (measured: about 200 bytes per waiting entry with a short id, see the test below).
const ENTRY_OVERHEAD: usize = 160;
/// Memory a remembered scored id costs beyond its bytes.
const SCORED_OVERHEAD: usize = 80;

fn waiting_cost(id: &str, w: &Waiting) -> usize {
    let values = match w {
        Waiting::Prediction(p) => p.values.len() + 2 * p.bounds.len() + p.quantiles.len(),
        Waiting::Actual(a) => a.len(),
    };
    id.len() + values * 8 + ENTRY_OVERHEAD
}

/// The bounded join buffer.
pub struct JoinBuffer {
    waiting: LruCache<String, Entry>,
    scored: LruCache<String, ()>,
    /// Per side and partition, the offsets of waiting entries (offset → count).
    offsets: HashMap<(Side, i32), BTreeMap<i64, u32>>,
    ttl: Duration,
    counts: JoinCounts,
    /// Estimated bytes held (ids, values, per-entry overhead), bounded by `max_bytes`.
    bytes: usize,
    /// The part of `bytes` that remembered scored ids hold.
    scored_bytes: usize,
    max_bytes: usize,
}

impl JoinBuffer {
    /// `cap` bounds the waiting entries and, separately, the remembered scored ids.
    pub fn new(cap: usize, ttl: Duration) -> JoinBuffer {
        let cap = NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN);
        JoinBuffer {
            waiting: LruCache::new(cap),
            scored: LruCache::new(cap),
            offsets: HashMap::new(),
            ttl,
            counts: JoinCounts::default(),
            bytes: 0,
            scored_bytes: 0,
            max_bytes: usize::MAX,
        }
    }

    /// Also bounds the estimated memory: past `max_bytes` the oldest waiting entries are evicted
    /// (and counted), unless remembered ids hold more than half of it: then the oldest of those
    /// go first. Ids of any length then cost what they are.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> JoinBuffer {
        self.max_bytes = max_bytes;
        self
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remember_scored(&mut self, id: &str) {
        self.bytes += id.len() + SCORED_OVERHEAD;
        self.scored_bytes += id.len() + SCORED_OVERHEAD;
        if let Some((old, ())) = self.scored.push(id.to_string(), ()) {
            self.bytes -= old.len() + SCORED_OVERHEAD;
            self.scored_bytes -= old.len() + SCORED_OVERHEAD;
        }
    }

    fn forget_oldest_scored(&mut self) -> bool {
        let Some((id, ())) = self.scored.pop_lru() else { return false };
        self.bytes -= id.len() + SCORED_OVERHEAD;
        self.scored_bytes -= id.len() + SCORED_OVERHEAD;
        true
    }

    fn count_evicted(&mut self, side: Side) {
        match side {
            Side::Prediction => self.counts.evicted_predictions += 1,
            Side::Actual => self.counts.evicted_actuals += 1,
        }
    }

    /// Evicts oldest first until the estimate is within `max_bytes`. A remembered id only stops a
    /// duplicate being scored twice, while a waiting entry is a join still to come, so waiting
    /// entries go first; but remembered ids may not hold more than half the bound, or after
    /// enough joins with long ids every new entry would be the oldest waiting one, evicted as it
    /// arrives, and nothing would join again.
    fn shrink(&mut self) {
        while self.bytes > self.max_bytes {
            if self.scored_bytes > self.max_bytes / 2 && self.forget_oldest_scored() {
                continue;
            }
            if let Some((id, old)) = self.waiting.pop_lru() {
                self.bytes -= waiting_cost(&id, &old.waiting);
                self.untrack(side_of(&old), old.source);
                self.count_evicted(old.waiting.side());
            } else if !self.forget_oldest_scored() {
                break;
            }
        }
    }

    pub fn offer_prediction(&mut self, id: &str, p: WaitingPrediction, source: Source, now: Instant) -> Offer {
        self.offer(id, Waiting::Prediction(p), source, now)
    }

    pub fn offer_actual(&mut self, id: &str, actual: Vec<f64>, source: Source, now: Instant) -> Offer {
        self.offer(id, Waiting::Actual(actual), source, now)
    }

    fn offer(&mut self, id: &str, incoming: Waiting, source: Source, now: Instant) -> Offer {
        if self.scored.contains(id) {
            self.counts.duplicates += 1;
            return Offer::Duplicate;
        }
        let side = incoming.side();
        if let Some(entry) = self.waiting.peek(id) {
            if entry.waiting.side() == side {
                self.counts.duplicates += 1;
                return Offer::Duplicate;
            }
            let entry = self.waiting.pop(id).expect("peeked above");
            self.bytes -= waiting_cost(id, &entry.waiting);
            self.untrack(side_of(&entry), entry.source);
            self.remember_scored(id);
            self.shrink();
            self.counts.joined += 1;
            return match (entry.waiting, incoming) {
                (Waiting::Prediction(prediction), Waiting::Actual(actual)) => {
                    Offer::Joined { prediction, actual, sources: [entry.source, source] }
                }
                (Waiting::Actual(actual), Waiting::Prediction(prediction)) => {
                    Offer::Joined { prediction, actual, sources: [source, entry.source] }
                }
                _ => unreachable!("sides differ"),
            };
        }
        self.track(side, source);
        self.bytes += waiting_cost(id, &incoming);
        if let Some((old_id, old)) = self.waiting.push(id.to_string(), Entry { waiting: incoming, source, since: now })
        {
            self.bytes -= waiting_cost(&old_id, &old.waiting);
            self.untrack(side_of(&old), old.source);
            self.count_evicted(old.waiting.side());
        }
        self.shrink();
        Offer::Waiting
    }

    /// Drops entries that waited longer than the TTL, counting them; `expired_prediction` is
    /// called with the key of each expired prediction.
    pub fn expire(&mut self, now: Instant, mut expired_prediction: impl FnMut(u16)) {
        while let Some((_, entry)) = self.waiting.peek_lru() {
            if now.saturating_duration_since(entry.since) < self.ttl {
                break;
            }
            let (id, entry) = self.waiting.pop_lru().expect("peeked above");
            self.bytes -= waiting_cost(&id, &entry.waiting);
            self.untrack(side_of(&entry), entry.source);
            match entry.waiting {
                Waiting::Prediction(p) => {
                    self.counts.expired += 1;
                    expired_prediction(p.key);
                }
                Waiting::Actual(_) => self.counts.unmatched_actuals += 1,
            }
        }
    }

    /// Forgets the waiting entries of a revoked partition; the next owner re-reads them from the
    /// committed watermark.
    pub fn drop_partition(&mut self, side: Side, partition: i32) {
        let doomed: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, e)| e.waiting.side() == side && e.source.partition == partition)
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(e) = self.waiting.pop(&k) {
                self.bytes -= waiting_cost(&k, &e.waiting);
            }
        }
        self.offsets.remove(&(side, partition));
    }

    /// The offset to commit for a partition: the lowest offset still waiting, or `next` (one
    /// past the last record read) when nothing of that partition waits.
    pub fn commit_point(&self, side: Side, partition: i32, next: i64) -> i64 {
        self.offsets
            .get(&(side, partition))
            .and_then(|m| m.keys().next().copied())
            .map_or(next, |lowest| lowest.min(next))
    }

    /// Waiting predictions per key (model version and variant).
    pub fn pending_by_key(&self) -> HashMap<u16, u64> {
        let mut out = HashMap::new();
        for (_, e) in self.waiting.iter() {
            if let Waiting::Prediction(p) = &e.waiting {
                *out.entry(p.key).or_default() += 1;
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn counts(&self) -> JoinCounts {
        self.counts
    }

    fn track(&mut self, side: Side, source: Source) {
        *self.offsets.entry((side, source.partition)).or_default().entry(source.offset).or_default() += 1;
    }

    fn untrack(&mut self, side: Side, source: Source) {
        if let Some(m) = self.offsets.get_mut(&(side, source.partition)) {
            if let Some(n) = m.get_mut(&source.offset) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&source.offset);
                }
            }
        }
    }
}

fn side_of(e: &Entry) -> Side {
    e.waiting.side()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: f64) -> WaitingPrediction {
        WaitingPrediction { key: 0, values: vec![v], first_step: 0, bounds: Vec::new(), quantiles: Vec::new() }
    }

    fn src(offset: i64) -> Source {
        Source { partition: 0, offset }
    }

    #[test]
    fn joins_in_either_order_and_scores_duplicates_once() {
        let t = Instant::now();
        let mut j = JoinBuffer::new(10, Duration::from_secs(60));
        assert_eq!(j.offer_prediction("a", p(1.0), src(0), t), Offer::Waiting);
        assert_eq!(j.offer_prediction("a", p(1.0), src(1), t), Offer::Duplicate);
        let joined = |value, actual, sources| Offer::Joined { prediction: p(value), actual, sources };
        assert_eq!(j.offer_actual("a", vec![2.0], src(0), t), joined(1.0, vec![2.0], [src(0), src(0)]));
        assert_eq!(j.offer_actual("b", vec![3.0], src(1), t), Offer::Waiting);
        assert_eq!(j.offer_prediction("b", p(4.0), src(2), t), joined(4.0, vec![3.0], [src(2), src(1)]));
        assert_eq!(j.offer_prediction("b", p(4.0), src(3), t), Offer::Duplicate);
        assert_eq!(j.offer_actual("a", vec![2.0], src(2), t), Offer::Duplicate);
        assert_eq!(j.counts().joined, 2);
        assert_eq!(j.counts().duplicates, 3);
        assert!(j.is_empty());
    }

    #[test]
    fn ttl_expires_each_side_into_its_counter() {
        let t = Instant::now();
        let mut j = JoinBuffer::new(10, Duration::from_secs(60));
        j.offer_prediction("a", p(1.0), src(0), t);
        j.offer_actual("b", vec![1.0], src(0), t + Duration::from_secs(30));
        j.expire(t + Duration::from_secs(61), |_| {});
        assert_eq!((j.counts().expired, j.counts().unmatched_actuals, j.len()), (1, 0, 1));
        j.expire(t + Duration::from_secs(91), |_| {});
        assert_eq!((j.counts().expired, j.counts().unmatched_actuals, j.len()), (1, 1, 0));
    }

    #[test]
    fn commit_point_is_the_lowest_waiting_offset() {
        let t = Instant::now();
        let mut j = JoinBuffer::new(10, Duration::from_secs(60));
        j.offer_prediction("a", p(1.0), src(5), t);
        j.offer_prediction("b", p(1.0), src(7), t);
        assert_eq!(j.commit_point(Side::Prediction, 0, 9), 5);
        j.offer_actual("a", vec![1.0], Source { partition: 0, offset: 3 }, t);
        assert_eq!(j.commit_point(Side::Prediction, 0, 9), 7);
        assert_eq!(j.commit_point(Side::Actual, 0, 4), 4);
        assert_eq!(j.commit_point(Side::Prediction, 1, 12), 12);
    }

    #[test]
    fn long_ids_are_held_to_the_byte_bound_oldest_first() {
        let t = Instant::now();
        let mut j = JoinBuffer::new(1_000_000, Duration::from_secs(60)).with_max_bytes(1 << 20);
        let long = |i: usize| format!("{i:06}{}", "x".repeat(10_000));
        for i in 0..1000 {
            assert_eq!(j.offer_prediction(&long(i), p(1.0), src(i as i64), t), Offer::Waiting);
            assert!(j.bytes() <= 1 << 20, "{} bytes held after {i}", j.bytes());
        }
        // About 100 entries of 10 KB fit in 1 MiB; the oldest went first and were counted.
        assert!((90..=104).contains(&j.len()), "{}", j.len());
        assert_eq!(j.counts().evicted_predictions, 1000 - j.len() as u64);
        assert_eq!(j.commit_point(Side::Prediction, 0, 1000), 1000 - j.len() as i64);
        // Joining and expiring give the bytes back.
        let newest = long(999);
        assert!(matches!(j.offer_actual(&newest, vec![1.0], src(0), t), Offer::Joined { .. }));
        j.expire(t + Duration::from_secs(61), |_| {});
        assert!(j.is_empty());
        assert!(j.bytes() > 0 && j.bytes() < 11_000, "only the remembered id is left: {}", j.bytes());
    }

    #[test]
    fn remembered_ids_give_way_before_they_crowd_out_new_joins() {
        let t = Instant::now();
        let mut j = JoinBuffer::new(1_000_000, Duration::from_secs(60)).with_max_bytes(1 << 20);
        let id = |i: usize| format!("{i:06}{}", "x".repeat(1_000));
        // Far more joined ids than the bound holds: alone they would fill it many times over.
        for i in 0..5_000 {
            assert_eq!(j.offer_prediction(&id(i), p(1.0), src(i as i64), t), Offer::Waiting);
            assert!(matches!(j.offer_actual(&id(i), vec![1.0], src(i as i64), t), Offer::Joined { .. }), "{i}");
            assert!(j.bytes() <= 1 << 20, "{} bytes held after {i}", j.bytes());
        }
        assert_eq!(j.counts().evicted_predictions + j.counts().evicted_actuals, 0);
        // The newest remembered ids still catch duplicates; the oldest were let go.
        assert_eq!(j.offer_actual(&id(4_999), vec![1.0], src(0), t), Offer::Duplicate);
        assert_eq!(j.offer_actual(&id(0), vec![1.0], src(0), t), Offer::Waiting);
        // Entries that wait still get at least half the bound: about 500 of these.
        for i in 10_000..10_400 {
            assert_eq!(j.offer_prediction(&id(i), p(1.0), src(i as i64), t), Offer::Waiting);
        }
        assert_eq!(j.len(), 401, "the waiting actual and 400 predictions");
        assert_eq!(j.counts().evicted_predictions + j.counts().evicted_actuals, 0);
        assert!(j.bytes() <= 1 << 20);
    }
}
