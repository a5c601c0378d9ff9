//! JSONL: one event per line, passed on unparsed.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{Body, Record, TableError};

pub(super) fn for_each<E: From<TableError>>(
    path: &Path,
    file: File,
    each: &mut impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let (mut line_no, mut read) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|source| TableError::Read { path: path.into(), source })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        read += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        each(Record { at: line_no, read, body: Body::Line(&line) })?;
    }
}
