//! Reads an input file as the events a stream would receive, for `streamcast produce` (which sends
//! them) and `streamcast predict` (which scores them), so that both commands read a file alike.
//!
//! The format comes from the name ([`InputFormat::of`]). JSONL lines are events already and are
//! passed on as they are. A CSV or Parquet row becomes an InputEvent: `timestamp` is required, `id`
//! and `series_id` are optional columns ([`Defaults`] stands in for them), and the other columns
//! are features ([`Features`]). A Parquet row is read as the CSV row it would be in a CSV file
//! (timestamps in RFC 3339 UTC, a null as an empty cell), so both give the same events.

mod csv;
mod jsonl;
mod parquet;

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use self::csv::CsvRows;
use self::parquet::ParquetRows;

/// Series of every row of a table without a `series_id` column, unless `produce --series` names
/// another: one series, so a per-series window sees the rows in file order.
pub const DEFAULT_SERIES: &str = "series-0";

/// Why a file cannot be read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A missing or unusable column, or a malformed CSV record.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: cannot read Parquet: {source}")]
    Parquet { path: PathBuf, source: ::parquet::errors::ParquetError },
}

/// A text format, which both commands read and `predict` also writes.
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

/// What an input file is read as: Parquet is input-only, so it is not a [`FileFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Lines(FileFormat),
    Parquet,
}

impl InputFormat {
    /// By extension: `.parquet` (any case) is Parquet, else as [`FileFormat::of`].
    pub fn of(path: &Path) -> InputFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => InputFormat::Parquet,
            _ => InputFormat::Lines(FileFormat::of(path)),
        }
    }
}

/// Which columns of a table are features.
#[derive(Debug, Clone, Copy)]
pub enum Features<'a> {
    /// Every column but `id`, `series_id` and `timestamp`, in file order.
    Rest,
    /// These, in this order (a bundle's features); a missing one is refused before the first row.
    Named(&'a [String]),
}

/// What stands in for the `id` and `series_id` columns a table lacks.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    /// Series of every row; [`DEFAULT_SERIES`] unless the user named one.
    pub series_id: &'a str,
    /// Data row `n` (1-based) gets the id `<id_prefix>-<n>`.
    pub id_prefix: &'a str,
}

impl Defaults<'_> {
    fn id(&self, row_no: u64) -> String {
        format!("{}-{row_no}", self.id_prefix)
    }
}

/// How an event built from a row carries its features; the decoder takes either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureForm {
    /// An array in column order, for columns chosen as a bundle's features in its order.
    Array,
    /// An object keyed by column name.
    Object,
}

/// One record of a file, in file order.
#[derive(Debug)]
pub struct Record<'a> {
    /// Where the record is, as messages name it: its line in JSONL and CSV, its row in Parquet.
    pub at: u64,
    /// Bytes of the file read so far, for a progress bar (estimated from the row for Parquet).
    pub read: u64,
    pub body: Body<'a>,
}

#[derive(Debug)]
pub enum Body<'a> {
    /// A JSONL line as read, line break included: an event, or whatever else the line holds,
    /// so that malformed input reaches the decoder (and the dead-letter queue) unchanged.
    Line(&'a [u8]),
    Row(TableRow<'a>),
}

/// A CSV or Parquet row on its way to becoming the event a stream would receive.
#[derive(Debug)]
pub struct TableRow<'a> {
    /// The `id` cell, or the [`Defaults`] id.
    pub id: Cow<'a, str>,
    /// The `series_id` cell, or the [`Defaults`] series.
    pub series_id: &'a str,
    pub timestamp: &'a str,
    /// The feature columns' names, in the order of `features`.
    pub names: &'a [String],
    /// A finite number as such, anything else as its text, which the decoder rejects with the
    /// row's reason (as it does for the same cell sent by a producer).
    pub features: Vec<serde_json::Value>,
}

impl TableRow<'_> {
    /// The row as an InputEvent.
    pub fn event(&self, form: FeatureForm) -> serde_json::Value {
        let features = match form {
            FeatureForm::Array => serde_json::Value::Array(self.features.clone()),
            FeatureForm::Object => {
                self.names.iter().cloned().zip(self.features.iter().cloned()).collect::<serde_json::Map<_, _>>().into()
            }
        };
        serde_json::json!({
            "id": self.id,
            "series_id": self.series_id,
            "timestamp": self.timestamp,
            "features": features,
        })
    }
}

/// A cell of a feature column: see [`TableRow::features`].
fn feature_value(number: Option<f64>, text: impl FnOnce() -> String) -> serde_json::Value {
    match number {
        Some(v) if v.is_finite() => serde_json::json!(v),
        _ => serde_json::Value::String(text()),
    }
}

/// Which column holds each part of a row, by index into a table's columns.
#[derive(Debug)]
struct Columns {
    timestamp: usize,
    id: Option<usize>,
    series_id: Option<usize>,
    features: Vec<usize>,
    names: Vec<String>,
}

