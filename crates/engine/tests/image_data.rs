//! The registered Fashion-MNIST as graft reads it: the official split, 28x28 grey images, balanced classes.
//!
//! Needs the data set in the cache (`cargo xtask test` fetches it first with `apt-get download`).

use std::path::PathBuf;

use graft_assets::Cache;
use graft_ingest::{read_idx_images, read_idx_labels};

#[test]
fn fashion_mnist_has_its_official_split_and_balanced_classes() {
    let cache = Cache::new(
        std::env::var_os(graft_assets::CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.graft-cache")
            }),
    );
    let files = cache.image_dataset("fashion-mnist").unwrap();
    assert_eq!(files.entry.classes.len(), 10);
    for (images, labels, count) in [
        (&files.train_images, &files.train_labels, 60_000),
        (&files.test_images, &files.test_labels, 10_000),
    ] {
        let images = read_idx_images(&images.path).unwrap();
        let labels = read_idx_labels(&labels.path).unwrap();
        assert_eq!((images.count, images.height, images.width), (count, 28, 28));
        assert_eq!(labels.len(), count);
        let mut per_class = [0usize; 10];
        for &l in &labels {
            per_class[usize::from(l)] += 1;
        }
        assert_eq!(per_class, [count / 10; 10]);
    }
}
