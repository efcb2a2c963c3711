//! The converted EfficientNet-Lite0 (graft-assets converts the published checkpoint) computes what it should:
//! photos of known ImageNet classes are classified as those classes through graft's own preprocessing.
//!
//! Needs ONNX Runtime, the converted model and scikit-image's sample photos in the cache (`cargo xtask test`
//! fetches them first).

use std::path::PathBuf;

use graft_assets::Cache;
use graft_backbone::{
    ImageBackbone, ImageBackboneConfig, ImagePreprocess, ImageSource, Layout, PixelType, Provider,
    Runtime,
};

fn cache() -> Cache {
    Cache::new(
        std::env::var_os(graft_assets::CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.graft-cache")
            }),
    )
}

fn lite0(output: &str) -> ImageBackbone {
    let cache = cache();
    let runtime = Runtime::load(&cache.runtime("onnxruntime").unwrap().library.path).unwrap();
    let model = cache.image_model("efficientnet-lite0").unwrap();
    let p = &model.entry.preprocess;
    let preprocess = ImagePreprocess {
        input: p.input.clone(),
        resize: p.resize,
        crop: p.crop,
        mean: p.mean,
        std: p.std,
        layout: Layout::Nchw,
        dtype: PixelType::Float32,
        bgr: false,
    };
    ImageBackbone::load(
        &runtime,
        &model.onnx.path,
        ImageBackboneConfig {
            preprocess,
            output: output.to_owned(),
            batch_size: 2,
            intra_threads: 2,
            progress: false,
            provider: Provider::Cpu,
        },
    )
    .unwrap()
}

#[test]
fn known_photos_get_their_imagenet_class() {
    let cache = cache();
    let photos = [
        ImageSource::File(cache.sample("coffee").unwrap().path),
        ImageSource::File(cache.sample("chelsea").unwrap().path),
    ];
    let (logits, stats) = lite0("logits").embed(&photos).unwrap();
    assert_eq!(logits.dim(), (2, 1000));
    assert_eq!(stats.rows, 2);
    let top = |row: usize| {
        let r = logits.row(row);
        (0..1000).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap()
    };
    assert_eq!(
        top(0),
        967,
        "coffee.png is an espresso (ImageNet class 967)"
    );
    // Chelsea is a tabby cat: ImageNet's tabby (281), tiger cat (282) and Egyptian cat (285) are all right.
    assert!(
        [281, 282, 285].contains(&top(1)),
        "chelsea.png → {}",
        top(1)
    );

    let (features, _) = lite0("features").embed(&photos).unwrap();
    assert_eq!(features.dim(), (2, 1280));
    // Pooled ReLU6 activations: non-negative and bounded by 6.
    assert!(features.iter().all(|v| (0.0..=6.0).contains(v)));
}