impl Columns {
    /// Finds the columns by name in `header`; the error names the one missing.
    fn find(header: &[&str], features: Features<'_>) -> Result<Columns, String> {
        let col = |name: &str| header.iter().position(|h| *h == name);
        let timestamp = col("timestamp").ok_or("no `timestamp` column")?;
        let (id, series_id) = (col("id"), col("series_id"));
        let features: Vec<usize> = match features {
            Features::Named(names) => names
                .iter()
                .map(|f| col(f).ok_or_else(|| format!("no column for feature `{f}`")))
                .collect::<Result<_, _>>()?,
            Features::Rest => {
                (0..header.len()).filter(|&i| i != timestamp && Some(i) != id && Some(i) != series_id).collect()
            }
        };
        let names = features.iter().map(|&i| header[i].to_string()).collect();
        Ok(Columns { timestamp, id, series_id, features, names })
    }
}

/// An input file whose columns are found and checked, ready to be read once.
pub struct Table {
    path: PathBuf,
    size: u64,
    source: Source,
}

enum Source {
    Jsonl(File),
    Csv(CsvRows),
    Parquet(ParquetRows),
}

impl Table {
    /// Opens `path` in the format its name gives, and finds a table's columns, so that a file
    /// that cannot be read is refused before the first record.
    pub fn open(path: &Path, features: Features<'_>) -> Result<Table, TableError> {
        let file = File::open(path).map_err(|source| TableError::Read { path: path.into(), source })?;
        let size = file.metadata().map(|md| md.len()).unwrap_or(0);
        let source = match InputFormat::of(path) {
            InputFormat::Lines(FileFormat::Jsonl) => Source::Jsonl(file),
            InputFormat::Lines(FileFormat::Csv) => Source::Csv(CsvRows::open(path, file, features)?),
            InputFormat::Parquet => Source::Parquet(ParquetRows::open(path, file, features)?),
        };
        Ok(Table { path: path.into(), size, source })
    }

    /// The file's size in bytes, the scale of [`Record::read`].
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The feature columns' names; `None` for JSONL, which has no columns.
    pub fn feature_names(&self) -> Option<&[String]> {
        match &self.source {
            Source::Jsonl(_) => None,
            Source::Csv(rows) => Some(rows.names()),
            Source::Parquet(rows) => Some(rows.names()),
        }
    }

