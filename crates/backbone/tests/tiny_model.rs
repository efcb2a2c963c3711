//! The text backbone on the tiny BERT-shaped fixture graph (fixtures/make_tiny_model.py): batching, padding,
//! pooling, truncation and order, checked against embeddings computed one text at a time.
//!
//! Needs the ONNX Runtime library; graft-assets fetches it into the cache (`cargo xtask test` does so first).

use std::path::{Path, PathBuf};

use graft_backbone::{BackboneError, Pooling, Provider, Runtime, TextBackbone, TextBackboneConfig};
use ndarray::Array2;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runtime() -> Runtime {
    let cache = graft_assets::Cache::new(
        std::env::var_os(graft_assets::CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".graft-cache")),
    );
    Runtime::load(&cache.runtime("onnxruntime").unwrap().library.path).unwrap()
}

fn backbone(config: TextBackboneConfig) -> Result<TextBackbone, BackboneError> {
    TextBackbone::load(
        &runtime(),
        &repo().join("fixtures/models/tiny-embedder.onnx"),
        &repo().join("fixtures/models/tiny-tokenizer.json"),
        TextBackboneConfig {
            intra_threads: 1,
            progress: false,
            ..config
        },
    )
}

const TEXTS: [&str; 6] = [
    "a wonderful and moving film",
    "dull",
    "i hated every minute of it",
    "great fun",
    "the worst movie of the year and a tedious mess",
    "lovely",
];

fn one_by_one(config: &TextBackboneConfig) -> Array2<f32> {
    let mut b = backbone(config.clone()).unwrap();
    let rows: Vec<Array2<f32>> = TEXTS.iter().map(|t| b.embed(&[*t]).unwrap().0).collect();
    ndarray::concatenate(
        ndarray::Axis(0),
        &rows.iter().map(|r| r.view()).collect::<Vec<_>>(),
    )
    .unwrap()
}

