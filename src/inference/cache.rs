//! The optional prediction cache: a bounded LRU from (model version, input window) to the
//! de-normalized prediction.
//!
//! It pays when identical windows recur: replays of a topic, retries, and HTTP `/predict` clients
//! asking about the same window. In a live stream every window is new, so it is off by default.
//! Entries keep their input, so a 64-bit hash collision can never return another window's
//! prediction; a new model version misses by construction and old entries age out.

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;

use lru::LruCache;

struct Entry {
    version: Box<str>,
    input: Box<[f32]>,
    output: Box<[f32]>,
}

pub struct PredictionCache {
    entries: LruCache<u64, Entry>,
    hasher: std::collections::hash_map::RandomState,
    pub hits: u64,
    pub misses: u64,
}

impl PredictionCache {
    pub fn new(capacity: usize) -> PredictionCache {
        PredictionCache {
            entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            hasher: Default::default(),
            hits: 0,
            misses: 0,
        }
    }

    fn key(&self, version: &str, input: &[f32]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(version.as_bytes());
        for v in input {
            h.write_u32(v.to_bits());
        }
        h.finish()
    }

    /// The cached prediction for `input` under `version`, counting a hit or a miss.
    pub fn get(&mut self, version: &str, input: &[f32]) -> Option<&[f32]> {
        let key = self.key(version, input);
        match self.entries.get(&key) {
            Some(e)
                if &*e.version == version
                    && e.input.iter().map(|v| v.to_bits()).eq(input.iter().map(|v| v.to_bits())) =>
            {
                self.hits += 1;
                self.entries.get(&key).map(|e| &*e.output)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn put(&mut self, version: &str, input: &[f32], output: &[f32]) {
        let key = self.key(version, input);
        self.entries.put(key, Entry { version: version.into(), input: input.into(), output: output.into() });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
