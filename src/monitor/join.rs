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
    /// Both sides are here: score them.
    Joined { prediction: WaitingPrediction, actual: Vec<f64> },
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

/// The bounded join buffer.
pub struct JoinBuffer {
    waiting: LruCache<String, Entry>,
    scored: LruCache<String, ()>,
    /// Per side and partition, the offsets of waiting entries (offset → count).
    offsets: HashMap<(Side, i32), BTreeMap<i64, u32>>,
    ttl: Duration,
    counts: JoinCounts,
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
            self.untrack(side_of(&entry), entry.source);
            self.scored.put(id.to_string(), ());
            self.counts.joined += 1;
            return match (entry.waiting, incoming) {
                (Waiting::Prediction(prediction), Waiting::Actual(actual))
                | (Waiting::Actual(actual), Waiting::Prediction(prediction)) => Offer::Joined { prediction, actual },
                _ => unreachable!("sides differ"),
            };
        }
        self.track(side, source);
        if let Some((_, old)) = self.waiting.push(id.to_string(), Entry { waiting: incoming, source, since: now }) {
            self.untrack(side_of(&old), old.source);
            match old.waiting.side() {
                Side::Prediction => self.counts.evicted_predictions += 1,
                Side::Actual => self.counts.evicted_actuals += 1,
            }
        }
        Offer::Waiting
    }

    /// Drops entries that waited longer than the TTL, counting them; `expired_prediction` is
    /// called with the key of each expired prediction.
    pub fn expire(&mut self, now: Instant, mut expired_prediction: impl FnMut(u16)) {
        while let Some((_, entry)) = self.waiting.peek_lru() {
            if now.saturating_duration_since(entry.since) < self.ttl {
                break;
            }
            let (_, entry) = self.waiting.pop_lru().expect("peeked above");
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
            self.waiting.pop(&k);
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

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        pages * 4096
    }

    fn p(v: f64) -> WaitingPrediction {
        WaitingPrediction { key: 0, values: vec![v] }
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
        assert_eq!(j.offer_actual("a", vec![2.0], src(0), t), Offer::Joined { prediction: p(1.0), actual: vec![2.0] });
        assert_eq!(j.offer_actual("b", vec![3.0], src(1), t), Offer::Waiting);
        assert_eq!(j.offer_prediction("b", p(4.0), src(2), t), Offer::Joined { prediction: p(4.0), actual: vec![3.0] });
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
    fn memory_stays_within_the_cap_with_a_million_unanswered_predictions() {
        let t = Instant::now();
        let cap = 100_000;
        let rss_before = rss_bytes();
        let mut j = JoinBuffer::new(cap, Duration::from_secs(86_400));
        let mut peak = 0;
        for i in 0..1_000_000i64 {
            j.offer_prediction(&format!("e-{i:07}"), p(i as f64), src(i), t);
            if i % 100_000 == 0 {
                peak = peak.max(rss_bytes());
            }
        }
        peak = peak.max(rss_bytes());
        let grown_mib = peak.saturating_sub(rss_before) as f64 / (1 << 20) as f64;
        eprintln!("join buffer: cap {cap}, 1,000,000 unanswered predictions, resident memory grew {grown_mib:.1} MiB");
        // About 200 bytes per waiting entry plus the remembered-id table: far below 1 GiB, and
        // flat once the cap is reached.
        assert!(grown_mib < 100.0, "grew {grown_mib:.1} MiB");
        assert_eq!(j.len(), cap);
        assert_eq!(j.counts().evicted_predictions, 1_000_000 - cap as u64);
        // The oldest went first: the commit point is the oldest entry still held.
        assert_eq!(j.commit_point(Side::Prediction, 0, 1_000_000), 1_000_000 - cap as i64);
    }
}
