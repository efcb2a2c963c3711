//! The trained parameters: the encoder's tensors and the new head, their AdamW groups (layer-wise rates, no
//! decay on biases and layer norms), the learning-rate schedule and the update with gradient clipping.

use super::lora::Adapters;
use super::options::{Decay, Objective, TuneOptions};
use crate::adamw::{AdamWParams, Moments, Step, squares};
use crate::encoder::Params;
use crate::weights::{BLOCK_TENSORS, BertConfig, BertWeights, EMBEDDING_TENSORS};

/// One trainable tensor: of the embeddings, of a block, or of the classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Embedding(usize),
    Block(usize, usize),
    HeadWeight,
    HeadBias,
    /// LoRA's `A` and `B` of block `l`'s `k`-th adapted matrix.
    AdapterA(usize, usize),
    AdapterB(usize, usize),
}

/// The classification head on the pooled embedding: `[classes, hidden]` and `[classes]`, zero at start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Head {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

/// What training changes: the encoder and (classification) the head.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Model {
    pub(crate) encoder: Params<f32>,
    pub(crate) head: Option<Head>,
    /// With LoRA: the adapters (the encoder holds their merged weights).
    pub(crate) adapters: Option<Adapters>,
}

impl Model {
    /// The encoder as given, and (classification) a zero head.
    pub(crate) fn new(weights: &BertWeights, options: &TuneOptions) -> Model {
        let config = weights.config();
        let hidden = config.hidden_size;
        let encoder = Params::from_weights(weights);
        let adapters = options.lora.map(|lora| {
            let seed = graft_stdx::derive_seed(options.seed, "lora init");
            Adapters::new(
                &encoder,
                config,
                config.layers - options.trainable_layers,
                lora,
                seed,
            )
        });
        Model {
            adapters,
            encoder,
            head: match options.objective {
                Objective::Classification { classes } => Some(Head {
                    weight: vec![0.0; classes * hidden],
                    bias: vec![0.0; classes],
                }),
                Objective::Contrastive { .. } | Objective::SimCse { .. } => None,
            },
        }
    }

    pub(crate) fn tensor_mut(&mut self, slot: Slot) -> &mut Vec<f32> {
        match slot {
            Slot::Embedding(i) => &mut self.encoder.embeddings[i],
            Slot::Block(l, i) => &mut self.encoder.blocks[l][i],
            Slot::HeadWeight => &mut self.head.as_mut().expect("a head").weight,
            Slot::HeadBias => &mut self.head.as_mut().expect("a head").bias,
            Slot::AdapterA(l, k) => &mut self.adapters.as_mut().expect("LoRA").blocks[l][k].a,
            Slot::AdapterB(l, k) => &mut self.adapters.as_mut().expect("LoRA").blocks[l][k].b,
        }
    }
}

/// A set of tensors sharing a learning rate and weight decay, with their AdamW moments.
pub(crate) struct Group {
    pub(crate) slots: Vec<Slot>,
    pub(crate) moments: Vec<Moments>,
    pub(crate) params: AdamWParams,
    /// AdamW steps taken (a group frozen by gradual unfreezing has taken fewer).
    pub(crate) steps: i32,
    /// Blocks from the top (0 = top block; `layers` = the embeddings; `None` = the head).
    pub(crate) depth: Option<usize>,
    pub(crate) peak: f64,
}

pub(crate) fn decays(name: &str) -> bool {
    name.ends_with("weight") && !name.contains("LayerNorm")
}

/// The gradients of every tensor that may train, kept between steps (cleared, not reallocated).
pub(crate) struct Grads {
    pub(crate) encoder: Params<f32>,
    pub(crate) head: Option<Head>,
    /// The word-embedding rows that may hold a gradient (sorted token ids of the step's batches): the
    /// only rows of the 11.7 M-value table to clear and to count in the norm.
    pub(crate) words: Vec<u32>,
    pub(crate) hidden: usize,
    /// With LoRA: the adapters' gradients (from the encoder's, after each backward pass).
    pub(crate) adapters: Option<Adapters>,
}

impl Grads {
    pub(crate) fn new(model: &Model, lowest: usize, hidden: usize) -> Grads {
        Grads {
            words: Vec::new(),
            hidden,
            adapters: model.adapters.as_ref().map(Adapters::zeros_like),
            encoder: model.encoder.zeros_for(lowest == 0, lowest),
            head: model.head.as_ref().map(|h| Head {
                weight: vec![0.0; h.weight.len()],
                bias: vec![0.0; h.bias.len()],
            }),
        }
    }

    /// Zeroes the gradients of the tensors training now (the top `active` blocks, the embeddings when
    /// every block trains, the head).
    pub(crate) fn clear(&mut self, active: usize, layers: usize) {
        let lowest = layers - active;
        if lowest == 0 {
            let h = self.hidden;
            let (words, rest) = self.encoder.embeddings.split_at_mut(1);
            for &id in &self.words {
                let id = id as usize;
                words[0][id * h..(id + 1) * h].fill(0.0);
            }
            rest.iter_mut().for_each(|g| g.fill(0.0));
        }
        self.words.clear();
        for block in &mut self.encoder.blocks[lowest..] {
            block.iter_mut().for_each(|g| g.fill(0.0));
        }
        if let Some(h) = &mut self.head {
            h.weight.fill(0.0);
            h.bias.fill(0.0);
        }
    }

    /// Notes the token ids of a pass whose backward pass reached the word embeddings.
    pub(crate) fn touch(&mut self, ids: &[u32]) {
        self.words.extend_from_slice(ids);
        self.words.sort_unstable();
        self.words.dedup();
    }

