//! A check polars does not make: every data page's value count must fit its column chunk. A damaged page
//! header with a negative count becomes a huge `usize` inside polars' decoder, whose allocation then aborts
//! the process (no panic to catch); refusing the file first keeps that an error naming the file.

use std::io::Cursor;
use std::path::Path;

use polars_buffer::Buffer;
use polars_parquet::parquet::page::CompressedPage;
use polars_parquet::parquet::read::{get_page_iterator, read_metadata};

use crate::IngestError;

/// Pages larger than this are left to polars (it refuses them itself).
const MAX_PAGE_BYTES: usize = 1 << 30;

/// Refuses a Parquet file with a data page claiming more values than its column chunk holds (or a negative
/// count). Anything else that is wrong is left for polars to report as it reads.
pub(crate) fn check_page_counts(path: &Path) -> Result<(), IngestError> {
    let bytes = std::fs::read(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    let buffer = Buffer::from_vec(bytes);
    // The page reader itself panics on some damage (an overflowing byte range); polars' own read then meets
    // the same damage and reports it in its words (`parquet_read` catches its panics).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pages_fit(path, &buffer)))
        .unwrap_or(Ok(()))
}

fn pages_fit(path: &Path, buffer: &Buffer<u8>) -> Result<(), IngestError> {
    let Ok(metadata) = read_metadata(&mut Cursor::new(buffer.clone())) else {
        return Ok(());
    };
    for group in &metadata.row_groups {
        for column in group.parquet_columns() {
            let total = u64::try_from(column.num_values()).unwrap_or(0);
            let Ok(pages) = get_page_iterator(
                column,
                Cursor::new(buffer.clone()),
                Vec::new(),
                MAX_PAGE_BYTES,
            ) else {
                return Ok(());
            };
            for page in pages {
                let Ok(page) = page else {
                    return Ok(());
                };
                if let CompressedPage::Data(data) = page
                    && data.num_values() as u64 > total
                {
                    return Err(IngestError::Damaged {
                        path: path.to_path_buf(),
                        message: format!(
                            "a data page of column `{}` claims {} values, its column chunk {total}",
                            column.descriptor().path_in_schema.join("."),
                            data.num_values() as i64
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}
