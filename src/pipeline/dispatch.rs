//! Where each scored row goes, by its origin: a streamed event's prediction (and shadow
//! prediction) to Kafka, or its dead letter when nothing could score it; an HTTP request's
//! answer back to the waiting handler.

use std::sync::Arc;
use std::time::Instant;

use super::publish::Publisher;
use super::spares::SpareReturn;
use super::{Origin, RequestOrigin, Scored, StreamOrigin};
use crate::event::{rfc3339, IntervalIn, IntervalOut, ModelRef, PredictionOut, QuantilesOut, RejectKind, Variant};
use crate::inference::batcher::RowStatus;
use crate::inference::{BatchOutcome, InferenceError, Job, JobSink};
use crate::interval::{CalibrationTable, SharedCalibration};
use crate::telemetry::events::{BatchPublished, InternalEvent};
use crate::telemetry::Metrics;

/// One scored row, as its origin needs it.
struct Row<'a> {
    prediction: &'a [f32],
    model: &'a ModelRef,
    variant: Variant,
    fallback: bool,
    /// A quantile bundle's quantiles of this row (none for the fallback's rows).
    quantiles: Option<QuantilesOut<'a>>,
    /// The shadow's model and its prediction for this row (with its quantiles).
    shadow: Option<(&'a ModelRef, &'a [f32], Option<QuantilesOut<'a>>)>,
    published: &'a Published,
}

/// When a batch's predictions are handed to the producer: one reading of each clock per batch,
/// not per row (a reading costs about 25 ns on this project's VMs, close to 1 % of a small
/// model's CPU per event).
struct Published {
    /// Where each row's `latency_ms` ends.
    at: Instant,
    /// Every prediction's `produced_at`, and its record's timestamp.
    produced_at: String,
    timestamp_ms: i64,
}

impl Published {
    fn now() -> Published {
        let wall = chrono::Utc::now();
        Published { at: Instant::now(), produced_at: rfc3339(wall), timestamp_ms: wall.timestamp_millis() }
    }
}

/// Puts the monitor's calibrated interval around forecasts (`intervals.enabled`).
pub struct Intervals {
    shared: SharedCalibration,
    level: f64,
    /// CQR (`intervals.method = "cqr"`): the band's lower and upper quantile indices, of `Q`.
    cqr: Option<(usize, usize, usize)>,
    /// The table as of the current batch: read once per batch, not per row.
    table: Arc<CalibrationTable>,
    /// Reused per row: what the interval is built around, and its bounds.
    band: Vec<(f32, f32)>,
    lower: Vec<f32>,
    upper: Vec<f32>,
}

impl Intervals {
    /// `cqr`: the quantile band's `(lower index, upper index, Q)` under CQR.
    pub fn new(shared: SharedCalibration, level: f64, cqr: Option<(usize, usize, usize)>) -> Intervals {
        let table = shared.current();
        Intervals { table, shared, level, cqr, band: Vec::new(), lower: Vec::new(), upper: Vec::new() }
    }

    fn refresh(&mut self) {
        self.table = self.shared.current();
    }

    /// The interval of `prediction` (with its `quantiles`, step-major) by `model` × `variant`;
    /// `lower`/`upper` hold its bounds. Under CQR a row without quantiles (the fallback's) has
    /// none: the calibration is of the quantile band.
    fn of(
        &mut self,
        model: &ModelRef,
        variant: Variant,
        prediction: &[f32],
        quantiles: Option<&[f32]>,
    ) -> IntervalOut<'_> {
        self.band.clear();
        match (self.cqr, quantiles) {
            (Some((lo, hi, q)), Some(values)) => self.band.extend(values.chunks_exact(q).map(|s| (s[lo], s[hi]))),
            (Some(_), None) => {}
            (None, _) => self.band.extend(prediction.iter().map(|p| (*p, *p))),
        }
        let calibrated = match self.table.get(model, variant) {
            Some(c) if !self.band.is_empty() => c.bounds(&self.band, &mut self.lower, &mut self.upper),
            _ => false,
        };
        IntervalOut {
            level: self.level,
            calibrated,
            lower: calibrated.then_some(self.lower.as_slice()),
            upper: calibrated.then_some(self.upper.as_slice()),
        }
    }
}

/// Publishes streamed events' predictions and dead letters.
pub struct StreamPublisher {
    publisher: Publisher,
    metrics: Arc<Metrics>,
    /// Reused for every encoded prediction.
    buf: Vec<u8>,
    intervals: Option<Intervals>,
}