    /// The sum of squares of a tensor's gradient (of the word embeddings: over the touched rows alone,
    /// the rest being zero).
    pub(crate) fn squares(&self, slot: Slot) -> f64 {
        if slot == Slot::Embedding(0) {
            let h = self.hidden;
            let words = &self.encoder.embeddings[0];
            return self
                .words
                .iter()
                .map(|&id| squares(&words[id as usize * h..(id as usize + 1) * h]))
                .sum();
        }
        squares(self.of(slot))
    }

    pub(crate) fn of(&self, slot: Slot) -> &[f32] {
        match slot {
            Slot::Embedding(i) => &self.encoder.embeddings[i],
            Slot::Block(l, i) => &self.encoder.blocks[l][i],
            Slot::HeadWeight => &self.head.as_ref().expect("a head").weight,
            Slot::HeadBias => &self.head.as_ref().expect("a head").bias,
            Slot::AdapterA(l, k) => &self.adapters.as_ref().expect("LoRA").blocks[l][k].a,
            Slot::AdapterB(l, k) => &self.adapters.as_ref().expect("LoRA").blocks[l][k].b,
        }
    }
}

pub(crate) fn group_active(depth: Option<usize>, active: usize, layers: usize) -> bool {
    match depth {
        None => true,
        Some(d) if d == layers => active == layers,
        Some(d) => d < active,
    }
}

/// The learning-rate factor at `step` (0-based).
pub(crate) fn schedule(step: usize, warmup: usize, total: usize, decay: Decay) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let done = (step - warmup) as f64 / span;
    match decay {
        Decay::Constant => 1.0,
        Decay::Linear => 1.0 - done,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
    }
}

/// One optimiser update of the active groups at `factor` of their peak rates, the gradients clipped to a
/// joint norm of `max_norm` (applied as a factor inside the update); returns the top block's rate.
pub(crate) fn update(
    groups: &mut [Group],
    model: &mut Model,
    grads: &Grads,
    (active, layers): (usize, usize),
    max_norm: f64,
    factor: f64,
) -> Option<f64> {
    let live = |g: &&mut Group| group_active(g.depth, active, layers);
    let norm = groups
        .iter_mut()
        .filter(live)
        .flat_map(|g| g.slots.iter().map(|&s| grads.squares(s)))
        .sum::<f64>()
        .sqrt();
    let grad_scale = if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    let mut top = None;
    for g in groups.iter_mut().filter(|g| live(g)) {
        let lr = g.peak * factor;
        if g.depth == Some(0) {
            top = Some(lr);
        }
        g.steps += 1;
        let step = Step::new(&g.params, lr, g.steps, grad_scale);
        for (&slot, moments) in g.slots.iter().zip(&mut g.moments) {
            step.apply(model.tensor_mut(slot), grads.of(slot), moments);
        }
    }
    top
}

pub(crate) fn param_groups(config: &BertConfig, head: bool, options: &TuneOptions) -> Vec<Group> {
    let layers = config.layers;
    let mut groups = Vec::new();
    let mut push = |tensors: Vec<(&str, Slot, usize)>, depth: Option<usize>, peak: f64| {
        let (decayed, plain): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, ..)| decays(n));
        for (set, weight_decay) in [(decayed, options.weight_decay), (plain, 0.0)] {
            if set.is_empty() {
                continue;
            }
            groups.push(Group {
                slots: set.iter().map(|&(_, s, _)| s).collect(),
                moments: set.iter().map(|&(.., len)| Moments::new(len)).collect(),
                params: AdamWParams::new(weight_decay),
                steps: 0,
                depth,
                peak,
            });
        }
    };
    let (h, f) = (config.hidden_size, config.intermediate_size);
    for depth in 0..options.trainable_layers {
        let layer = layers - 1 - depth;
        if let Some(lora) = options.lora {
            // The adapters instead of the block's tensors: `A` [r, in] and `B` [out, r] per matrix.
            let tensors = super::lora::ADAPTED
                .iter()
                .enumerate()
                .flat_map(|(k, &i)| {
                    let shape = crate::weights::block_shape(BLOCK_TENSORS[i], h, f);
                    [
                        (
                            "lora_A.weight",
                            Slot::AdapterA(layer, k),
                            lora.rank * shape[1],
                        ),
                        (
                            "lora_B.weight",
                            Slot::AdapterB(layer, k),
                            shape[0] * lora.rank,
                        ),
                    ]
                })
                .collect();
            push(
                tensors,
                Some(depth),
                options.learning_rate * options.layer_decay.powi(depth as i32),
            );
            continue;
        }
        let tensors = BLOCK_TENSORS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let len = crate::weights::block_shape(name, h, f).iter().product();
                (*name, Slot::Block(layer, i), len)
            })
            .collect();
        push(
            tensors,
            Some(depth),
            options.learning_rate * options.layer_decay.powi(depth as i32),
        );
    }
    if options.trainable_layers == layers && options.lora.is_none() {
        let lens = [
            config.vocab_size * h,
            config.max_positions * h,
            config.type_vocab_size * h,
            h,
            h,
        ];
        let tensors = EMBEDDING_TENSORS
            .iter()
            .zip(lens)
            .enumerate()
            .map(|(i, (name, len))| (*name, Slot::Embedding(i), len))
            .collect();
        push(
            tensors,
            Some(layers),
            options.learning_rate * options.layer_decay.powi(layers as i32),
        );
    }
    if let Objective::Classification { classes } = options.objective
        && head
    {
        push(
            vec![
                ("head.weight", Slot::HeadWeight, classes * h),
                ("head.bias", Slot::HeadBias, classes),
            ],
            None,
            options.head_learning_rate,
        );
    }
    groups
}

/// Values the groups train.
pub(crate) fn trainable(groups: &[Group]) -> usize {
    groups
        .iter()
        .flat_map(|g| g.moments.iter().map(Moments::len))
        .sum()
}
