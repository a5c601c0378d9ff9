//! CSV tables: a header, then one event per record.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use super::{feature_value, Body, Columns, Defaults, Features, Record, TableError, TableRow};

/// A CSV file past its header.
pub(super) struct CsvRows {
    reader: ::csv::Reader<File>,
    columns: Columns,
}

fn format_error(path: &Path, error: ::csv::Error) -> TableError {
    TableError::Format { path: path.into(), message: error.to_string() }
}

impl CsvRows {
    pub(super) fn open(path: &Path, file: File, features: Features<'_>) -> Result<CsvRows, TableError> {
        let mut reader = ::csv::Reader::from_reader(file);
        let headers = reader.headers().map_err(|e| format_error(path, e))?.clone();
        let header: Vec<&str> = headers.iter().collect();
        let columns =
            Columns::find(&header, features).map_err(|message| TableError::Format { path: path.into(), message })?;
        Ok(CsvRows { reader, columns })
    }

    pub(super) fn names(&self) -> &[String] {
        &self.columns.names
    }

    pub(super) fn for_each<E: From<TableError>>(
        self,
        path: &Path,
        defaults: &Defaults<'_>,
        each: &mut impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let CsvRows { mut reader, columns: c } = self;
        let mut row_no = 0u64;
        for record in reader.records() {
            row_no += 1;
            // The reader refuses a record whose length differs from the header's, so every
            // column index below is in range.
            let record = record.map_err(|e| format_error(path, e))?;
            let row = TableRow {
                id: c.id.map_or_else(|| Cow::Owned(defaults.id(row_no)), |i| Cow::Borrowed(&record[i])),
                series_id: c.series_id.map_or(defaults.series_id, |i| &record[i]),
                timestamp: &record[c.timestamp],
                names: &c.names,
                features: c
                    .features
                    .iter()
                    .map(|&i| feature_value(record[i].trim().parse().ok(), || record[i].to_string()))
                    .collect(),
            };
            let read = record.position().map_or(0, |p| p.byte());
            // The header is line 1; a quoted line break would shift this, which no event has.
            each(Record { at: row_no + 1, read, body: Body::Row(row) })?;
        }
        Ok(())
    }
}
