//! `streamcast predict`: batch prediction over a file with a bundle, no Kafka.
//!
//! Events are decoded by the stream's decoder, windowed by the stream's per-series window store
//! and scored by the same [`Model`], in file order, so a file gives the predictions the stream
//! gives for the same events in the same order.
//!
//! Input: JSONL (one InputEvent per line, either `features` form, optional `window`), or CSV with
//! a `timestamp` column, optional `id` and `series_id` columns, and one column per bundle feature.
//! Output: JSONL Predictions, or CSV (`id,series_id,timestamp,warmup,prediction_0..`).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::event::{now_rfc3339, EventValues, FeatureSchema, InputEvent, PredictionOut, Variant};
use crate::inference::{InferenceError, Model};
use crate::window::WindowStore;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Jsonl,
    Csv,
}

impl FileFormat {
    /// By extension: `.csv` is CSV, anything else JSONL.
    pub fn of(path: &Path) -> FileFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => FileFormat::Csv,
            _ => FileFormat::Jsonl,
        }
    }
}

/// What one run did.
#[derive(Debug, Default)]
pub struct BatchSummary {
    pub events: u64,
    pub predicted: u64,
    pub warmup: u64,
    /// `(line, reason)` of each rejected event.
    pub rejected: Vec<(u64, String)>,
}

/// One decoded event waiting in the current batch.
struct Pending {
    id: String,
    series_id: String,
    timestamp: String,
    warmup: bool,
}

pub struct BatchOptions<'a> {
    pub input: &'a Path,
    pub output: Option<&'a Path>,
    pub batch_size: usize,
    pub max_series: usize,
    pub progress: bool,
}

/// Runs batch prediction with `model`.
pub fn run(model: &mut Model, opts: &BatchOptions<'_>) -> Result<BatchSummary, BatchError> {
    let m = model.bundle().manifest.clone();
    let schema = FeatureSchema::for_bundle(&m, usize::MAX, false);
    let read_err = |source| BatchError::Read { path: opts.input.into(), source };
    let file = std::fs::File::open(opts.input).map_err(read_err)?;
    let size = file.metadata().map(|md| md.len()).unwrap_or(0);
    let bar = if opts.progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let out_path = opts.output.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("-"));
    let out_format = opts.output.map(FileFormat::of).unwrap_or(FileFormat::Jsonl);
    let sink: Box<dyn Write> = match opts.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|source| BatchError::Write { path: p.into(), source })?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer { out: BufWriter::new(sink), format: out_format, path: out_path, buf: Vec::new() };
    writer.header(m.horizon)?;

    let mut windows = WindowStore::new(m.window, m.features.len(), opts.max_series);
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
        let warmup = match &event.values {
            EventValues::Window(w) => {
                inputs.extend_from_slice(w);
                false
            }
            EventValues::Observation(o) if m.window == 1 => {
                inputs.extend_from_slice(o);
                false
            }
            EventValues::Observation(o) => {
                let filled = windows.push(0, &event.series_id, o, &mut scratch);
                inputs.extend_from_slice(&scratch);
                filled.padded
            }
        };
        pending.push(Pending { id: event.id, series_id: event.series_id, timestamp: event.timestamp, warmup });
        if pending.len() >= opts.batch_size {
            flush(model, &mut pending, &mut inputs, &mut outputs, &mut writer, summary)?;
        }
        Ok(())
    };

    match FileFormat::of(opts.input) {
        FileFormat::Jsonl => {
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            let mut line_no = 0u64;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                bar.inc(n as u64);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                handle(line_no, &line, &mut summary)?;
            }
        }
        FileFormat::Csv => {
            let mut reader = csv::Reader::from_reader(file);
            let format_err = |message: String| BatchError::Format { path: opts.input.into(), message };
            let headers = reader.headers().map_err(|e| format_err(e.to_string()))?.clone();
            let col = |name: &str| headers.iter().position(|h| h == name);
            let ts = col("timestamp").ok_or_else(|| format_err("no `timestamp` column".into()))?;
            let (id_col, series_col) = (col("id"), col("series_id"));
            let feature_cols: Vec<usize> = m
                .features
                .iter()
                .map(|f| col(f).ok_or_else(|| format_err(format!("no column for feature `{f}`"))))
                .collect::<Result<_, _>>()?;
            let mut row_no = 0u64;
            let mut line = String::new();
            for record in reader.records() {
                row_no += 1;
                let record = record.map_err(|e| format_err(e.to_string()))?;
                bar.set_position(record.position().map_or(0, |p| p.byte()));
                let values: Vec<serde_json::Value> = feature_cols
                    .iter()
                    .map(|c| match record[*c].trim().parse::<f64>() {
                        Ok(v) if v.is_finite() => serde_json::json!(v),
                        _ => serde_json::Value::String(record[*c].to_string()),
                    })
                    .collect();
                let event = serde_json::json!({
                    "id": id_col.map_or_else(|| format!("row-{row_no}"), |c| record[c].to_string()),
                    "series_id": series_col.map_or("default", |c| &record[c]),
                    "timestamp": &record[ts],
                    "features": values,
                });
                line.clear();
                line.push_str(&event.to_string());
                handle(row_no + 1, line.as_bytes(), &mut summary)?;
            }
        }
    }
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
    let h = model.horizon();
    let produced_at = now_rfc3339();
    let model_ref = model.model_ref().clone();
    for (p, prediction) in pending.iter().zip(outputs.chunks_exact(h)) {
        writer.row(p, prediction, &model_ref, &produced_at)?;
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
