//! `streamcast predict`: batch prediction over a file with a bundle, no Kafka.
//!
//! Events are decoded by the stream's decoder, windowed by the stream's per-series window store
//! and scored by the same [`Model`], in file order, so a file gives the predictions the stream
//! gives for the same events in the same order.
//!
//! Input: JSONL (one InputEvent per line, either `features` form, optional `window`), or a CSV or
//! Parquet table with one column per bundle feature, read by [`crate::table`]; a row without an
//! `id` column is `row-<n>`. Output: JSONL Predictions, or CSV
//! (`id,series_id,timestamp,warmup,prediction_0..`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::event::{now_rfc3339, EventValues, FeatureSchema, InputEvent, PredictionOut, QuantilesOut, Variant};
use crate::inference::{InferenceError, Model};
use crate::table::{Body, Defaults, FeatureForm, Features, FileFormat, InputFormat, Table, TableError, DEFAULT_SERIES};
use crate::window::{EventTime, EventTimePolicy, WindowStore};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Input(#[from] TableError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// An output this cannot write.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// What stands in for a table's missing `id` and `series_id` columns.
const DEFAULTS: Defaults<'static> = Defaults { series_id: DEFAULT_SERIES, id_prefix: "row" };

/// What one run did.
#[derive(Debug, Default)]
pub struct BatchSummary {
    pub events: u64,
    pub predicted: u64,
    pub warmup: u64,
    /// `(line, reason)` of each rejected event; for Parquet, the 1-based row instead of the line.
    pub rejected: Vec<(u64, String)>,
}

/// One decoded event waiting in the current batch.
struct Pending {
    id: String,
    series_id: String,
    timestamp: String,
    warmup: bool,
    gap_filled: u32,
}

pub struct BatchOptions<'a> {
    pub input: &'a Path,
    pub output: Option<&'a Path>,
    pub batch_size: usize,
    pub max_series: usize,
    /// Event-time window policies, for bundles with a `frequency` (as `[windows]` sets them).
    pub policy: EventTimePolicy,
    pub progress: bool,
}

/// Runs batch prediction with `model`.
pub fn run(model: &mut Model, opts: &BatchOptions<'_>) -> Result<BatchSummary, BatchError> {
    let m = model.bundle().manifest.clone();
    let schema = FeatureSchema::for_bundle(&m, usize::MAX, false);
    let table = Table::open(opts.input, Features::Named(&m.features))?;
    let bar = if opts.progress { ProgressBar::new(table.size()) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if let Some(p) = opts.output.filter(|p| InputFormat::of(p) == InputFormat::Parquet) {
        // Without this the name would get JSONL, which no Parquet reader opens.
        let message = "Parquet output is not supported; name the output `.csv` or `.jsonl`".into();
        return Err(BatchError::Format { path: p.into(), message });
    }
    let out_path = opts.output.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("-"));
    let out_format = opts.output.map(FileFormat::of).unwrap_or(FileFormat::Jsonl);
    let sink: Box<dyn Write> = match opts.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|source| BatchError::Write { path: p.into(), source })?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer { out: BufWriter::new(sink), format: out_format, path: out_path, buf: Vec::new() };
    writer.header(m.horizon)?;

    let time = EventTime::for_bundle(&m, opts.policy);
    let mut windows = WindowStore::new(m.window, m.features.len(), opts.max_series, time);
    let mut summary = BatchSummary::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(opts.batch_size);
    let mut inputs: Vec<f32> = Vec::new();
    let mut outputs: Vec<f32> = Vec::new();
    let mut scratch: Vec<f32> = Vec::new();

    let mut handle = |line_no: u64, bytes: &[u8], summary: &mut BatchSummary| -> Result<(), BatchError> {
        summary.events += 1;
        let event = match InputEvent::decode(bytes, &schema) {
            Ok(e) => e,
            Err(e) => {
                summary.rejected.push((line_no, e.to_string()));
                return Ok(());
            }
        };
        let (warmup, gap_filled) = match &event.values {
            EventValues::Window(w) => {
                inputs.extend_from_slice(w);
                (false, 0)
            }
            EventValues::Observation(o) if m.window == 1 => {
                inputs.extend_from_slice(o);
                (false, 0)
            }
            EventValues::Observation(o) => match windows.push(0, &event.series_id, event.timestamp_ms, o, &mut scratch)
            {
                Ok(filled) => {
                    inputs.extend_from_slice(&scratch);
                    (filled.padded, filled.gap_filled as u32)
                }
                Err(refusal) => {
                    summary.rejected.push((line_no, format!("{}: {refusal}", refusal.case())));
                    return Ok(());
                }
            },
        };
        pending.push(Pending {
            id: event.id,
            series_id: event.series_id,
            timestamp: event.timestamp,
            warmup,
            gap_filled,
        });
        if pending.len() >= opts.batch_size {
            flush(model, &mut pending, &mut inputs, &mut outputs, &mut writer, summary)?;
        }
        Ok(())
    };

    table.for_each(&DEFAULTS, |record| {
        bar.set_position(record.read);
        match record.body {
            Body::Line(line) => handle(record.at, line, &mut summary),
            // The columns are the bundle's features in its order, so the array form fits.
            Body::Row(row) => handle(record.at, row.event(FeatureForm::Array).to_string().as_bytes(), &mut summary),
        }
    })?;
    flush(model, &mut pending, &mut inputs, &mut outputs, &mut writer, &mut summary)?;
    writer.out.flush().map_err(|source| BatchError::Write { path: writer.path.clone(), source })?;
    bar.finish_and_clear();
    Ok(summary)
}

