//! One fine-tuning epoch of MiniLM-L6 on synthetic rows (token ids drawn at random, 12 to 60 tokens, the
//! length spread of MR), timed by phase: the quick loop for profiling graft-tune's kernels without a
//! pipeline around them.
//!
//!   cargo run --release -p graft-benches --bin tune_epoch -- <model.safetensors> <rows> <2|all> [dropout]

use graft_tune::{BertWeights, TuneRow, fine_tune, token_states};
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (weights, rows, layers, dropout) = match args.as_slice() {
        [w, r, l] => (w, r, l, 0.1),
        [w, r, l, d] => (w, r, l, d.parse().expect("dropout: a number")),
        _ => {
            eprintln!("usage: tune_epoch <model.safetensors> <rows> <2|all> [dropout]");
            std::process::exit(2);
        }
    };
    let weights =
        BertWeights::read_safetensors(std::path::Path::new(weights), 12).expect("weights");
    let rows: usize = rows.parse().expect("rows: a number");
    let depth = weights.config().layers;
    let trained = if layers == "all" {
        depth
    } else {
        layers.parse().expect("layers")
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|_| {
            let len = rng.random_range(12..60);
            let mut row = vec![101u32];
            row.extend((0..len - 2).map(|_| rng.random_range(1000..30000u32)));
            row.push(102);
            row
        })
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let states =
        (trained < depth).then(|| token_states(&weights, depth - trained, &refs).expect("states"));
    let train: Vec<TuneRow> = (0..rows)
        .map(|i| TuneRow {
            ids: &ids[i],
            states: states.as_ref().map(|s| &s[i]),
            label: i % 2,
        })
        .collect();
    let options = graft_benches::fine_tune_recipe(trained, 2, dropout);
    let outcome = fine_tune(&weights, &train, &[], &options, &mut |_| {}).expect("fine-tuning");
    // A digest of every tuned value's bits: equal digests from two runs show training is deterministic.
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    for name in outcome.weights.names() {
        for v in outcome.weights.tensor(name).expect("listed").iter() {
            std::hash::Hash::hash(&v.to_bits(), &mut digest);
        }
    }
    let digest = std::hash::Hasher::finish(&digest);
    let e = &outcome.epochs[0];
    let p = e.phase_seconds;
    println!(
        "{{\"rows\": {rows}, \"layers\": \"{layers}\", \"seconds\": {:.3}, \"forward\": {:.3}, \"backward\": {:.3}, \"optimizer\": {:.3}, \"weights_digest\": \"{digest:016x}\"}}",
        e.seconds, p.forward, p.backward, p.optimizer
    );
}
