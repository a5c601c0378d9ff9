//! `streamcast predict`: batch prediction over a file with a bundle, no Kafka.
//!
//! Events are decoded by the stream's decoder, windowed by the stream's per-series window store
//! and scored by the same [`Model`], in file order, so a file gives the predictions the stream
//! gives for the same events in the same order.
//!
//! Input: JSONL (one InputEvent per line, either `features` form, optional `window`), or a table:
//! CSV, or Parquet for a `.parquet` name, with a `timestamp` column, optional `id` and `series_id`
//! columns, and one column per bundle feature. A Parquet row becomes the CSV row it would be in a
//! CSV file (timestamps in RFC 3339 UTC, a null as an empty cell) and then takes the CSV path, so
//! both give the same events. Parquet is read through the `parquet` crate's row API without
//! arrow; Snappy, gzip, LZ4 and uncompressed files read, others are refused before the first row.
//! Output: JSONL Predictions, or CSV (`id,series_id,timestamp,warmup,prediction_0..`).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

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
    #[error("{path}: cannot read Parquet: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
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

/// What `predict` reads: Parquet is input-only, so it is not a [`FileFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputFormat {
    Lines(FileFormat),
    Parquet,
}

impl InputFormat {
    /// By extension: `.parquet` (any case) is Parquet, else as [`FileFormat::of`].
    fn of(path: &Path) -> InputFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => InputFormat::Parquet,
            _ => InputFormat::Lines(FileFormat::of(path)),
        }
    }
}

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

    let mut event_line = String::new();
    let mut handle_row = |line_no: u64, row: &TableRow<'_>, summary: &mut BatchSummary| {
        row.event_json(&mut event_line);
        handle(line_no, event_line.as_bytes(), summary)
    };
    match InputFormat::of(opts.input) {
        InputFormat::Lines(FileFormat::Jsonl) => {
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
        InputFormat::Lines(FileFormat::Csv) => {
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
            for record in reader.records() {
                row_no += 1;
                let record = record.map_err(|e| format_err(e.to_string()))?;
                bar.set_position(record.position().map_or(0, |p| p.byte()));
                let row = TableRow {
                    row_no,
                    id: id_col.map(|c| &record[c]),
                    series_id: series_col.map(|c| &record[c]),
                    timestamp: &record[ts],
                    features: feature_cols
                        .iter()
                        .map(|c| feature_value(record[*c].trim().parse().ok(), || record[*c].to_string()))
                        .collect(),
                };
                handle_row(row_no + 1, &row, &mut summary)?;
            }
        }
        InputFormat::Parquet => {
            read_parquet(opts.input, file, &m.features, &bar, |row| handle_row(row.row_no, row, &mut summary))?;
        }
    }
    flush(model, &mut pending, &mut inputs, &mut outputs, &mut writer, &mut summary)?;
    writer.out.flush().map_err(|source| BatchError::Write { path: writer.path.clone(), source })?;
    bar.finish_and_clear();
    Ok(summary)
}

/// One CSV or Parquet row on its way to becoming the event a stream would receive.
struct TableRow<'a> {
    /// 1-based data row, which names the row when the file has no `id` column.
    row_no: u64,
    /// `None` when the file has no such column.
    id: Option<&'a str>,
    series_id: Option<&'a str>,
    timestamp: &'a str,
    /// In bundle feature order, as [`feature_value`] gives them.
    features: Vec<serde_json::Value>,
}

impl TableRow<'_> {
    /// The row as an InputEvent (array `features`) in `line`. Without an `id` column each row is
    /// `row-<n>`; without a `series_id` column all rows are one series, `default`.
    fn event_json(&self, line: &mut String) {
        let event = serde_json::json!({
            "id": self.id.map_or_else(|| format!("row-{}", self.row_no), str::to_string),
            "series_id": self.series_id.unwrap_or("default"),
            "timestamp": self.timestamp,
            "features": self.features,
        });
        line.clear();
        line.push_str(&event.to_string());
    }
}

/// A feature cell: a finite number as such, anything else as its text, which the decoder rejects
/// with the row's reason (as it does for the same cell sent by a producer).
fn feature_value(number: Option<f64>, text: impl FnOnce() -> String) -> serde_json::Value {
    match number {
        Some(v) if v.is_finite() => serde_json::json!(v),
        _ => serde_json::Value::String(text()),
    }
}

