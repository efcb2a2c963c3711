//! graft's side of `benches/heads_vs_sklearn.sh`: trains the logistic and MLP heads on features and labels
//! stored as `.npy` (written by the script, shared with scikit-learn) and prints one JSON line per head.
//!
//! Usage: heads_vs_sklearn <dir> <c> <mlp-epochs>, where <dir> holds x_train.npy, y_train.npy, x_test.npy,
//! y_test.npy (float32 features, int64 labels), x_val.npy, y_val.npy.

use std::path::Path;
use std::time::Instant;

use graft_heads::{Fit, Logistic, Mlp, ParamGuard, Predict, Targets};
use ndarray::Array2;

/// Reads a little-endian `.npy` file: (shape, raw data bytes, dtype descriptor).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>, String) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + header_len]).into_owned();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (shape, bytes[start + header_len..].to_vec(), descr)
}

fn features(path: &Path) -> Array2<f32> {
    let (shape, data, descr) = read_npy(path);
    assert_eq!(descr, "<f4", "{}", path.display());
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Array2::from_shape_vec((shape[0], shape[1]), values).unwrap()
}

fn labels(path: &Path) -> Vec<usize> {
    let (_, data, descr) = read_npy(path);
    assert_eq!(descr, "<i8", "{}", path.display());
    data.chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    predicted.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let c: f64 = args[2].parse().unwrap();
    let epochs: usize = args[3].parse().unwrap();
    let (x_train, y_train) = (
        features(&dir.join("x_train.npy")),
        labels(&dir.join("y_train.npy")),
    );
    let (x_val, y_val) = (
        features(&dir.join("x_val.npy")),
        labels(&dir.join("y_val.npy")),
    );
    let (x_test, y_test) = (
        features(&dir.join("x_test.npy")),
        labels(&dir.join("y_test.npy")),
    );
    let k = y_train.iter().max().unwrap() + 1;
    let t = Targets::new(&y_train, k).unwrap();
    let tv = Targets::new(&y_val, k).unwrap();

    let clock = Instant::now();
    let head = Logistic::params()
        .c(c)
        .tol(1e-4)
        .max_iter(1000)
        .fit(x_train.view(), &t)
        .unwrap();
    let seconds = clock.elapsed().as_secs_f64();
    let acc = accuracy(&head.predict(x_test.view()).unwrap(), &y_test);
    println!(
        "{{\"library\": \"graft\", \"head\": \"logistic\", \"accuracy\": {acc:.4}, \"fit_seconds\": {seconds:.3}, \"iterations\": {}}}",
        head.report().iterations
    );

    let clock = Instant::now();
    let mlp = Mlp::params()
        .hidden(&[256])
        .dropout(0.0)
        .learning_rate(1e-3)
        .weight_decay(1e-4)
        .batch_size(200)
        .max_epochs(epochs)
        .patience(Some(10))
        .seed(0)
        .check()
        .unwrap()
        .fit_with_validation(x_train.view(), &t, Some((x_val.view(), &tv)))
        .unwrap();
    let seconds = clock.elapsed().as_secs_f64();
    let acc = accuracy(&mlp.predict(x_test.view()).unwrap(), &y_test);
    println!(
        "{{\"library\": \"graft\", \"head\": \"mlp\", \"accuracy\": {acc:.4}, \"fit_seconds\": {seconds:.3}, \"iterations\": {}}}",
        mlp.report().epochs_run
    );
}
