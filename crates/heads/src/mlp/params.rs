//! The MLP's hyperparameters: the builder, its check, and the checked settings.

use crate::{HeadError, ParamGuard};

/// Hidden-layer nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// GELU in its tanh form, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` (Hendrycks & Gimpel, 2016), as BERT and
    /// GPT-2 implement it; exportable to any ONNX opset.
    Gelu,
}

impl Activation {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
        }
    }
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up from 0 over `warmup_epochs`, then a half-cosine decay to 0 at the last epoch
    /// (Loshchilov & Hutter, SGDR, 2017, without restarts). Updated every step.
    Cosine {
        /// Epochs of linear warm-up.
        warmup_epochs: usize,
    },
    /// The rate multiplied by `gamma` every `step_epochs` epochs.
    Step {
        /// Epochs between decays.
        step_epochs: usize,
        /// Decay factor in (0, 1].
        gamma: f64,
    },
}

/// What early stopping watches on the validation rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// Mean cross-entropy; lower is better.
    Loss,
    /// Accuracy; higher is better.
    Accuracy,
}

/// A feed-forward network: `hidden` fully connected layers with an activation and dropout, then a softmax
/// output layer, trained on mean cross-entropy with AdamW (decoupled weight decay on the weights, not the
/// biases; Loshchilov & Hutter, 2019). Weights start as PyTorch's `nn.Linear` does (uniform in
/// ±1/√fan_in); initialisation, shuffling and dropout draw from one ChaCha8 stream seeded by `seed`, so a
/// fit is reproducible bit for bit.
///
/// ```
/// use graft_heads::{Activation, Mlp, ParamGuard, Predict, Schedule, Targets};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// let x = array![[0.0f32, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]];
/// let y = [0, 0, 1, 1];
/// let (xv, yv) = (array![[0.05f32, 0.95], [0.95, 0.1]], [0, 1]);
/// let head = Mlp::params()
///     .hidden(&[8])
///     .activation(Activation::Gelu)
///     .learning_rate(0.05)
///     .schedule(Schedule::Cosine { warmup_epochs: 2 })
///     .max_epochs(50)
///     .patience(Some(10))
///     .seed(7)
///     .check()?
///     .fit_with_validation(x.view(), &Targets::new(&y, 2)?, Some((xv.view(), &Targets::new(&yv, 2)?)))?;
/// assert_eq!(head.predict(xv.view())?, vec![0, 1]);
/// assert!(head.report().best_epoch.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Mlp;

impl Mlp {
    /// Default hyperparameters, ready for the setters.
    pub fn params() -> MlpParams {
        MlpParams(MlpValidParams {
            hidden: vec![256],
            activation: Activation::Relu,
            dropout: 0.1,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            batch_size: 64,
            max_epochs: 100,
            schedule: Schedule::Constant,
            patience: Some(10),
            monitor: Monitor::Loss,
            restore_best: true,
            seed: 0,
        })
    }
}

/// Unchecked hyperparameters of [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpParams(MlpValidParams);

/// Validated hyperparameters of [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpValidParams {
    pub(crate) hidden: Vec<usize>,
    pub(crate) activation: Activation,
    pub(crate) dropout: f64,
    pub(crate) learning_rate: f64,
    pub(crate) weight_decay: f64,
    pub(crate) batch_size: usize,
    pub(crate) max_epochs: usize,
    pub(crate) schedule: Schedule,
    pub(crate) patience: Option<usize>,
    pub(crate) monitor: Monitor,
    pub(crate) restore_best: bool,
    pub(crate) seed: u64,
}

impl MlpParams {
    /// Widths of the hidden layers, input side first. Default `[256]`; empty means softmax regression
    /// trained by AdamW; every width must be at least 1.
    pub fn hidden(mut self, hidden: &[usize]) -> Self {
        self.0.hidden = hidden.to_vec();
        self
    }

    /// Hidden nonlinearity. Default [`Activation::Relu`].
    pub fn activation(mut self, activation: Activation) -> Self {
        self.0.activation = activation;
        self
    }

    /// Probability of zeroing a hidden unit while training (inverted dropout). Default `0.1`; in [0, 1).
    pub fn dropout(mut self, dropout: f64) -> Self {
        self.0.dropout = dropout;
        self
    }