/// Reads a Parquet file's rows as [`TableRow`]s, in file order.
///
/// Only the named top-level columns are read (a projection), so other columns may have any type.
/// Their types and codecs are checked before the first row, so a file this cannot read is refused
/// before any prediction: `timestamp` is a string or a timestamp (INT64 with a unit, or legacy INT96;
/// rendered RFC 3339 UTC, a timestamp not adjusted to UTC read as UTC), `id` and `series_id` are
/// strings or integers, features are float, double or integer.
fn read_parquet(
    path: &Path,
    file: std::fs::File,
    features: &[String],
    bar: &ProgressBar,
    mut each: impl FnMut(&TableRow<'_>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let parquet_err = |source| BatchError::Parquet { path: path.into(), source };
    let reader = SerializedFileReader::new(file).map_err(parquet_err)?;
    let plan = ParquetPlan::new(reader.metadata(), features)
        .map_err(|message| BatchError::Format { path: path.into(), message })?;
    let total = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0).max(1);
    let size = bar.length().unwrap_or(0);
    let mut row_no = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(parquet_err)?;
        for row in group.get_row_iter(Some(plan.projection.clone())).map_err(parquet_err)? {
            let fields = row.map_err(parquet_err)?.into_columns();
            let field = |i: usize| fields.get(i).map_or(&Field::Null, |(_, f)| f);
            row_no += 1;
            let timestamp = timestamp_text(field(plan.timestamp));
            let id = plan.id.map(|i| key_text(field(i)));
            let series_id = plan.series_id.map(|i| key_text(field(i)));
            let row = TableRow {
                row_no,
                id: id.as_deref(),
                series_id: series_id.as_deref(),
                timestamp: &timestamp,
                features: plan.features.iter().map(|&i| feature_field(field(i))).collect(),
            };
            each(&row)?;
            bar.set_position(size.saturating_mul(row_no) / total);
        }
    }
    Ok(())
}

/// Which columns a Parquet file gives each part of a row: indices into the projected row.
#[derive(Debug)]
struct ParquetPlan {
    projection: parquet::schema::types::Type,
    timestamp: usize,
    id: Option<usize>,
    series_id: Option<usize>,
    features: Vec<usize>,
}

impl ParquetPlan {
    /// Finds and checks the columns; the error names the column and what is wrong with it.
    fn new(meta: &ParquetMetaData, features: &[String]) -> Result<ParquetPlan, String> {
        let root = meta.file_metadata().schema();
        let fields = root.get_fields();
        let col = |name: &str| fields.iter().position(|f| f.name() == name);
        let timestamp = col("timestamp").ok_or("no `timestamp` column")?;
        let (id, series_id) = (col("id"), col("series_id"));
        let feature_cols: Vec<usize> = features
            .iter()
            .map(|f| col(f).ok_or_else(|| format!("no column for feature `{f}`")))
            .collect::<Result<_, _>>()?;

        let kind = |i: usize| ColumnKind::of(&fields[i]);
        let wrong = |i: usize, want: &str| format!("column `{}` is {}; {want}", fields[i].name(), describe(&fields[i]));
        if !matches!(kind(timestamp), ColumnKind::Text | ColumnKind::Timestamp) {
            return Err(wrong(timestamp, "`timestamp` must be a string or a timestamp"));
        }
        for i in id.into_iter().chain(series_id) {
            if !matches!(kind(i), ColumnKind::Text | ColumnKind::Integer) {
                return Err(wrong(i, "`id` and `series_id` must be strings or integers"));
            }
        }
        for &i in &feature_cols {
            if !matches!(kind(i), ColumnKind::Integer | ColumnKind::Float) {
                return Err(wrong(i, "a feature column must be float, double or integer"));
            }
        }

        let mut wanted: Vec<usize> =
            [timestamp].into_iter().chain(id).chain(series_id).chain(feature_cols.clone()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let names: Vec<&str> = wanted.iter().map(|&i| fields[i].name()).collect();
        for group in meta.row_groups() {
            for chunk in group.columns() {
                // The codecs the `parquet` features in Cargo.toml leave out (zstd, brotli: C or big).
                let unread = match chunk.compression() {
                    Compression::ZSTD(_) => "zstd",
                    Compression::BROTLI(_) => "Brotli",
                    Compression::LZO => "LZO",
                    _ => continue,
                };
                if chunk.column_path().parts().first().is_some_and(|n| names.contains(&n.as_str())) {
                    return Err(format!(
                        "column `{}` is compressed with {unread}, which this build does not read; \
                         write the file with Snappy (pyarrow's default), gzip, LZ4 or no compression",
                        chunk.column_path().string()
                    ));
                }
            }
        }
        let projection = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(wanted.iter().map(|&i| fields[i].clone()).collect())
            .build()
            .map_err(|e| e.to_string())?;
        // Every column index above is in `wanted`, which is sorted.
        let at = |i: usize| wanted.binary_search(&i).expect("a selected column is in the projection");
        Ok(ParquetPlan {
            projection,
            timestamp: at(timestamp),
            id: id.map(at),
            series_id: series_id.map(at),
            features: feature_cols.into_iter().map(at).collect(),
        })
    }
}

/// The column types this reads, by what the row API turns them into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Text,
    /// [`Field::TimestampMillis`], [`Field::TimestampMicros`], or nanoseconds as [`Field::Long`].
    Timestamp,
    Integer,
    Float,
    Other,
}