fn flush(
    model: &mut Model,
    pending: &mut Vec<Pending>,
    inputs: &mut Vec<f32>,
    outputs: &mut Vec<f32>,
    writer: &mut Writer,
    summary: &mut BatchSummary,
) -> Result<(), BatchError> {
    if pending.is_empty() {
        return Ok(());
    }
    model.predict(inputs, pending.len(), outputs)?;
    let h = model.width();
    let produced_at = now_rfc3339();
    let model_ref = model.model_ref().clone();
    let levels = model.quantiles().map(<[f64]>::to_vec);
    let mut point = Vec::new();
    for (p, row) in pending.iter().zip(outputs.chunks_exact(h)) {
        let quantiles = levels.as_deref().map(|levels| QuantilesOut { levels, values: row });
        let prediction = match &quantiles {
            Some(q) => {
                q.median_into(&mut point);
                &point[..]
            }
            None => row,
        };
        writer.row(p, prediction, quantiles, &model_ref, &produced_at)?;
        summary.predicted += 1;
        summary.warmup += u64::from(p.warmup);
    }
    pending.clear();
    inputs.clear();
    Ok(())
}

struct Writer {
    out: BufWriter<Box<dyn Write>>,
    format: FileFormat,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Writer {
    fn err(&self) -> impl Fn(std::io::Error) -> BatchError + '_ {
        |source| BatchError::Write { path: self.path.clone(), source }
    }

    fn header(&mut self, horizon: usize) -> Result<(), BatchError> {
        if self.format == FileFormat::Csv {
            let mut line = String::from("id,series_id,timestamp,warmup");
            for i in 0..horizon {
                line.push_str(&format!(",prediction_{i}"));
            }
            line.push('\n');
            let r = self.out.write_all(line.as_bytes());
            r.map_err(self.err())?;
        }
        Ok(())
    }

    fn row(
        &mut self,
        p: &Pending,
        prediction: &[f32],
        quantiles: Option<QuantilesOut<'_>>,
        model: &crate::event::ModelRef,
        produced_at: &str,
    ) -> Result<(), BatchError> {
        match self.format {
            FileFormat::Jsonl => {
                PredictionOut {
                    id: &p.id,
                    series_id: &p.series_id,
                    timestamp: &p.timestamp,
                    prediction,
                    model,
                    variant: Variant::Primary,
                    latency_ms: 0.0,
                    produced_at,
                    warmup: p.warmup,
                    gap_filled: p.gap_filled,
                    fallback: false,
                    // Batch prediction has no monitor to calibrate against.
                    interval: None,
                    quantiles,
                }
                .encode(&mut self.buf);
                self.buf.push(b'\n');
            }
            FileFormat::Csv => {
                self.buf.clear();
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut self.buf);
                let mut fields = vec![p.id.clone(), p.series_id.clone(), p.timestamp.clone(), p.warmup.to_string()];
                // f32 prints its shortest round-trip form; widening to f64 first would print noise.
                fields.extend(prediction.iter().map(|v| v.to_string()));
                w.write_record(&fields)
                    .map_err(|e| BatchError::Write { path: PathBuf::from("-"), source: std::io::Error::other(e) })?;
                drop(w);
            }
        }
        let r = self.out.write_all(&self.buf);
        r.map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::inference::SessionOptions;
    use crate::table::tests::{equivalent_csv, FIXTURE};

    fn predict(input: &Path, output: &Path) -> Result<BatchSummary, BatchError> {
        let bundle = Bundle::load(Path::new("models/co2-mlp/1")).unwrap();
        let mut model = Model::load(bundle, SessionOptions::default()).unwrap();
        let opts = BatchOptions {
            input,
            output: Some(output),
            batch_size: 64,
            max_series: 100,
            policy: EventTimePolicy::default(),
            progress: false,
        };
        run(&mut model, &opts)
    }

    #[test]
    fn parquet_gives_the_predictions_of_the_same_rows_as_csv() {
        let dir = tempfile::tempdir().unwrap();
        let (from_csv, from_parquet) = (dir.path().join("csv.csv"), dir.path().join("parquet.csv"));
        let a = predict(&equivalent_csv(dir.path()), &from_csv).unwrap();
        let b = predict(Path::new(FIXTURE), &from_parquet).unwrap();
        // Two series of 150 rows, each padded until it holds the bundle's 24 observations.
        for s in [&a, &b] {
            assert_eq!((s.events, s.predicted, s.warmup), (300, 300, 2 * 23), "{:?}", s.rejected);
        }
        let (a, b) = (std::fs::read_to_string(from_csv).unwrap(), std::fs::read_to_string(from_parquet).unwrap());
        assert_eq!(a.lines().count(), 301);
        for (n, (a, b)) in a.lines().zip(b.lines()).enumerate() {
            assert_eq!(a, b, "output row {n}");
        }
        // No `id` column: the CSV default. The nanosecond timestamp prints as the CSV text did.
        let first = b.lines().nth(1).unwrap();
        assert!(first.starts_with("row-1,s-0,1958-03-29T00:00:00Z,true,"), "{first}");
    }

    #[test]
    fn parquet_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.Parquet");
        match predict(Path::new(FIXTURE), &out) {
            Err(BatchError::Format { message, .. }) => assert!(message.contains("not supported"), "{message}"),
            other => panic!("expected a format error, got {other:?}"),
        }
        assert!(!out.exists());
    }
}
