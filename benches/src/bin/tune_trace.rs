//! graft's fine-tuning loss step by step, for `benches/fine_tune_vs_torch.sh` to hold against PyTorch's
//! on the same rows, in the same batch order, from the same initial head, with dropout off.
//!
//!   cargo run --release -p graft-benches --bin tune_trace -- <sample.csv> <splits.csv> \
//!       <model.safetensors> <tokenizer.json> <layers: 2|all> <rows>
//!
//! Trains on the first `rows` training rows of `splits.csv` (rows of `sample.csv`, columns `text`,
//! `label`) with graft's classification recipe (pipelines/fine-tune.toml, one epoch, dropout 0). The
//! bottom blocks' states come from graft-tune's own forward pass. Prints one JSON line per step: the
//! step's loss and its rows (as `splits.csv` numbers them).

use graft_tune::{BertWeights, TuneRow, fine_tune, token_states};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sample, splits, weights, tokenizer, layers, count] = args.as_slice() else {
        eprintln!(
            "usage: tune_trace <sample.csv> <splits.csv> <model.safetensors> <tokenizer.json> <2|all> <rows>"
        );
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("rows: a number");
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for record in csv::Reader::from_path(sample)
        .expect("sample.csv")
        .records()
    {
        let record = record.expect("a sample row");
        texts.push(record[0].to_string());
        labels.push(record[1].to_string());
    }
    let mut classes = labels.clone();
    classes.sort();
    classes.dedup();
    let train: Vec<usize> = csv::Reader::from_path(splits)
        .expect("splits.csv")
        .records()
        .map(|r| r.expect("a splits row"))
        .filter(|r| &r[2] == "train")
        .map(|r| r[0].parse().expect("a row number"))
        .take(count)
        .collect();
    let mut tok = tokenizers::Tokenizer::from_file(tokenizer).expect("tokenizer.json");
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 256,
        ..Default::default()
    }))
    .expect("truncation");
    let ids: Vec<Vec<u32>> = train
        .iter()
        .map(|&r| {
            tok.encode(texts[r].as_str(), true)
                .expect("tokenized")
                .get_ids()
                .to_vec()
        })
        .collect();
    let weights =
        BertWeights::read_safetensors(std::path::Path::new(weights), 12).expect("weights");
    let depth = weights.config().layers;
    let trained = if layers == "all" {
        depth
    } else {
        layers.parse().expect("layers: a number or all")
    };
    let id_refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let states = (trained < depth)
        .then(|| token_states(&weights, depth - trained, &id_refs).expect("states"));
    let rows: Vec<TuneRow> = (0..train.len())
        .map(|i| TuneRow {
            ids: &ids[i],
            states: states.as_ref().map(|s| &s[i]),
            label: classes
                .binary_search(&labels[train[i]])
                .expect("a known label"),
        })
        .collect();
    let options = graft_benches::fine_tune_recipe(trained, classes.len(), 0.0);
    fine_tune(&weights, &rows, &[], &options, &mut |p| {
        let batch: Vec<usize> = p.batch.iter().map(|&i| train[i]).collect();
        println!(
            "{{\"step\": {}, \"loss\": {}, \"rows\": {batch:?}}}",
            p.step, p.step_loss
        );
    })
    .expect("fine-tuning");
}