impl ColumnKind {
    fn of(field: &parquet::schema::types::Type) -> ColumnKind {
        if !field.is_primitive() || field.get_basic_info().repetition() == Repetition::REPEATED {
            return ColumnKind::Other;
        }
        let info = field.get_basic_info();
        let logical = info.logical_type_ref();
        match (field.get_physical_type(), info.converted_type(), logical) {
            (PhysicalType::BYTE_ARRAY, ConvertedType::UTF8, _) => ColumnKind::Text,
            (PhysicalType::INT96, _, _) => ColumnKind::Timestamp,
            (PhysicalType::INT64, ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS, _) => {
                ColumnKind::Timestamp
            }
            (PhysicalType::INT64, ConvertedType::NONE, Some(LogicalType::Timestamp(t)))
                if t.unit == TimeUnit::NANOS =>
            {
                ColumnKind::Timestamp
            }
            // A logical type other than Integer (Time, Timestamp, Decimal..) is no plain number.
            (PhysicalType::INT32 | PhysicalType::INT64, _, None | Some(LogicalType::Integer(_))) => {
                match info.converted_type() {
                    ConvertedType::NONE
                    | ConvertedType::INT_8
                    | ConvertedType::INT_16
                    | ConvertedType::INT_32
                    | ConvertedType::INT_64
                    | ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64 => ColumnKind::Integer,
                    _ => ColumnKind::Other,
                }
            }
            (PhysicalType::FLOAT | PhysicalType::DOUBLE, _, None) => ColumnKind::Float,
            _ => ColumnKind::Other,
        }
    }
}

/// A column's type for an error message, e.g. `BYTE_ARRAY (String)` or `INT64 (Timestamp ..)`.
fn describe(field: &parquet::schema::types::Type) -> String {
    if !field.is_primitive() {
        return "a group (nested) column".into();
    }
    let info = field.get_basic_info();
    let mut s = field.get_physical_type().to_string();
    match (info.logical_type_ref(), info.converted_type()) {
        (Some(logical), _) => s.push_str(&format!(" ({logical:?})")),
        (None, ConvertedType::NONE) => {}
        (None, converted) => s.push_str(&format!(" ({converted})")),
    }
    if info.repetition() == Repetition::REPEATED {
        s.push_str(", repeated");
    }
    s
}

