//! graft-tune on a tiny random BERT: gradients against finite differences, a separable toy task learnt in
//! seconds, determinism, and errors that name the parameter or row.

use graft_tune::{
    BertWeights, Decay, Objective, TuneError, TuneOptions, TuneRow, encode, fine_tune, tiny_bert,
};
use ndarray::Array2;

fn options(layers: usize, epochs: usize) -> TuneOptions {
    TuneOptions {
        trainable_layers: layers,
        learning_rate: 3e-3,
        head_learning_rate: 3e-2,
        layer_decay: 0.9,
        epochs,
        batch_size: 8,
        warmup: 0.1,
        decay: Decay::Linear,
        weight_decay: 0.01,
        dropout: 0.1,
        patience: None,
        gradual_unfreezing: false,
        frozen_dropout: false,
        objective: Objective::Classification { classes: 2 },
        max_grad_norm: 1.0,
        seed: 11,
        lora: None,
    }
}

/// Sentences of 3 to 6 tokens; the class is whether token 5 or token 6 appears among noise tokens 7..12.
fn toy_rows() -> Vec<(Vec<u32>, usize)> {
    (0..48)
        .map(|i| {
            let label = i % 2;
            let mut ids = vec![1u32];
            for j in 0..(1 + i % 4) {
                ids.push(7 + ((i * 3 + j * 5) % 6) as u32);
            }
            ids.insert(1 + (i / 2) % (ids.len()), 5 + label as u32);
            ids.push(2);
            (ids, label)
        })
        .collect()
}

fn rows(data: &[(Vec<u32>, usize)]) -> Vec<TuneRow<'_>> {
    data.iter()
        .map(|(ids, label)| TuneRow {
            ids,
            states: None,
            label: *label,
        })
        .collect()
}

/// fixtures/models/tiny-bert.safetensors: the seeded tiny BERT graft's fixtures ship (written by
/// crates/engine/tests/fine_tune.rs).
fn fixture() -> BertWeights {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/tiny-bert.safetensors");
    BertWeights::read_safetensors(&path, 2).unwrap()
}

#[test]
fn the_tiny_fixture_learns_a_separable_toy_task_in_every_block_and_its_embedding_changes() {
    let weights = fixture();
    let data = toy_rows();
    let (train, valid) = data.split_at(32);
    let outcome = fine_tune(
        &weights,
        &rows(train),
        &rows(valid),
        &options(2, 25),
        &mut |_| {},
    )
    .unwrap();
    let last = outcome.epochs.last().unwrap();
    assert_eq!(last.valid_accuracy, Some(1.0), "{:?}", outcome.epochs);
    assert!(
        last.train_loss < outcome.epochs[0].train_loss / 2.0,
        "{:?}",
        outcome.epochs
    );
    let ids: Vec<&[u32]> = data.iter().map(|(i, _)| i.as_slice()).collect();
    let before = encode(&weights, &ids, 16).unwrap();
    let after = encode(&outcome.weights, &ids, 16).unwrap();
    assert!((&before - &after).iter().any(|d| d.abs() > 1e-3));
    // Trained blocks and embeddings moved; the shape did not.
    assert_eq!(outcome.weights.config(), weights.config());
}

