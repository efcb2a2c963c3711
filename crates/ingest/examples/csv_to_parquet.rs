//! Converts a CSV file to Parquet; used to make `fixtures/data/tiny-sentiment.parquet`:
//! `cargo run -p graft-ingest --example csv_to_parquet -- fixtures/data/tiny-sentiment.csv fixtures/data/tiny-sentiment.parquet`

use polars::prelude::ParquetWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: csv_to_parquet <input.csv> <output.parquet>".into());
    };
    let mut table = graft_ingest::read_table(input.as_ref())?;
    ParquetWriter::new(std::fs::File::create(output)?).finish(&mut table)?;
    Ok(())
}