impl StreamPublisher {
    pub fn new(publisher: Publisher, metrics: Arc<Metrics>, intervals: Option<Intervals>) -> StreamPublisher {
        StreamPublisher { publisher, metrics, buf: Vec::with_capacity(512), intervals }
    }

    fn publish(&mut self, o: &mut StreamOrigin, row: Row<'_>) {
        let latency = row.published.at.saturating_duration_since(o.received);
        let latency_ms = latency.as_secs_f64() * 1e3;
        let (id, series_id, timestamp) = o.text.strings();
        let mut intervals = self.intervals.as_mut();
        let mut encode =
            |prediction: &[f32], quantiles: Option<QuantilesOut<'_>>, model, variant, fallback, buf: &mut Vec<u8>| {
                PredictionOut {
                    id,
                    series_id,
                    timestamp,
                    prediction,
                    model,
                    variant,
                    latency_ms,
                    produced_at: &row.published.produced_at,
                    warmup: o.warmup,
                    gap_filled: o.gap_filled,
                    fallback,
                    interval: intervals.as_mut().map(|i| i.of(model, variant, prediction, quantiles.map(|q| q.values))),
                    quantiles,
                }
                .encode(buf)
            };
        encode(row.prediction, row.quantiles, row.model, row.variant, row.fallback, &mut self.buf);
        if !self.publisher.fits(series_id.len(), self.buf.len()) {
            // Only a huge horizon gets here (ids are bounded at decoding): dead-letter the event
            // rather than have the producer refuse the prediction.
            let reason =
                format!("the prediction record ({} bytes) exceeds the producer's message.max.bytes", self.buf.len());
            self.fail(o, RejectKind::Oversized, &reason);
            return;
        }
        // With OTLP export on, the record carries the `send` span's context (same trace).
        let send = o.span.as_ref().map(|span| span.send(row.model, row.variant.as_str(), row.fallback, series_id));
        let traceparent = match &send {
            Some(send) => Some(send.traceparent()),
            None => o.traceparent.take(),
        };
        self.publisher.prediction(o.token, series_id, &self.buf, traceparent.as_deref(), row.published.timestamp_ms);
        drop(send);
        self.metrics.end_to_end_latency.observe(latency.as_secs_f64());
        if let Some((model, values, quantiles)) = row.shadow {
            encode(values, quantiles, model, Variant::Shadow, false, &mut self.buf);
            // Its primary prediction fitted, and it is the same size but for the variant name.
            self.publisher.shadow(series_id, &self.buf, row.published.timestamp_ms);
            self.metrics.predictions.with_label_values(&[Variant::Shadow.as_str()]).inc();
        }
    }

    /// Dead-letters an event that got no prediction: its original bytes.
    fn fail(&self, o: &StreamOrigin, kind: RejectKind, reason: &str) {
        if let Some(span) = &o.span {
            span.failed(kind.as_str(), reason);
        }
        let series_id = o.text.strings().1;
        self.publisher.dead_letter(o.token, Some(series_id.as_bytes()), o.text.payload(), kind, reason);
    }
}

impl RequestOrigin {
    fn answer(self, answer: Result<Scored, String>) {
        // The handler may have given up (client gone): nobody is left to tell.
        let _ = self.reply.send(answer);
    }
}

/// The inference thread's sink: routes every row of a scored batch by its origin.
pub struct Dispatcher {
    stream: StreamPublisher,
    metrics: Arc<Metrics>,
    /// Counts down the stream jobs of each batch once they are published.
    unscored: super::Unscored,
    /// A quantile row's point forecast (its 0.5 quantiles), and the shadow's; reused.
    point: Vec<f32>,
    shadow_point: Vec<f32>,
    /// Published events' buffers, back to the consumer.
    spares: SpareReturn,
}

impl Dispatcher {
    pub fn new(
        stream: StreamPublisher,
        metrics: Arc<Metrics>,
        unscored: super::Unscored,
        spares: SpareReturn,
    ) -> Dispatcher {
        Dispatcher { stream, metrics, unscored, point: Vec::new(), shadow_point: Vec::new(), spares }
    }

    fn fail(&self, origin: Origin, reason: &str) {
        match origin {
            Origin::Stream(o) => self.stream.fail(&o, RejectKind::InferenceError, reason),
            Origin::Request(r) => r.answer(Err(reason.to_string())),
        }
    }

    /// Dead-letters (or answers with an error) every job of a batch that produced nothing.
    fn fail_all(&self, jobs: &mut Vec<Job<Origin>>, reason: &str) {
        for job in jobs.drain(..) {
            self.fail(job.origin, reason);
        }
    }