#[test]
fn the_same_seed_gives_the_same_weights_and_another_seed_does_not() {
    let weights = tiny_bert(1, 13);
    let data = toy_rows();
    let run = |seed| {
        let mut o = options(1, 3);
        o.seed = seed;
        let out = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap();
        out.weights
            .tensor("encoder.layer.0.output.dense.weight")
            .unwrap()
            .to_owned()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn top_blocks_from_cached_states_train_like_the_whole_encoder_with_the_bottom_frozen() {
    // The states of block 0, computed by a 1-block encoder, stand in for ONNX Runtime's cached output.
    let weights = tiny_bert(2, 13);
    let data = toy_rows();
    let bottom = bottom_states(&weights, &data);
    let cached = cached_rows(&data, &bottom);
    let mut o = options(1, 4);
    o.dropout = 0.0;
    let out = fine_tune(&weights, &cached, &cached, &o, &mut |_| {}).unwrap();
    let untouched = "encoder.layer.0.attention.self.query.weight";
    assert_eq!(out.weights.tensor(untouched), weights.tensor(untouched));
    let trained = "encoder.layer.1.attention.self.query.weight";
    assert_ne!(out.weights.tensor(trained), weights.tensor(trained));
    assert!(
        out.epochs.last().unwrap().valid_accuracy.unwrap() > 0.9,
        "{:?}",
        out.epochs
    );
}

#[test]
fn frozen_dropout_runs_the_frozen_blocks_each_step_without_training_them() {
    let weights = tiny_bert(2, 13);
    let data = toy_rows();
    let bottom = bottom_states(&weights, &data);
    let cached = cached_rows(&data, &bottom);
    let tensor = |w: &BertWeights, name: &str| {
        w.tensor(name)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    let trained = "encoder.layer.1.output.dense.weight";
    // Without dropout, running the frozen block each step is the cached states' training, to rounding.
    let mut o = options(1, 3);
    o.dropout = 0.0;
    let from_states = fine_tune(&weights, &cached, &[], &o, &mut |_| {}).unwrap();
    o.frozen_dropout = true;
    let recomputed = fine_tune(&weights, &cached, &[], &o, &mut |_| {}).unwrap();
    for (a, b) in tensor(&from_states.weights, trained)
        .iter()
        .zip(tensor(&recomputed.weights, trained))
    {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // With dropout, the frozen block's masks change the trained weights, never the frozen ones; rows
    // without states are accepted.
    o.dropout = 0.1;
    let without_states: Vec<TuneRow<'_>> = cached
        .iter()
        .map(|r| TuneRow { states: None, ..*r })
        .collect();
    let with_dropout = fine_tune(&weights, &without_states, &[], &o, &mut |_| {}).unwrap();
    o.frozen_dropout = false;
    let cached_dropout = fine_tune(&weights, &cached, &[], &o, &mut |_| {}).unwrap();
    assert_ne!(
        tensor(&with_dropout.weights, trained),
        tensor(&cached_dropout.weights, trained)
    );
    let frozen = "encoder.layer.0.attention.self.query.weight";
    assert_eq!(with_dropout.weights.tensor(frozen), weights.tensor(frozen));
}

/// The rows with their cached states at the boundary.
fn cached_rows<'a>(data: &'a [(Vec<u32>, usize)], states: &'a [Array2<f32>]) -> Vec<TuneRow<'a>> {
    data.iter()
        .zip(states)
        .map(|((ids, label), s)| TuneRow {
            ids,
            states: Some(s),
            label: *label,
        })
        .collect()
}

/// Token states after block 0, from graft-tune's forward pass (a run gets them from ONNX Runtime).
fn bottom_states(weights: &BertWeights, data: &[(Vec<u32>, usize)]) -> Vec<Array2<f32>> {
    let ids: Vec<&[u32]> = data.iter().map(|(i, _)| i.as_slice()).collect();
    graft_tune::token_states(weights, 1, &ids).unwrap()
}

#[test]
fn bad_parameters_and_rows_are_named() {
    let weights = tiny_bert(2, 13);
    let data = toy_rows();
    let mut o = options(3, 1);
    let err = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, TuneError::Parameter { name: "layers", .. }),
        "{err}"
    );
    o.trainable_layers = 1;
    o.learning_rate = f64::NAN;
    let err = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("fine_tune.learning_rate"), "{err}");
    o.learning_rate = 1e-3;
    let err = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("states are missing"), "{err}");
    let too_big = [TuneRow {
        ids: &[1, 99, 2],
        states: None,
        label: 0,
    }];
    let err = fine_tune(&weights, &too_big, &[], &options(2, 1), &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("training row 0: token id 99"),
        "{err}"
    );
}

