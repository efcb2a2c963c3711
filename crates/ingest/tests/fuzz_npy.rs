//! `.npy` feature files with headers that parse: shapes, element types, orders and header lengths chosen to
//! reach the shape arithmetic (a `rows * cols` that overflows, a shape that promises more data than the file
//! holds). Whatever the header says, the reader returns the matrix it describes or an error naming the file,
//! and allocates no more than a few times the file's size.

use std::path::Path;

use graft_ingest::read_feature_matrix;
use graft_stdx::alloc_probe::{CountingAlloc, peak_during};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One dimension of a shape: small, large, overflowing, or not a number.
fn dimension() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0usize..6).prop_map(|d| d.to_string()),
        1 => prop::sample::select(vec![
            (1usize << 31).to_string(),
            (1usize << 40).to_string(),
            (usize::MAX / 4 + 1).to_string(),
            usize::MAX.to_string(),
            "18446744073709551616".to_owned(),
            "-1".to_owned(),
            "x".to_owned(),
        ]),
    ]
}

#[derive(Debug, Clone)]
struct Npy {
    version: u8,
    descr: &'static str,
    fortran: &'static str,
    shape: Vec<String>,
    /// Keys left out of the header.
    drop_key: Option<usize>,
    /// Added to the true header length in the preamble (0: honest).
    length_error: i64,
    /// Body bytes: `None` = exactly what the header's shape and type need (when small), else these.
    body: Option<Vec<u8>>,
}

fn npy() -> impl Strategy<Value = Npy> {
    (
        prop::sample::select(vec![1u8, 2, 3, 9]),
        prop::sample::select(vec!["'<f4'", "'<f8'", "'|f4'", "'<i8'", "'>f4'", "<f4"]),
        prop::sample::select(vec!["False", "True", "maybe"]),
        prop::collection::vec(dimension(), 0..4),
        prop::option::of(0usize..3),
        prop_oneof![6 => Just(0i64), 1 => -20i64..20, 1 => Just(1i64 << 31)],
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    )
        .prop_map(
            |(version, descr, fortran, shape, drop_key, length_error, body)| Npy {
                version,
                descr,
                fortran,
                shape,
                drop_key,
                length_error,
                body,
            },
        )
}

/// The expected matrix shape when the header describes a readable one.
fn small_shape(n: &Npy) -> Option<(usize, usize)> {
    let dims: Vec<usize> = n
        .shape
        .iter()
        .map(|d| d.parse().ok())
        .collect::<Option<_>>()?;
    match dims[..] {
        // Zero features is refused whatever the rows (a header can claim 10^18 rows of nothing).
        [r, c] if c > 0 && r.checked_mul(c).is_some_and(|n| n <= 64) => Some((r, c)),
        _ => None,
    }
}

fn encode(n: &Npy) -> Vec<u8> {
    let shape = match n.shape.len() {
        1 => format!("({},)", n.shape[0]),
        _ => format!("({})", n.shape.join(", ")),
    };
    let entries = [
        format!("'descr': {}", n.descr),
        format!("'fortran_order': {}", n.fortran),
        format!("'shape': {shape}"),
    ];
    let kept: Vec<&String> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != n.drop_key)
        .map(|(_, e)| e)
        .collect();
    let mut header = format!(
        "{{{}, }}",
        kept.iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    while (header.len() + 11) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let declared = (header.len() as i64 + n.length_error).max(0) as u64;
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend([n.version, 0]);
    if n.version == 1 {
        bytes.extend((declared as u16).to_le_bytes());
    } else {
        bytes.extend((declared as u32).to_le_bytes());
    }
    bytes.extend(header.as_bytes());
    match (&n.body, small_shape(n)) {
        (Some(body), _) => bytes.extend(body),
        (None, Some((r, c))) => {
            let width = if n.descr.contains("f8") || n.descr.contains("i8") {
                8
            } else {
                4
            };
            bytes.extend((0..r * c * width).map(|i| (i % 7) as u8));
        }
        (None, None) => {}
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_parsed_header_gives_its_matrix_or_an_error_naming_the_file(n in npy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.npy");
        let bytes = encode(&n);
        std::fs::write(&path, &bytes).unwrap();
        let (read, peak) = peak_during(|| read_feature_matrix(&path, "embedding"));
        prop_assert!(peak <= 4 * bytes.len() + (64 << 10), "{} bytes, peak {peak}", bytes.len());
        match read {
            Ok(matrix) => {
                let (r, c) = small_shape(&n).expect("only a small 2-D shape can be read");
                prop_assert_eq!(matrix.dim(), (r, c));
            }
            Err(e) => prop_assert!(names(&e, &path), "{e}"),
        }
    }
}

fn names(e: &dyn std::fmt::Display, path: &Path) -> bool {
    e.to_string().contains(&path.display().to_string())
}

#[test]
fn an_honest_header_reads_and_a_huge_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.npy");
    let honest = Npy {
        version: 1,
        descr: "'<f4'",
        fortran: "False",
        shape: vec!["2".to_owned(), "3".to_owned()],
        drop_key: None,
        length_error: 0,
        body: None,
    };
    std::fs::write(&path, encode(&honest)).unwrap();
    assert_eq!(
        read_feature_matrix(&path, "embedding").unwrap().dim(),
        (2, 3)
    );
    // rows * cols overflows usize: before the fix, a debug build panicked ("attempt to multiply with overflow").
    let huge = Npy {
        shape: vec![usize::MAX.to_string(), "3".to_owned()],
        ..honest
    };
    std::fs::write(&path, encode(&huge)).unwrap();
    let err = read_feature_matrix(&path, "embedding")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is too large") && names(&err, &path), "{err}");
    // Found by the fuzz test in CI: 2^40 rows of 0 features need no bytes, and the check for NaN went row
    // by row through all of them (a hang). Now refused at once.
    let empty_rows = Npy {
        shape: vec![(1usize << 40).to_string(), "0".to_owned()],
        ..huge
    };
    std::fs::write(&path, encode(&empty_rows)).unwrap();
    let err = read_feature_matrix(&path, "embedding")
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 features") && names(&err, &path), "{err}");
}