    /// Hands every record to `each`, in file order; JSONL's blank lines are skipped.
    pub fn for_each<E: From<TableError>>(
        self,
        defaults: &Defaults<'_>,
        mut each: impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.source {
            Source::Jsonl(file) => jsonl::for_each(&self.path, file, &mut each),
            Source::Csv(rows) => rows.for_each(&self.path, defaults, &mut each),
            Source::Parquet(rows) => rows.for_each(&self.path, self.size, defaults, &mut each),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{FeatureSchema, InputEvent};

    /// Written by `scripts/make_parquet_fixture.py` with pyarrow from `data/co2_weekly.csv`.
    pub(crate) const FIXTURE: &str = "tests/fixtures/co2_weekly_head.parquet";

    const PREDICT: Defaults<'static> = Defaults { series_id: DEFAULT_SERIES, id_prefix: "row" };

    /// The rows the fixture was made from, as CSV with the `series_id` the script added.
    pub(crate) fn equivalent_csv(dir: &Path) -> PathBuf {
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

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every record as the decoder sees it, as `predict` hands it over.
    fn decoded(path: &Path, features: Features<'_>, form: FeatureForm) -> Vec<InputEvent> {
        let names = ["co2", "month_sin", "month_cos"].map(String::from).to_vec();
        let schema = FeatureSchema {
            names,
            window: 24,
            max_message_bytes: usize::MAX,
            reject_unknown_features: false,
            max_id_bytes: crate::event::DEFAULT_MAX_ID_BYTES,
        };
        let mut events = Vec::new();
        let table = Table::open(path, features).unwrap();
        table
            .for_each(&PREDICT, |record| {
                let bytes = match record.body {
                    Body::Line(line) => line.to_vec(),
                    Body::Row(row) => row.event(form).to_string().into_bytes(),
                };
                events.push(InputEvent::decode(&bytes, &schema).unwrap());
                Ok::<_, TableError>(())
            })
            .unwrap();
        events
    }

    /// All records: (at, JSON text) for lines and rows alike.
    fn records(path: &Path, features: Features<'_>, defaults: &Defaults<'_>) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        Table::open(path, features)
            .unwrap()
            .for_each(defaults, |record| {
                let text = match record.body {
                    Body::Line(line) => String::from_utf8_lossy(line).into_owned(),
                    Body::Row(row) => row.event(FeatureForm::Object).to_string(),
                };
                out.push((record.at, text));
                Ok::<_, TableError>(())
            })
            .unwrap();
        out
    }

    #[test]
    fn csv_jsonl_and_parquet_give_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let csv = equivalent_csv(dir.path());
        let bundle = ["co2", "month_sin", "month_cos"].map(String::from);
        let from_csv = decoded(&csv, Features::Named(&bundle), FeatureForm::Array);
        let from_parquet = decoded(Path::new(FIXTURE), Features::Named(&bundle), FeatureForm::Array);
        assert_eq!(from_csv.len(), 300);
        assert_eq!(from_csv, from_parquet);
        assert_eq!((from_csv[1].id.as_str(), from_csv[1].series_id.as_str()), ("row-2", "s-1"));

        // The same events written by hand as JSONL, with a blank line that is skipped.
        let mut jsonl = String::new();
        for e in &from_csv {
            let v: Vec<f64> = match &e.values {
                crate::event::EventValues::Observation(v) => v.iter().map(|&x| x.into()).collect(),
                other => panic!("{other:?}"),
            };
            let features = serde_json::json!({"co2": v[0], "month_sin": v[1], "month_cos": v[2]});
            let event = serde_json::json!({"id": e.id, "series_id": e.series_id, "timestamp": e.timestamp, "features": features});
            jsonl.push_str(&format!("{event}\n\n"));
        }
        let from_jsonl = decoded(&write(dir.path(), "events.jsonl", &jsonl), Features::Rest, FeatureForm::Array);
        assert_eq!(from_csv, from_jsonl);

        // Every other column as a feature (what `produce` sends): `week` is one, in both.
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        let mut with_week = format!("{},week\n", lines.next().unwrap());
        for (n, line) in lines.enumerate() {
            with_week.push_str(&format!("{line},{}\n", n + 1));
        }
        let csv = write(dir.path(), "with_week.csv", &with_week);
        let from_csv = decoded(&csv, Features::Rest, FeatureForm::Object);
        let from_parquet = decoded(Path::new(FIXTURE), Features::Rest, FeatureForm::Object);
        assert_eq!(from_csv, from_parquet);
        assert!(from_parquet.iter().all(|e| e.extra_features == 1));
    }

    #[test]
    fn missing_id_and_series_columns_take_the_defaults_and_features_keep_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "x,timestamp,y\n1,2026-11-26T19:00:00Z,NaN\n 2 ,t,\n");
        let obs = Defaults { series_id: "s", id_prefix: "obs" };
        assert_eq!(
            records(&csv, Features::Rest, &obs),
            [
                (2, r#"{"features":{"x":1.0,"y":"NaN"},"id":"obs-1","series_id":"s","timestamp":"2026-11-26T19:00:00Z"}"#),
                (3, r#"{"features":{"x":2.0,"y":""},"id":"obs-2","series_id":"s","timestamp":"t"}"#),
            ]
            .map(|(at, s)| (at, s.to_string()))
        );
        let csv = write(dir.path(), "b.csv", "series_id,id,timestamp,x\n,e-7,t,1\n");
        let [(_, event)] = records(&csv, Features::Rest, &PREDICT).try_into().unwrap();
        assert_eq!(event, r#"{"features":{"x":1.0},"id":"e-7","series_id":"","timestamp":"t"}"#);
        let csv = write(dir.path(), "c.csv", "timestamp,x\nt,1\n");
        let [(_, event)] = records(&csv, Features::Rest, &PREDICT).try_into().unwrap();
        assert!(event.contains(r#""id":"row-1","series_id":"series-0""#), "{event}");
    }

    #[test]
    fn jsonl_lines_pass_unchanged_and_are_numbered_counting_blank_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "e.jsonl", "{\"a\": 1}\n\n  \nnot json\r\nlast");
        let lines = records(&path, Features::Rest, &PREDICT);
        assert_eq!(lines, [(1, "{\"a\": 1}\n"), (4, "not json\r\n"), (5, "last")].map(|(at, s)| (at, s.to_string())));
    }

    #[test]
    fn a_table_without_a_needed_column_is_refused_before_the_first_row() {
        let dir = tempfile::tempdir().unwrap();
        let message = |path: &Path, features: Features<'_>| match Table::open(path, features) {
            Err(TableError::Format { path: p, message }) if p == path => message,
            Err(other) => panic!("expected a format error, got {other:?}"),
            Ok(_) => panic!("expected a format error"),
        };
        let no_ts = write(dir.path(), "a.csv", "id,x\n1,2\n");
        assert_eq!(message(&no_ts, Features::Rest), "no `timestamp` column");
        let csv = write(dir.path(), "b.csv", "timestamp,co2\nt,2\n");
        assert_eq!(message(&csv, Features::Named(&["co2".into(), "x".into()])), "no column for feature `x`");
        let missing = dir.path().join("missing.csv");
        assert!(matches!(Table::open(&missing, Features::Rest), Err(TableError::Read { .. })));
    }

    #[test]
    fn parquet_is_chosen_by_extension_in_any_case() {
        assert_eq!(InputFormat::of(Path::new("a/b.PARQUET")), InputFormat::Parquet);
        assert_eq!(InputFormat::of(Path::new("b.csv")), InputFormat::Lines(FileFormat::Csv));
        assert_eq!(InputFormat::of(Path::new("parquet")), InputFormat::Lines(FileFormat::Jsonl));
    }
}