    fn publish_batch(&mut self, outcome: BatchOutcome<'_, Origin>) {
        let n = outcome.jobs.len();
        let h = outcome.horizon;
        let mut published = BatchPublished {
            size: n,
            inference_time: outcome.inference_time,
            cache_hits: outcome.cache_hits,
            cache_misses: outcome.cache_misses,
            primary: 0,
            candidate: 0,
            by_fallback: 0,
        };
        let predictions = match outcome.result {
            // Every job must get its own row; anything else is a bug, and zipping would silently
            // leave jobs without a record (and their offsets stuck).
            Ok(p) if p.len() == n * h && outcome.rows.len() == n => p,
            Ok(p) => {
                let reason = format!(
                    "{} predictions and {} row states for {n} events of horizon {h}",
                    p.len(),
                    outcome.rows.len()
                );
                tracing::error!(%reason, "Inference output does not match its batch; dead-lettering the batch.");
                self.fail_all(outcome.jobs, &reason);
                published.emit(&self.metrics);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, batch = n, "Inference failed; dead-lettering the batch.");
                self.fail_all(outcome.jobs, &error.to_string());
                published.emit(&self.metrics);
                return;
            }
        };
        // Every prediction of a batch is produced at the same moment.
        let moment = Published::now();
        if let Some(i) = self.stream.intervals.as_mut() {
            i.refresh();
        }
        for (i, (job, prediction)) in outcome.jobs.drain(..).zip(predictions.chunks_exact(h)).enumerate() {
            let (model, variant) = match (job.candidate, outcome.candidate) {
                (true, Some(candidate)) => (candidate, Variant::Candidate),
                _ => (outcome.model, Variant::Primary),
            };
            // The routed variant stays; the model that actually answered may be the fallback.
            let (model, fallback) = match (outcome.rows[i], outcome.fallback) {
                (RowStatus::Fallback, Some(f)) => (f, true),
                (RowStatus::Failed, _) | (RowStatus::Fallback, None) => {
                    self.fail(job.origin, &InferenceError::NonFinite.to_string());
                    continue;
                }
                (RowStatus::Model, _) => (model, false),
            };
            // A quantile row: its point forecast is each step's 0.5 quantile. A fallback's row
            // repeats one value per step and publishes no quantiles.
            let quantiles = outcome.quantiles.map(|levels| QuantilesOut { levels, values: prediction });
            let prediction = match &quantiles {
                Some(q) => {
                    q.median_into(&mut self.point);
                    &self.point[..]
                }
                None => prediction,
            };
            let quantiles = quantiles.filter(|_| !fallback);
            match job.origin {
                Origin::Stream(mut o) => {
                    let shadow = outcome.shadow.map(|(m, values)| {
                        let values = &values[i * h..(i + 1) * h];
                        match outcome.quantiles {
                            Some(levels) => {
                                let q = QuantilesOut { levels, values };
                                q.median_into(&mut self.shadow_point);
                                (m, &self.shadow_point[..], Some(q))
                            }
                            None => (m, values, None),
                        }
                    });
                    let row = Row { prediction, quantiles, model, variant, fallback, shadow, published: &moment };
                    self.stream.publish(&mut o, row);
                    self.spares.keep(job.input, o.text.into_bytes());
                    match variant {
                        Variant::Candidate => published.candidate += 1,
                        _ => published.primary += 1,
                    }
                    published.by_fallback += u64::from(fallback);
                }
                Origin::Request(r) => {
                    let interval = self.stream.intervals.as_mut().map(|i| {
                        let out = i.of(model, variant, prediction, quantiles.map(|q| q.values));
                        IntervalIn {
                            level: out.level,
                            calibrated: out.calibrated,
                            lower: out.lower.map(|v| v.iter().map(|x| f64::from(*x)).collect()).unwrap_or_default(),
                            upper: out.upper.map(|v| v.iter().map(|x| f64::from(*x)).collect()).unwrap_or_default(),
                        }
                    });
                    r.answer(Ok(Scored {
                        prediction: prediction.to_vec(),
                        model: model.clone(),
                        produced_at: moment.produced_at.clone(),
                        fallback,
                        interval,
                    }))
                }
            }
        }
        self.spares.send();
        published.emit(&self.metrics);
    }
}

impl JobSink<Origin> for Dispatcher {
    fn batch_started(&mut self) {
        self.metrics.in_flight_batches.inc();
    }

    fn batch(&mut self, outcome: BatchOutcome<'_, Origin>) {
        let stream = outcome.jobs.iter().filter(|j| matches!(j.origin, Origin::Stream(_))).count();
        self.publish_batch(outcome);
        self.unscored.scored(stream);
        self.metrics.in_flight_batches.dec();
    }
}