#[test]
fn contrastive_pairs_pull_a_class_together_and_push_the_classes_apart() {
    let weights = fixture();
    let data = toy_rows();
    let mut o = options(2, 15);
    o.objective = Objective::Contrastive { pairs_per_row: 4 };
    o.dropout = 0.0;
    let ids: Vec<&[u32]> = data.iter().map(|(i, _)| i.as_slice()).collect();
    let margin = |w: &BertWeights| {
        let e = encode(w, &ids, 16).unwrap();
        let (mut same, mut other) = (Vec::new(), Vec::new());
        for i in 0..data.len() {
            for j in i + 1..data.len() {
                let cos = e.row(i).dot(&e.row(j));
                if data[i].1 == data[j].1 {
                    same.push(cos)
                } else {
                    other.push(cos)
                }
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        mean(&same) - mean(&other)
    };
    let out = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap();
    let (before, after) = (margin(&weights), margin(&out.weights));
    assert!(
        after > before + 0.2,
        "same-class minus other-class cosine: {before} → {after}"
    );
    assert!(out.epochs.last().unwrap().train_loss < out.epochs[0].train_loss);
}

#[test]
fn simcse_spreads_different_sentences_apart_without_reading_labels() {
    let weights = fixture();
    // 48 different sentences (a repeated one would be its own in-batch negative).
    let mut data: Vec<(Vec<u32>, usize)> = Vec::new();
    let mut state = 7u64;
    while data.len() < 48 {
        let mut ids = vec![1u32];
        for _ in 0..3 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ids.push(3 + ((state >> 33) % 10) as u32);
        }
        ids.push(2);
        if !data.iter().any(|(d, _)| *d == ids) {
            data.push((ids, data.len() % 2));
        }
    }
    let mut o = options(2, 10);
    o.objective = Objective::SimCse { temperature: 0.05 };
    o.dropout = 0.1;
    let ids: Vec<&[u32]> = data.iter().map(|(i, _)| i.as_slice()).collect();
    // The mean cosine between different sentences: a random encoder's embeddings crowd into a narrow cone,
    // and SimCSE's in-batch negatives push them apart (Gao et al.'s "uniformity").
    let crowding = |w: &BertWeights| {
        let e = encode(w, &ids, 16).unwrap();
        let mut cosines = Vec::new();
        for i in 0..data.len() {
            for j in i + 1..data.len() {
                cosines.push(e.row(i).dot(&e.row(j)));
            }
        }
        cosines.iter().sum::<f32>() / cosines.len() as f32
    };
    let out = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap();
    let (before, after) = (crowding(&weights), crowding(&out.weights));
    assert!(
        after < before - 0.1,
        "mean cosine of different sentences: {before} → {after}"
    );
    assert!(out.epochs.last().unwrap().train_loss < out.epochs[0].train_loss);
    assert_eq!(out.epochs[0].valid_loss, None, "no validation score");
    // Labels play no part: the same run with every label changed gives the same weights.
    let relabelled: Vec<(Vec<u32>, usize)> = data.iter().map(|(i, l)| (i.clone(), 1 - l)).collect();
    let again = fine_tune(&weights, &rows(&relabelled), &[], &o, &mut |_| {}).unwrap();
    assert_eq!(again.weights, out.weights);
}

#[test]
fn simcse_refuses_what_would_make_it_meaningless() {
    let weights = fixture();
    let data = toy_rows();
    let mut o = options(2, 1);
    o.objective = Objective::SimCse { temperature: 0.05 };
    o.dropout = 0.0;
    let err = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("fine_tune.dropout"), "{err}");
    o.dropout = 0.1;
    o.objective = Objective::SimCse { temperature: 0.0 };
    let err = fine_tune(&weights, &rows(&data), &[], &o, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("fine_tune.temperature"), "{err}");
}

/// The singular values of `m` `[rows, cols]` above `tolerance`.
fn rank(m: &ndarray::ArrayD<f32>, tolerance: f64) -> usize {
    let (rows, cols) = (m.shape()[0], m.shape()[1]);
    let mat = faer::Mat::<f64>::from_fn(rows, cols, |i, j| f64::from(m[[i, j]]));
    mat.singular_values()
        .unwrap()
        .iter()
        .filter(|&&s| s > tolerance)
        .count()
}

#[test]
fn lora_learns_with_low_rank_changes_to_the_matrices_alone() {
    let weights = fixture();
    let data = toy_rows();
    let (train, valid) = data.split_at(32);
    let mut o = options(1, 30);
    o.lora = Some(graft_tune::Lora {
        rank: 2,
        alpha: 4.0,
    });
    let (train_states, valid_states) = (
        bottom_states(&weights, train),
        bottom_states(&weights, valid),
    );
    let out = fine_tune(
        &weights,
        &cached_rows(train, &train_states),
        &cached_rows(valid, &valid_states),
        &o,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        out.epochs.last().unwrap().train_loss < out.epochs[0].train_loss * 0.7,
        "{:?}",
        out.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );
    // Trained: six adapters of the top block (A [2, in] and B [out, 2]) and the head [2, 8] + [2].
    let (h, f) = (8, 16);
    let adapters = 2 * (4 * (h + h) + (h + f) + (f + h));
    assert_eq!(out.trainable_parameters, adapters + 2 * h + 2);
    let top = "encoder.layer.1.";
    for name in weights.names() {
        let (released, tuned) = (
            weights.tensor(name).unwrap(),
            out.weights.tensor(name).unwrap(),
        );
        let adapted =
            name.starts_with(top) && name.ends_with(".weight") && !name.contains("LayerNorm");
        if adapted {
            // The merged change W − W₀ is (α/r)·B·A: rank 2 at most, and not zero.
            let change = &tuned - &released;
            assert_eq!(rank(&change, 1e-5), 2, "{name}");
        } else {
            assert_eq!(tuned, released, "{name} must stay frozen");
        }
    }
}
