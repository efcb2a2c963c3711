//! Writes the bring-your-own-features fixtures: 48 rows of 6-d features in two classes, as a Parquet table
//! (`embedding` as a plain list of float64, the way pandas/pyarrow write it, plus `label`, `split` and a
//! multi-label `tags` column, labels a/b/c joined by `|`, each carried by the sign of dimension 0/1/2) and as
//! a `.npy` float32 matrix with a row-aligned `labels` CSV:
//! `cargo run -p graft-ingest --example feature_fixtures -- fixtures/data`

use polars::prelude::{DataFrame, NamedFrom, ParquetWriter, Series};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: feature_fixtures <dir>")?,
    );
    let (rows, dim) = (48usize, 6usize);
    // Deterministic "noise" (no RNG crate needed): a fixed irrational rotation, folded into [-1.5, 1.5).
    let noise = |i: usize| ((i as f64 * 0.618_033_988_749_895).fract() - 0.5) * 3.0;
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    let mut splits = Vec::new();
    let mut tags = Vec::new();
    for r in 0..rows {
        let positive = r % 2 == 0;
        // Which of the tags a, b, c the row carries (a is the class label `positive`).
        let carries = [positive, (r / 8) % 2 == 0, (r / 3) % 2 == 0];
        let v: Vec<f64> = (0..dim)
            .map(|d| {
                let signal = match carries.get(d) {
                    Some(true) => 1.0,
                    Some(false) => -1.0,
                    None => 0.0,
                };
                signal + noise(r * dim + d)
            })
            .collect();
        let names: Vec<&str> = ["a", "b", "c"]
            .iter()
            .zip(carries)
            .filter(|(_, c)| *c)
            .map(|(n, _)| *n)
            .collect();
        tags.push(names.join("|"));
        vectors.push(v);
        labels.push(if positive { "positive" } else { "negative" });
        // 24 train, 12 validation, 12 test, both classes in each.
        splits.push(match r % 8 {
            0 | 1 | 4 | 5 => "train",
            2 | 3 => "validation",
            _ => "test",
        });
    }
    let embedding: Vec<Series> = vectors
        .iter()
        .map(|v| Series::new("".into(), v.clone()))
        .collect();
    let mut table = DataFrame::new(
        rows,
        vec![
            Series::new("embedding".into(), embedding).into(),
            Series::new("label".into(), labels.clone()).into(),
            Series::new("split".into(), splits.clone()).into(),
            Series::new("tags".into(), tags.clone()).into(),
            // Twelve groups of four consecutive rows (e.g. four sentences per document).
            Series::new(
                "group".into(),
                (0..rows).map(|r| format!("g{}", r / 4)).collect::<Vec<_>>(),
            )
            .into(),
        ],
    )?;
    ParquetWriter::new(std::fs::File::create(dir.join("tiny-features.parquet"))?)
        .finish(&mut table)?;

    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let mut header = header.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(&header);
    for v in &vectors {
        for &x in v {
            npy.extend_from_slice(&(x as f32).to_le_bytes());
        }
    }
    std::fs::write(dir.join("tiny-features.npy"), npy)?;
    let mut csv = String::from("label,split,tags\n");
    for ((l, s), t) in labels.iter().zip(&splits).zip(&tags) {
        csv.push_str(&format!("{l},{s},{t}\n"));
    }
    std::fs::write(dir.join("tiny-features-labels.csv"), csv)?;
    Ok(())
}