    /// AdamW step size. Default `1e-3`; positive.
    pub fn learning_rate(mut self, learning_rate: f64) -> Self {
        self.0.learning_rate = learning_rate;
        self
    }

    /// AdamW decoupled weight decay. Default `1e-2`; at least 0.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.0.weight_decay = weight_decay;
        self
    }

    /// Rows per gradient step. Default `64`; at least 1.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.0.batch_size = batch_size;
        self
    }

    /// Passes over the training rows at most. Default `100`; at least 1.
    pub fn max_epochs(mut self, max_epochs: usize) -> Self {
        self.0.max_epochs = max_epochs;
        self
    }

    /// Learning-rate schedule. Default [`Schedule::Constant`].
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.0.schedule = schedule;
        self
    }

    /// Stop after this many epochs without improvement of the monitored validation metric; `None` trains
    /// all epochs. Default `Some(10)`; at least 1. Needs validation rows ([`MlpValidParams::fit_with_validation`]).
    pub fn patience(mut self, patience: Option<usize>) -> Self {
        self.0.patience = patience;
        self
    }

    /// The validation metric early stopping and weight restoring watch. Default [`Monitor::Loss`].
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.0.monitor = monitor;
        self
    }

    /// Keep the weights of the best validation epoch rather than the last. Default `true`.
    pub fn restore_best(mut self, restore_best: bool) -> Self {
        self.0.restore_best = restore_best;
        self
    }

    /// Seed for initialisation, shuffling and dropout. Default `0`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    expected: &'static str,
) -> HeadError {
    HeadError::InvalidParameter {
        name,
        value: value.to_string(),
        expected,
    }
}

impl ParamGuard for MlpParams {
    type Checked = MlpValidParams;

    fn check(self) -> Result<MlpValidParams, HeadError> {
        let p = self.0;
        if p.hidden.contains(&0) {
            return Err(invalid(
                "hidden",
                format!("{:?}", p.hidden),
                "layer widths of at least 1",
            ));
        }
        if !(0.0..1.0).contains(&p.dropout) {
            return Err(invalid("dropout", p.dropout, "a number in [0, 1)"));
        }
        if !(p.learning_rate.is_finite() && p.learning_rate > 0.0) {
            return Err(invalid(
                "learning_rate",
                p.learning_rate,
                "a positive finite number",
            ));
        }
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(invalid(
                "weight_decay",
                p.weight_decay,
                "a finite number of at least 0",
            ));
        }
        if p.batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if p.max_epochs == 0 {
            return Err(invalid("max_epochs", 0, "at least 1"));
        }
        if p.patience == Some(0) {
            return Err(invalid("patience", 0, "at least 1"));
        }
        match p.schedule {
            Schedule::Constant => {}
            Schedule::Cosine { warmup_epochs } => {
                if warmup_epochs >= p.max_epochs {
                    return Err(invalid(
                        "warmup_epochs",
                        warmup_epochs,
                        "fewer than max_epochs",
                    ));
                }
            }
            Schedule::Step { step_epochs, gamma } => {
                if step_epochs == 0 {
                    return Err(invalid("step_epochs", 0, "at least 1"));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(invalid("gamma", gamma, "a number in (0, 1]"));
                }
            }
        }
        Ok(p)
    }
}

impl MlpValidParams {
    /// Hidden widths.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }
    /// Hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// Dropout probability.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }
    /// Base learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }
    /// Weight decay.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
    }
    /// Mini-batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// Epoch budget.
    pub fn max_epochs(&self) -> usize {
        self.max_epochs
    }
    /// Learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }
    /// Early-stopping patience.
    pub fn patience(&self) -> Option<usize> {
        self.patience
    }
    /// Monitored validation metric.
    pub fn monitor(&self) -> Monitor {
        self.monitor
    }
    /// Whether the best epoch's weights are restored.
    pub fn restore_best(&self) -> bool {
        self.restore_best
    }
    /// Seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// These settings as unchecked parameters, to change some with the setters and check again.
    pub fn unchecked(&self) -> MlpParams {
        MlpParams(self.clone())
    }
}
