//! Parquet tables, through the `parquet` crate's row API without arrow.
//!
//! Only the needed top-level columns are read (a projection), so other columns may have any type.
//! Their types and codecs are checked before the first row, so a file this cannot read is refused
//! before any event: `timestamp` is a string or a timestamp (INT64 with a unit, or legacy INT96;
//! rendered RFC 3339 UTC, a timestamp not adjusted to UTC read as UTC), `id` and `series_id` are
//! strings or integers, features are float, double or integer. Snappy, gzip, LZ4 and uncompressed
//! files read; the codecs the `parquet` features in Cargo.toml leave out are refused.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use super::{feature_value, Body, Columns, Defaults, Features, Record, TableError, TableRow};

/// A Parquet file whose columns are found and checked.
pub(super) struct ParquetRows {
    reader: SerializedFileReader<File>,
    plan: ParquetPlan,
}

impl ParquetRows {
    pub(super) fn open(path: &Path, file: File, features: Features<'_>) -> Result<ParquetRows, TableError> {
        let reader =
            SerializedFileReader::new(file).map_err(|source| TableError::Parquet { path: path.into(), source })?;
        let plan = ParquetPlan::new(reader.metadata(), features)
            .map_err(|message| TableError::Format { path: path.into(), message })?;
        Ok(ParquetRows { reader, plan })
    }

    pub(super) fn names(&self) -> &[String] {
        &self.plan.columns.names
    }

    /// Reads the rows in file order; `size` (the file's) scales [`Record::read`].
    pub(super) fn for_each<E: From<TableError>>(
        self,
        path: &Path,
        size: u64,
        defaults: &Defaults<'_>,
        each: &mut impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ParquetRows { reader, plan } = self;
        let parquet_err = |source| TableError::Parquet { path: path.into(), source };
        let total = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0).max(1);
        let c = &plan.columns;
        let mut row_no = 0u64;
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).map_err(parquet_err)?;
            for row in group.get_row_iter(Some(plan.projection.clone())).map_err(parquet_err)? {
                let fields = row.map_err(parquet_err)?.into_columns();
                let field = |i: usize| fields.get(i).map_or(&Field::Null, |(_, f)| f);
                row_no += 1;
                let timestamp = timestamp_text(field(c.timestamp));
                let series_id = c.series_id.map(|i| key_text(field(i)));
                let row = TableRow {
                    id: Cow::Owned(c.id.map_or_else(|| defaults.id(row_no), |i| key_text(field(i)))),
                    series_id: series_id.as_deref().unwrap_or(defaults.series_id),
                    timestamp: &timestamp,
                    names: &c.names,
                    features: c.features.iter().map(|&i| feature_field(field(i))).collect(),
                };
                let read = size.saturating_mul(row_no) / total;
                each(Record { at: row_no, read, body: Body::Row(row) })?;
            }
        }
        Ok(())
    }
}

/// The projection to read, and where each part of a row is in it.
#[derive(Debug)]
struct ParquetPlan {
    projection: parquet::schema::types::Type,
    /// Indices into the projected row.
    columns: Columns,
}

impl ParquetPlan {
    /// Finds and checks the columns; the error names the column and what is wrong with it.
    fn new(meta: &ParquetMetaData, features: Features<'_>) -> Result<ParquetPlan, String> {
        let root = meta.file_metadata().schema();
        let fields = root.get_fields();
        let header: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        let Columns { timestamp, id, series_id, features, names } = Columns::find(&header, features)?;

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
        for &i in &features {
            if !matches!(kind(i), ColumnKind::Integer | ColumnKind::Float) {
                return Err(wrong(i, "a feature column must be float, double or integer"));
            }
        }

        let mut wanted: Vec<usize> =
            [timestamp].into_iter().chain(id).chain(series_id).chain(features.iter().copied()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        check_codecs(meta, &wanted.iter().map(|&i| fields[i].name()).collect::<Vec<_>>())?;
        let projection = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(wanted.iter().map(|&i| fields[i].clone()).collect())
            .build()
            .map_err(|e| e.to_string())?;
        // Every column index above is in `wanted`, which is sorted.
        let at = |i: usize| wanted.binary_search(&i).expect("a selected column is in the projection");
        let columns = Columns {
            timestamp: at(timestamp),
            id: id.map(at),
            series_id: series_id.map(at),
            features: features.into_iter().map(at).collect(),
            names,
        };
        Ok(ParquetPlan { projection, columns })
    }
}

/// Refuses a file whose `read` columns use a codec this build leaves out, before the first row.
fn check_codecs(meta: &ParquetMetaData, read: &[&str]) -> Result<(), String> {
    for group in meta.row_groups() {
        for chunk in group.columns() {
            // The codecs the `parquet` features in Cargo.toml leave out (zstd, brotli: C or big).
            let unread = match chunk.compression() {
                Compression::ZSTD(_) => "zstd",
                Compression::BROTLI(_) => "Brotli",
                Compression::LZO => "LZO",
                _ => continue,
            };
            if chunk.column_path().parts().first().is_some_and(|n| read.contains(&n.as_str())) {
                return Err(format!(
                    "column `{}` is compressed with {unread}, which this build does not read; \
                     write the file with Snappy (pyarrow's default), gzip, LZ4 or no compression",
                    chunk.column_path().string()
                ));
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::FIXTURE;
    use crate::table::{Table, DEFAULT_SERIES};

    #[test]
    fn parquet_without_a_feature_column_or_with_a_non_numeric_one_is_refused_naming_it() {
        let read = |features: &[&str]| {
            let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
            let defaults = Defaults { series_id: DEFAULT_SERIES, id_prefix: "row" };
            let mut rows = 0;
            let r = Table::open(Path::new(FIXTURE), Features::Named(&features)).and_then(|table| {
                table.for_each(&defaults, |_| {
                    rows += 1;
                    Ok::<_, TableError>(())
                })
            });
            (r.map(|()| rows), rows)
        };
        let message = |r: Result<usize, TableError>| match r {
            Err(TableError::Format { path, message }) if path == Path::new(FIXTURE) => message,
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