/// A timestamp cell as CSV text: strings as they are, timestamps in RFC 3339 UTC with as many
/// fractional digits as they need (`1958-03-29T00:00:00Z`), a null as an empty cell.
fn timestamp_text(field: &Field) -> String {
    let utc = match *field {
        Field::Str(ref s) => return s.clone(),
        Field::Null => return String::new(),
        Field::TimestampMillis(ms) => chrono::DateTime::from_timestamp_millis(ms),
        Field::TimestampMicros(us) => chrono::DateTime::from_timestamp_micros(us),
        // Nanosecond timestamps have no converted type, so the row API gives them as plain INT64.
        Field::Long(ns) => Some(chrono::DateTime::from_timestamp_nanos(ns)),
        _ => None,
    };
    // Out of chrono's range: the raw value, which the decoder rejects as no RFC 3339 date-time.
    utc.map_or_else(|| field.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// An `id` or `series_id` cell as CSV text; a null as an empty cell.
fn key_text(field: &Field) -> String {
    match field {
        Field::Str(s) => s.clone(),
        Field::Null => String::new(),
        other => other.to_string(),
    }
}

/// A feature cell as [`feature_value`] takes it from CSV; a null as an empty cell.
fn feature_field(field: &Field) -> serde_json::Value {
    let text = || if matches!(field, Field::Null) { String::new() } else { field.to_string() };
    feature_value(number(field), text)
}

fn number(field: &Field) -> Option<f64> {
    Some(match *field {
        Field::Byte(v) => v.into(),
        Field::Short(v) => v.into(),
        Field::Int(v) => v.into(),
        Field::Long(v) => v as f64,
        Field::UByte(v) => v.into(),
        Field::UShort(v) => v.into(),
        Field::UInt(v) => v.into(),
        Field::ULong(v) => v as f64,
        Field::Float(v) => v.into(),
        Field::Double(v) => v,
        _ => return None,
    })
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
                    fallback: false,
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

    /// Written by `scripts/make_parquet_fixture.py` with pyarrow from `data/co2_weekly.csv`.
    const FIXTURE: &str = "tests/fixtures/co2_weekly_head.parquet";

    fn predict(input: &Path, output: &Path) -> Result<BatchSummary, BatchError> {
        let bundle = Bundle::load(Path::new("models/co2-mlp/1")).unwrap();
        let mut model = Model::load(bundle, SessionOptions::default()).unwrap();
        let opts = BatchOptions { input, output: Some(output), batch_size: 64, max_series: 100, progress: false };
        run(&mut model, &opts)
    }

    /// The rows the fixture was made from, as CSV with the `series_id` the script added.
    fn equivalent_csv(dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string("data/co2_weekly.csv").unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,co2,month_sin,month_cos"));
        let mut csv = String::from("timestamp,series_id,co2,month_sin,month_cos\n");
        for (i, line) in lines.take(300).enumerate() {
            let (timestamp, features) = line.split_once(',').unwrap();
            csv.push_str(&format!("{timestamp},s-{},{features}\n", i % 2));
        }
        let path = dir.join("co2_weekly_head.csv");
        std::fs::write(&path, csv).unwrap();
        path
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
    fn parquet_without_a_feature_column_or_with_a_non_numeric_one_is_refused_naming_it() {
        let read = |features: &[&str]| {
            let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
            let file = std::fs::File::open(FIXTURE).unwrap();
            let mut rows = 0;
            let r = read_parquet(Path::new(FIXTURE), file, &features, &ProgressBar::hidden(), |_| {
                rows += 1;
                Ok(())
            });
            (r.map(|()| rows), rows)
        };
        let message = |r: Result<usize, BatchError>| match r {
            Err(BatchError::Format { path, message }) if path == Path::new(FIXTURE) => message,
            other => panic!("expected a format error, got {other:?}"),
        };
        let (r, rows) = read(&["co2", "humidity", "month_cos"]);
        assert_eq!(message(r), "no column for feature `humidity`");
        assert_eq!(rows, 0, "refused before the first row");
        let (r, _) = read(&["co2", "series_id"]);
        let m = message(r);
        assert!(
            m.starts_with("column `series_id` is BYTE_ARRAY (String);") && m.contains("float, double or integer"),
            "{m}"
        );
        // `week` (int64) is no feature of the shipped bundles, but an integer feature column reads.
        assert_eq!(read(&["week", "month_cos"]).0.unwrap(), 300);
    }

    #[test]
    fn parquet_is_chosen_by_extension_in_any_case_and_never_written() {
        assert_eq!(InputFormat::of(Path::new("a/b.PARQUET")), InputFormat::Parquet);
        assert_eq!(InputFormat::of(Path::new("b.csv")), InputFormat::Lines(FileFormat::Csv));
        assert_eq!(InputFormat::of(Path::new("parquet")), InputFormat::Lines(FileFormat::Jsonl));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.Parquet");
        match predict(Path::new(FIXTURE), &out) {
            Err(BatchError::Format { message, .. }) => assert!(message.contains("not supported"), "{message}"),
            other => panic!("expected a format error, got {other:?}"),
        }
        assert!(!out.exists());
    }

    #[test]
    fn parquet_timestamps_print_as_rfc3339_utc() {
        assert_eq!(timestamp_text(&Field::TimestampMillis(0)), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp_text(&Field::TimestampMicros(-1_500)), "1969-12-31T23:59:59.998500Z");
        assert_eq!(timestamp_text(&Field::Long(1_000_000_001)), "1970-01-01T00:00:01.000000001Z");
        assert_eq!(timestamp_text(&Field::Str("2026-11-26T19:00:00+01:00".into())), "2026-11-26T19:00:00+01:00");
        assert_eq!(timestamp_text(&Field::Null), "");
        assert_eq!(feature_field(&Field::Null), serde_json::json!(""));
        assert_eq!(feature_field(&Field::Float(f32::NAN)), serde_json::json!("NaN"));
        assert_eq!(feature_field(&Field::Int(-3)), serde_json::json!(-3.0));
    }
}
