//! Buffers handed back from the inference thread to the consumer thread.
//!
//! Each streamed event carries two heap buffers across: its model input (`Job::input`) and its
//! [`EventText`](super::EventText). The consumer thread allocates them and the inference thread
//! used to free them, and glibc's allocator serves that pattern badly: a chunk freed by another
//! thread goes back to its own arena under that arena's lock, and the next allocation misses the
//! thread cache. In a windowed co2-mlp drain the two threads' futex calls on that lock alone were
//! a tenth of the worker's CPU samples (`bench/FINDINGS.md`).
//!
//! So once an event's prediction is published, the inference thread hands both buffers back, one
//! channel message per batch, and the consumer decodes the next events into them. Nothing waits
//! on this path: a full channel drops the batch's buffers (they are freed as before), and an
//! empty stock makes the consumer allocate. What it keeps is bounded: buffers of at most
//! [`MAX_SPARE_BYTES`] each, at most one batch of them in the channel and one in the consumer's
//! stock (and one being collected): for `max_batch_size` 256 and the shipped bundles' windows,
//! under 2 MiB.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// A buffer with a larger allocation (an unusually large event) is freed, not kept.
pub const MAX_SPARE_BYTES: usize = 8 * 1024;

/// One scored event's buffers.
struct Spare {
    input: Vec<f32>,
    text: Vec<u8>,
}

/// The two ends, for batches of up to `batch` events.
pub fn spares(batch: usize) -> (SpareReturn, SpareStock) {
    let batch = batch.max(1);
    let (tx, rx) = sync_channel(1);
    (
        SpareReturn { tx, collected: Vec::new(), batch },
        SpareStock { rx, inputs: Vec::with_capacity(batch), texts: Vec::with_capacity(batch), batch },
    )
}

/// The inference thread's end: collects a batch's buffers and sends them in one message.
pub struct SpareReturn {
    tx: SyncSender<Vec<Spare>>,
    collected: Vec<Spare>,
    batch: usize,
}

impl SpareReturn {
    /// Keeps an event's buffers for the consumer, unless either is too large or a batch is
    /// already collected.
    pub fn keep(&mut self, input: Vec<f32>, text: Vec<u8>) {
        let small = input.capacity() * size_of::<f32>() <= MAX_SPARE_BYTES && text.capacity() <= MAX_SPARE_BYTES;
        if small && self.collected.len() < self.batch {
            if self.collected.capacity() == 0 {
                self.collected.reserve_exact(self.batch);
            }
            self.collected.push(Spare { input, text });
        }
    }

    /// Sends what was collected (at the end of a batch). A consumer that has not taken the last
    /// batch yet has enough: these are dropped.
    pub fn send(&mut self) {
        if !self.collected.is_empty() {
            let _ = self.tx.try_send(std::mem::take(&mut self.collected));
        }
    }
}

/// The consumer thread's end: buffers to decode into, or empty ones (which allocate on first
/// use) when none came back.
pub struct SpareStock {
    rx: Receiver<Vec<Spare>>,
    inputs: Vec<Vec<f32>>,
    texts: Vec<Vec<u8>>,
    batch: usize,
}

impl SpareStock {
    /// A buffer for an event's model input.
    pub fn input(&mut self) -> Vec<f32> {
        if self.inputs.is_empty() {
            self.refill();
        }
        self.inputs.pop().unwrap_or_default()
    }

    /// A buffer for an event's text.
    pub fn text(&mut self) -> Vec<u8> {
        if self.texts.is_empty() {
            self.refill();
        }
        self.texts.pop().unwrap_or_default()
    }

    /// Takes the batch the inference thread sent, if any; a stock already full of one kind (an
    /// event refused after decoding takes an input buffer but no text) drops the surplus.
    fn refill(&mut self) {
        let spares = match self.rx.try_recv() {
            Ok(spares) => spares,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        };
        for Spare { input, text } in spares {
            if self.inputs.len() < self.batch {
                self.inputs.push(input);
            }
            if self.texts.len() < self.batch {
                self.texts.push(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_once_a_batch_is_sent() {
        let (mut back, mut stock) = spares(2);
        assert_eq!(stock.input().capacity(), 0, "nothing came back yet");
        let input = Vec::<f32>::with_capacity(72);
        let text = Vec::<u8>::with_capacity(600);
        let (input_at, text_at) = (input.as_ptr(), text.as_ptr());
        back.keep(input, text);
        assert_eq!(stock.text().capacity(), 0, "kept, but not sent until the batch ends");
        back.send();
        let (input, text) = (stock.input(), stock.text());
        assert_eq!((input.as_ptr(), input.capacity()), (input_at, 72), "the same allocation");
        assert_eq!((text.as_ptr(), text.capacity()), (text_at, 600));
        assert_eq!(stock.input().capacity(), 0, "one event's buffers, used once");
    }

    #[test]
    fn what_it_keeps_is_bounded() {
        let (mut back, mut stock) = spares(2);
        // Too large: freed, not kept.
        back.keep(Vec::with_capacity(MAX_SPARE_BYTES / 4 + 1), Vec::with_capacity(16));
        back.keep(Vec::with_capacity(16), Vec::with_capacity(MAX_SPARE_BYTES + 1));
        back.send();
        assert_eq!(stock.input().capacity(), 0);
        // At most a batch collected; while the consumer has not taken a sent batch, the next
        // is dropped.
        for _ in 0..2 {
            for _ in 0..3 {
                back.keep(Vec::with_capacity(8), Vec::with_capacity(8));
            }
            back.send();
        }
        let taken = std::iter::from_fn(|| Some(stock.input())).take_while(|b| b.capacity() > 0).count();
        assert_eq!(taken, 2, "one batch of two; the third event and the second batch were dropped");
    }
}
