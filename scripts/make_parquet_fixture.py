#!/usr/bin/env python3
"""Generate tests/fixtures/co2_weekly_head.parquet for the Parquet input of `streamcast predict`.

Run from the repository root with pyarrow and pandas in a throwaway virtualenv:

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow pandas
    /tmp/pa/bin/python scripts/make_parquet_fixture.py

The file is the first 300 rows of data/co2_weekly.csv as pyarrow writes it by default
(Snappy, format 2.6), split into row groups of 128 rows so a reader must cross row groups.
src/batch.rs rebuilds the same rows as CSV and checks both give identical predictions, so
the columns use the types a CSV reader would not see:

- `timestamp`: timestamp[ns, UTC], which Parquet stores as INT64 TIMESTAMP(NANOS) with no
  legacy converted type;
- `series_id`: string, `s-0` for even rows and `s-1` for odd rows (0-based);
- `co2`, `month_sin`: float64; `month_cos`: float32 (the CSV value rounded to f32);
- `week`: int64 row number, not a bundle feature, so a reader must ignore it.

There is no `id` column: rows get the CSV default, `row-<n>`.
"""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 300
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/co2_weekly_head.parquet"


def main() -> None:
    df = pd.read_csv(ROOT / "data/co2_weekly.csv", nrows=ROWS, dtype={"timestamp": str})
    assert len(df) == ROWS and list(df.columns) == ["timestamp", "co2", "month_sin", "month_cos"]
    table = pa.table(
        {
            "timestamp": pa.array(pd.to_datetime(df["timestamp"], utc=True), type=pa.timestamp("ns", tz="UTC")),
            "series_id": pa.array([f"s-{i % 2}" for i in range(ROWS)], type=pa.string()),
            "co2": pa.array(df["co2"], type=pa.float64()),
            "month_sin": pa.array(df["month_sin"], type=pa.float64()),
            "month_cos": pa.array(df["month_cos"].astype("float32"), type=pa.float32()),
            "week": pa.array(range(1, ROWS + 1), type=pa.int64()),
        }
    )
    pq.write_table(table, OUT, compression="snappy", row_group_size=128)

    # Check what was written, so the fixture is what the docstring says.
    meta = pq.ParquetFile(OUT).metadata
    assert meta.num_rows == ROWS and meta.num_row_groups == 3
    ts = meta.schema.column(0)
    assert ts.physical_type == "INT64" and ts.converted_type == "NONE", ts
    assert all(meta.row_group(0).column(i).compression == "SNAPPY" for i in range(meta.num_columns))
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {meta.num_row_groups} row groups)")


if __name__ == "__main__":
    main()