fn assert_close(a: &Array2<f32>, b: &Array2<f32>) {
    assert_eq!(a.dim(), b.dim());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn batched_padded_extraction_equals_one_text_at_a_time_in_input_order() {
    for pooling in [Pooling::Mean, Pooling::Cls] {
        for normalize in [true, false] {
            let config = TextBackboneConfig {
                batch_size: 4,
                pooling,
                normalize,
                ..TextBackboneConfig::default()
            };
            let (batched, stats) = backbone(config.clone()).unwrap().embed(&TEXTS).unwrap();
            assert_close(&batched, &one_by_one(&config));
            assert_eq!((stats.rows, stats.batches), (6, 2));
            // Length-sorted batches: the four longest texts share the first batch.
            assert!(stats.padded_tokens < 6 * 12, "{stats:?}");
            assert!(stats.tokens <= stats.padded_tokens);
        }
    }
}

#[test]
fn mean_pooling_carries_the_sentiment_dimension_and_normalises() {
    let (e, _) = backbone(TextBackboneConfig::default())
        .unwrap()
        .embed(&TEXTS)
        .unwrap();
    assert_eq!(e.ncols(), 8);
    for (text, row) in TEXTS.iter().zip(e.rows()) {
        assert!((row.dot(&row) - 1.0).abs() < 1e-5, "{text}");
    }
    // The fixture sets dimension 0 to +1 for positive and -1 for negative words.
    let signs: Vec<bool> = e.column(0).iter().map(|v| *v > 0.0).collect();
    assert_eq!(signs, [true, false, false, true, false, true]);
}

#[test]
fn cls_pooling_takes_the_first_token() {
    // The fixture has no attention, so the [CLS] state is the same for every text.
    let config = TextBackboneConfig {
        pooling: Pooling::Cls,
        normalize: false,
        ..TextBackboneConfig::default()
    };
    let (e, _) = backbone(config).unwrap().embed(&TEXTS).unwrap();
    for row in e.rows() {
        assert_eq!(row, e.row(0));
    }
}

#[test]
fn truncation_keeps_max_length_tokens_including_specials() {
    let config = TextBackboneConfig {
        max_length: 3,
        ..TextBackboneConfig::default()
    };
    let mut b = backbone(config).unwrap();
    let (long, stats) = b.embed(&["a wonderful and moving film", "dull"]).unwrap();
    assert_eq!(stats.truncated_rows, 1);
    // [CLS] a [SEP] is what survives of the first text.
    let (short, _) = b.embed(&["a"]).unwrap();
    for (x, y) in long.row(0).iter().zip(short.row(0)) {
        assert!((x - y).abs() < 1e-6);
    }
}

#[test]
fn empty_input_gives_an_empty_matrix() {
    let (e, stats) = backbone(TextBackboneConfig::default())
        .unwrap()
        .embed::<&str>(&[])
        .unwrap();
    assert_eq!(e.nrows(), 0);
    assert_eq!(stats.batches, 0);
}

#[test]
fn configuration_and_file_errors_are_reported() {
    let err = backbone(TextBackboneConfig {
        batch_size: 0,
        ..TextBackboneConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid backbone setting `batch_size`: must be at least 1"
    );
    let err = backbone(TextBackboneConfig {
        output: Some("pooled".into()),
        ..TextBackboneConfig::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no output named `pooled`; the graph's outputs are: last_hidden_state (Tensor<f32>(batch, tokens, 8))"),
        "{err}"
    );
    let err = TextBackbone::load(
        &runtime(),
        Path::new("nope.onnx"),
        Path::new("nope.json"),
        TextBackboneConfig::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "model not found: nope.onnx");
    // A tokenizer file that is not a tokenizer.
    let err = TextBackbone::load(
        &runtime(),
        &repo().join("fixtures/models/tiny-embedder.onnx"),
        &repo().join("fixtures/data/tiny-sentiment.csv"),
        TextBackboneConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("tokenizer "), "{err}");
}

#[test]
fn cuda_that_cannot_start_falls_back_to_cpu_or_fails_when_told_to() {
    // The CPU build of ONNX Runtime cannot register CUDA, exactly like a machine without a usable GPU.
    let cuda = |fallback| TextBackboneConfig {
        provider: Provider::Cuda {
            device_id: 0,
            fallback,
        },
        progress: false,
        ..TextBackboneConfig::default()
    };
    let mut fell_back = backbone(cuda(true)).unwrap();
    assert_eq!(fell_back.execution_provider(), "CPUExecutionProvider");
    let reason = fell_back.provider_fallback().unwrap().to_owned();
    assert!(!reason.is_empty());
    let texts = ["a wonderful film", "a dull film"];
    let (on_fallback, _) = fell_back.embed(&texts).unwrap();
    let mut cpu = backbone(TextBackboneConfig {
        progress: false,
        ..TextBackboneConfig::default()
    })
    .unwrap();
    assert_eq!(cpu.provider_fallback(), None);
    assert_eq!(on_fallback, cpu.embed(&texts).unwrap().0);

    let err = backbone(cuda(false)).unwrap_err().to_string();
    assert!(err.starts_with("cannot run on CUDA: "), "{err}");
    assert!(err.contains("hint: CUDA needs an NVIDIA GPU"), "{err}");
}

#[test]
fn several_sessions_give_the_same_embeddings_as_one() {
    let texts: Vec<String> = (0..50)
        .map(|i| TEXTS[i % TEXTS.len()].repeat(1 + i % 4))
        .collect();
    let config = |sessions| TextBackboneConfig {
        batch_size: 4,
        intra_threads: 2,
        sessions,
        progress: false,
        ..TextBackboneConfig::default()
    };
    let (one, _) = backbone(config(1)).unwrap().embed(&texts).unwrap();
    let mut two = TextBackbone::load(
        &runtime(),
        &repo().join("fixtures/models/tiny-embedder.onnx"),
        &repo().join("fixtures/models/tiny-tokenizer.json"),
        config(2),
    )
    .unwrap();
    let (parallel, stats) = two.embed(&texts).unwrap();
    assert_eq!(stats.batches, 13);
    assert_eq!(parallel, one);
    let too_many = TextBackbone::load(
        &runtime(),
        &repo().join("fixtures/models/tiny-embedder.onnx"),
        &repo().join("fixtures/models/tiny-tokenizer.json"),
        TextBackboneConfig {
            intra_threads: 1,
            ..config(2)
        },
    )
    .unwrap_err();
    assert!(too_many.to_string().contains("`sessions`"), "{too_many}");
}

#[test]
fn planned_batches_and_batches_given_by_the_caller_give_the_same_bytes() {
    // Rows of a few repeated lengths: the plan makes batches of one length where it can.
    let texts: Vec<String> = (0..40).map(|i| TEXTS[i % 3].repeat(1 + i % 2)).collect();
    let config = TextBackboneConfig {
        batch_size: 8,
        ..TextBackboneConfig::default()
    };
    let mut b = backbone(config).unwrap();
    let (planned, stats) = b.embed(&texts).unwrap();
    assert_eq!(
        stats.padded_tokens, stats.tokens,
        "every batch is of one length"
    );
    let encoded = b.tokenizer().encode(&texts).unwrap();
    let order = encoded.length_order();
    let plan = encoded.batch_plan(&order, 8);
    // The plan run two batches at a time (as the feature cache stores), and every row alone.
    let mut by_groups = Array2::<f32>::zeros(planned.dim());
    for group in plan.chunks(2) {
        let (span, batches) = graft_backbone::rebase(group);
        let rows = &order[span];
        let (done, _) = b.embed_batches(&encoded, rows, &batches, |_| {}).unwrap();
        for (k, &row) in rows.iter().enumerate() {
            by_groups.row_mut(row).assign(&done.row(k));
        }
    }
    assert_eq!(by_groups, planned);
    let singles: Vec<_> = (0..order.len()).map(|k| k..k + 1).collect();
    let (alone, stats) = b.embed_batches(&encoded, &order, &singles, |_| {}).unwrap();
    assert_eq!(stats.batches, 40);
    for (k, &row) in order.iter().enumerate() {
        assert_eq!(alone.row(k), planned.row(row));
    }
    // Batches that skip or repeat rows are refused, naming the setting.
    #[allow(clippy::single_range_in_vec_init)] // a list of batches, some of one batch
    let bad = [
        vec![0..3],
        vec![0..20, 19..40],
        vec![0..0, 0..40],
        vec![1..40],
    ];
    for bad in bad {
        let err = b
            .embed_batches(&encoded, &order, &bad, |_| {})
            .expect_err("refused");
        assert!(err.to_string().contains("`batches`"), "{err}");
    }
}

/// Words of the fixture's vocabulary (and one it lacks, `with`), one token each: 26 tokens.
const LONG: &str = "a wonderful and moving film with a brilliant cast the story is smart and warm and \
                    every minute is fun from the start to the finish";

#[test]
fn long_texts_in_windows_pool_the_embeddings_of_their_windows() {
    use graft_backbone::{ChunkPooling, LongTexts};
    let words: Vec<&str> = LONG.split_whitespace().collect();
    let (max_length, stride) = (8, 4);
    // The windows by hand: 6 words of text each (8 less [CLS] and [SEP]), starting every 4 words, the last
    // one reaching the end.
    let mut windows = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + max_length - 2).min(words.len());
        windows.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        start += stride;
    }
    assert_eq!((words.len(), windows.len()), (26, 6));
    for pooling in [ChunkPooling::Mean, ChunkPooling::Max] {
        for normalize in [true, false] {
            let whole = TextBackboneConfig {
                max_length: 64,
                normalize,
                ..TextBackboneConfig::default()
            };
            let (alone, _) = backbone(whole).unwrap().embed(&windows).unwrap();
            let mut expected = match pooling {
                ChunkPooling::Mean => alone.mean_axis(ndarray::Axis(0)).unwrap(),
                ChunkPooling::Max => alone.fold_axis(ndarray::Axis(0), f32::MIN, |a, &b| a.max(b)),
            };
            if normalize {
                expected /= expected.dot(&expected).sqrt();
            }
            let config = TextBackboneConfig {
                max_length,
                long_texts: LongTexts::Chunks {
                    stride: Some(stride),
                    pooling,
                },
                normalize,
                batch_size: 3,
                ..TextBackboneConfig::default()
            };
            let (chunked, stats) = backbone(config).unwrap().embed(&[LONG, "dull"]).unwrap();
            assert_close(
                &chunked.row(0).to_owned().insert_axis(ndarray::Axis(0)),
                &expected.insert_axis(ndarray::Axis(0)),
            );
            // A short text is one window: embedded as when truncating, bit for bit.
            let (short, _) = backbone(TextBackboneConfig {
                normalize,
                ..TextBackboneConfig::default()
            })
            .unwrap()
            .embed(&["dull"])
            .unwrap();
            assert_eq!(chunked.slice(ndarray::s![1..2, ..]), short);
            assert_eq!(
                (
                    stats.rows,
                    stats.sequences,
                    stats.long_rows,
                    stats.truncated_rows
                ),
                (2, 7, 1, 0),
                "{stats:?}"
            );
        }
    }
}

#[test]
fn a_stride_wider_than_the_window_is_refused() {
    use graft_backbone::{ChunkPooling, LongTexts};
    for stride in [0, 7] {
        let config = TextBackboneConfig {
            max_length: 8,
            long_texts: LongTexts::Chunks {
                stride: Some(stride),
                pooling: ChunkPooling::Mean,
            },
            ..TextBackboneConfig::default()
        };
        let err = backbone(config).unwrap_err().to_string();
        assert!(
            err.contains("`stride`") && err.contains("between 1 and 6"),
            "{err}"
        );
    }
}
