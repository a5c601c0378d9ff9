//! Per-series window state for models with `window > 1`, bounded by an LRU over series.
//!
//! Raw (un-normalized) values are kept, so a reloaded bundle with a different scaler normalizes
//! the same history its own way. Each entry remembers its partition: on revoke the partition's
//! series are dropped, since the next owner of that partition builds their state.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use lru::LruCache;

/// The window of one series: the last `T` observations, oldest first.
#[derive(Debug)]
struct SeriesWindow {
    partition: i32,
    rows: VecDeque<f32>,
}

/// Bounded per-series windows.
#[derive(Debug)]
pub struct WindowStore {
    window: usize,
    width: usize,
    series: LruCache<String, SeriesWindow>,
    evicted: u64,
}

/// What [`WindowStore::push`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// True when fewer than `T` observations were held and the oldest was repeated to pad.
    pub padded: bool,
    /// True when adding this series evicted the least recently seen one.
    pub evicted: bool,
}

impl WindowStore {
    pub fn new(window: usize, width: usize, max_series: usize) -> WindowStore {
        let cap = NonZeroUsize::new(max_series).unwrap_or(NonZeroUsize::MIN);
        WindowStore { window, width, series: LruCache::new(cap), evicted: 0 }
    }

    /// Appends `obs` to the series' window and writes the model input (`T·F` raw values, oldest
    /// first) into `out`.
    ///
    /// While a series has fewer than `T` observations the window is left-padded by repeating its
    /// oldest observation, so every event gets a prediction; the prediction is marked `warmup`.
    pub fn push(&mut self, partition: i32, series_id: &str, obs: &[f32], out: &mut Vec<f32>) -> Filled {
        debug_assert_eq!(obs.len(), self.width);
        let cap = self.window * self.width;
        let mut evicted = false;
        let entry = match self.series.get_mut(series_id) {
            Some(entry) => entry,
            None => {
                let fresh = SeriesWindow { partition, rows: VecDeque::with_capacity(cap) };
                if let Some((_, _)) = self.series.push(series_id.to_string(), fresh) {
                    evicted = true;
                    self.evicted += 1;
                }
                self.series.get_mut(series_id).expect("just inserted")
            }
        };
        entry.partition = partition;
        if entry.rows.len() == cap {
            entry.rows.drain(..self.width);
        }
        entry.rows.extend(obs.iter().copied());

        out.clear();
        let held = entry.rows.len() / self.width;
        let missing = self.window - held;
        let (a, b) = entry.rows.as_slices();
        for _ in 0..missing {
            // The oldest observation sits at the front of the ring.
            out.extend((0..self.width).map(|i| entry.rows[i]));
        }
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        Filled { padded: missing > 0, evicted }
    }

    /// Drops the state of series last seen on any of `partitions`; returns how many were dropped.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let doomed: Vec<String> =
            self.series.iter().filter(|(_, w)| partitions.contains(&w.partition)).map(|(k, _)| k.clone()).collect();
        for k in &doomed {
            self.series.pop(k);
        }
        doomed.len()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series evicted by the LRU cap since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_padding_then_slides() {
        let mut s = WindowStore::new(3, 2, 10);
        let mut out = Vec::new();
        assert!(s.push(0, "a", &[1.0, 10.0], &mut out).padded);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 1.0, 10.0]);
        assert!(s.push(0, "a", &[2.0, 20.0], &mut out).padded);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 2.0, 20.0]);
        assert!(!s.push(0, "a", &[3.0, 30.0], &mut out).padded);
        assert_eq!(out, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        assert!(!s.push(0, "a", &[4.0, 40.0], &mut out).padded);
        assert_eq!(out, vec![2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    }

    #[test]
    fn series_are_independent() {
        let mut s = WindowStore::new(2, 1, 10);
        let mut out = Vec::new();
        s.push(0, "a", &[1.0], &mut out);
        s.push(0, "b", &[5.0], &mut out);
        s.push(0, "a", &[2.0], &mut out);
        assert_eq!(out, vec![1.0, 2.0]);
        s.push(0, "b", &[6.0], &mut out);
        assert_eq!(out, vec![5.0, 6.0]);
    }

    #[test]
    fn lru_cap_evicts_least_recent_series() {
        let mut s = WindowStore::new(2, 1, 2);
        let mut out = Vec::new();
        s.push(0, "a", &[1.0], &mut out);
        s.push(0, "b", &[1.0], &mut out);
        s.push(0, "a", &[2.0], &mut out);
        assert!(s.push(0, "c", &[1.0], &mut out).evicted);
        assert_eq!((s.len(), s.evicted()), (2, 1));
        // `b` was evicted, so it starts over padded.
        assert!(s.push(0, "b", &[9.0], &mut out).padded);
    }

    #[test]
    fn revoked_partitions_lose_their_series() {
        let mut s = WindowStore::new(2, 1, 10);
        let mut out = Vec::new();
        s.push(0, "a", &[1.0], &mut out);
        s.push(1, "b", &[1.0], &mut out);
        s.push(2, "c", &[1.0], &mut out);
        assert_eq!(s.drop_partitions(&[0, 2]), 2);
        assert_eq!(s.len(), 1);
    }
}
