//! A multilayer perceptron head trained with AdamW on mini-batches.

use ndarray::{Array1, Array2, ArrayView2, Axis, LinalgScalar, ScalarOperand};
use num_traits::Float;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    Fit, FitMultiLabel, HeadError, LabelSets, ParamGuard, Predict, PredictMultiLabel, Targets,
    argmax_rows, check_features, check_multi_label, check_training, softmax_rows,
};

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
    hidden: Vec<usize>,
    activation: Activation,
    dropout: f64,
    learning_rate: f64,
    weight_decay: f64,
    batch_size: usize,
    max_epochs: usize,
    schedule: Schedule,
    patience: Option<usize>,
    monitor: Monitor,
    restore_best: bool,
    seed: u64,
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

fn invalid(name: &'static str, value: impl ToString, expected: &'static str) -> HeadError {
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

    fn rate_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let epoch = step / steps_per_epoch;
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Step { step_epochs, gamma } => {
                self.learning_rate * gamma.powi((epoch / step_epochs) as i32)
            }
            Schedule::Cosine { warmup_epochs } => {
                let warmup = warmup_epochs * steps_per_epoch;
                let total = self.max_epochs * steps_per_epoch;
                if step < warmup {
                    self.learning_rate * (step + 1) as f64 / warmup as f64
                } else {
                    let progress = (step - warmup) as f64 / (total - warmup) as f64;
                    self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }

    /// Trains, watching `validation` rows for early stopping and best-weight restoring; without them all
    /// `max_epochs` run and the last weights are kept.
    pub fn fit_with_validation(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<FittedMlp, HeadError> {
        check_training(x, targets)?;
        if let Some((xv, tv)) = validation {
            check_features(xv, Some(x.ncols()))?;
            if xv.nrows() != tv.labels().len() {
                return Err(HeadError::ShapeMismatch {
                    what: "validation label count",
                    expected: xv.nrows(),
                    got: tv.labels().len(),
                });
            }
        }
        let (net, report) = self.train(
            x,
            &Outputs::Classes(targets.labels(), targets.n_classes()),
            validation.map(|(xv, tv)| (xv, Outputs::Classes(tv.labels(), tv.n_classes()))),
        )?;
        Ok(FittedMlp { net, report })
    }

    /// Continues training from an earlier fit's weights (warm start) on new rows: the continual-learning
    /// update. The earlier head must have the same input width, hidden layers and number of classes;
    /// the optimiser state starts afresh.
    pub fn fit_from(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        start: &FittedMlp,
    ) -> Result<FittedMlp, HeadError> {
        check_training(x, targets)?;
        let layers = &start.net.layers;
        let widths: Vec<usize> = std::iter::once(layers[0].w.nrows())
            .chain(layers.iter().map(|l| l.w.ncols()))
            .collect();
        let mut expected = vec![x.ncols()];
        expected.extend(&self.hidden);
        expected.push(targets.n_classes());
        if widths != expected {
            return Err(HeadError::ShapeMismatch {
                what: "warm-start layer widths (input, hidden…, classes)",
                expected: expected.iter().sum(),
                got: widths.iter().sum(),
            });
        }
        let (net, report) = self.train_from(
            x,
            &Outputs::Classes(targets.labels(), targets.n_classes()),
            None,
            Some(start.net.clone()),
        )?;
        Ok(FittedMlp { net, report })
    }

    /// Knowledge distillation (Hinton, Vinyals & Dean, 2015): trains on the labels and on a teacher's
    /// probabilities softened at `temperature` (rows × classes, each row summing to one), minimising
    /// (1 − `alpha`)·cross-entropy + `alpha`·T²·KL(teacher_T ‖ student_T). `alpha = 0` is ordinary training.
    pub fn fit_distilled(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        teacher: ArrayView2<'_, f32>,
        temperature: f64,
        alpha: f64,
    ) -> Result<FittedMlp, HeadError> {
        check_training(x, targets)?;
        if teacher.dim() != (x.nrows(), targets.n_classes()) {
            return Err(HeadError::ShapeMismatch {
                what: "teacher probabilities (rows × classes)",
                expected: x.nrows() * targets.n_classes(),
                got: teacher.len(),
            });
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "temperature",
                value: temperature.to_string(),
                expected: "a finite number above 0",
            });
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(HeadError::InvalidParameter {
                name: "alpha",
                value: alpha.to_string(),
                expected: "a weight between 0 and 1",
            });
        }
        let (net, report) = self.train(
            x,
            &Outputs::Soft(targets.labels(), teacher, temperature as f32, alpha as f32),
            None,
        )?;
        Ok(FittedMlp { net, report })
    }

    /// Multitask training: one network, a shared trunk (the hidden layers) and one softmax output block per
    /// task, trained jointly on the sum of the tasks' cross-entropies; a row without a label for a task
    /// (`None`) contributes nothing to that task's loss. Caruana (1997), "Multitask learning".
    pub fn fit_multitask(
        &self,
        x: ArrayView2<'_, f32>,
        tasks: &[TaskTargets<'_>],
    ) -> Result<FittedMultitaskMlp, HeadError> {
        check_features(x, None)?;
        if tasks.is_empty() {
            return Err(HeadError::Degenerate {
                rows: x.nrows(),
                classes: 0,
            });
        }
        let widths: Vec<usize> = tasks.iter().map(|t| t.n_classes).collect();
        let mut y = Array2::<f32>::zeros((x.nrows(), widths.iter().sum()));
        let mut start = 0;
        for task in tasks {
            if task.labels.len() != x.nrows() {
                return Err(HeadError::ShapeMismatch {
                    what: "task label count",
                    expected: x.nrows(),
                    got: task.labels.len(),
                });
            }
            for (i, label) in task.labels.iter().enumerate() {
                if let Some(k) = label {
                    y[[i, start + k]] = 1.0;
                }
            }
            start += task.n_classes;
        }
        let (net, report) = self.train(x, &Outputs::Tasks(y.view(), &widths), None)?;
        Ok(FittedMultitaskMlp {
            net,
            widths,
            report,
        })
    }

    /// The multi-label variant of [`MlpValidParams::fit_with_validation`]: one sigmoid output per label,
    /// binary cross-entropy; the monitored "accuracy" is 1 − Hamming loss at threshold ½.
    pub fn fit_multi_label_with_validation(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &LabelSets<'_>)>,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        check_multi_label(x, targets)?;
        if let Some((xv, tv)) = validation {
            check_features(xv, Some(x.ncols()))?;
            if xv.nrows() != tv.sets().len() || tv.n_labels() != targets.n_labels() {
                return Err(HeadError::ShapeMismatch {
                    what: "validation label-set count",
                    expected: xv.nrows(),
                    got: tv.sets().len(),
                });
            }
        }
        let y = targets.indicator();
        let yv = validation.map(|(xv, tv)| (xv, tv.indicator()));
        let (net, report) = self.train(
            x,
            &Outputs::Sets(y.view()),
            yv.as_ref().map(|(xv, y)| (*xv, Outputs::Sets(y.view()))),
        )?;
        Ok(FittedMultiLabelMlp { net, report })
    }

    fn train(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Outputs<'_, f32>,
        validation: Option<(ArrayView2<'_, f32>, Outputs<'_, f32>)>,
    ) -> Result<(Network<f32>, MlpReport), HeadError> {
        self.train_from(x, targets, validation, None)
    }

    fn train_from(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Outputs<'_, f32>,
        validation: Option<(ArrayView2<'_, f32>, Outputs<'_, f32>)>,
        start: Option<Network<f32>>,
    ) -> Result<(Network<f32>, MlpReport), HeadError> {
        let (n, d) = x.dim();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut widths = vec![d];
        widths.extend(&self.hidden);
        widths.push(targets.width());
        let initial = Network::<f32>::init(&widths, self.activation, &mut rng);
        let mut net = start.unwrap_or(initial);
        let mut adam = AdamW::new(&net);
        let steps_per_epoch = n.div_ceil(self.batch_size);
        let mut order: Vec<usize> = (0..n).collect();
        let mut history = Vec::new();
        let mut best: Option<(f64, usize, Network<f32>)> = None;
        let mut step = 0;
        let mut stopped_early = false;
        for epoch in 0..self.max_epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            for batch in order.chunks(self.batch_size) {
                let xb = x.select(Axis(0), batch);
                let yb = targets.rows(batch);
                let masks = net.dropout_masks(batch.len(), self.dropout as f32, &mut rng);
                let (loss, grads) = net.loss_and_gradients(xb.view(), &yb.as_outputs(), &masks);
                loss_sum += f64::from(loss) * batch.len() as f64;
                let rate = self.rate_at(step, steps_per_epoch);
                adam.step(&mut net, &grads, rate as f32, self.weight_decay as f32);
                step += 1;
            }
            // The loss is clamped, so weights can blow up while it stays finite: check both.
            if !loss_sum.is_finite() || !net.is_finite() {
                // A NaN loss would leave NaN weights and NaN probabilities downstream: stop here, naming
                // the setting that usually causes it.
                return Err(HeadError::Diverged {
                    head: "MLP",
                    epoch: epoch + 1,
                    setting: "learning_rate",
                    value: self.learning_rate,
                });
            }
            let mut record = EpochRecord {
                epoch: epoch + 1,
                train_loss: loss_sum / n as f64,
                validation_loss: None,
                validation_accuracy: None,
            };
            if let Some((xv, tv)) = &validation {
                let (loss, accuracy) = net.validation_scores(*xv, tv);
                record.validation_loss = Some(loss);
                record.validation_accuracy = Some(accuracy);
                // Lower is better for both scores as stored.
                let score = match self.monitor {
                    Monitor::Loss => loss,
                    Monitor::Accuracy => -accuracy,
                };
                let improved = best.as_ref().is_none_or(|(b, _, _)| score < *b);
                if improved {
                    best = Some((score, epoch + 1, net.clone()));
                }
                history.push(record);
                if let (Some(patience), Some((_, best_epoch, _))) = (self.patience, &best)
                    && epoch + 1 - best_epoch >= patience
                {
                    stopped_early = true;
                    break;
                }
            } else {
                history.push(record);
            }
        }
        let epochs_run = history.len();
        let best_epoch = best.as_ref().map(|(_, e, _)| *e);
        if self.restore_best
            && let Some((_, _, weights)) = best
        {
            net = weights;
        }
        Ok((
            net,
            MlpReport {
                epochs_run,
                best_epoch,
                stopped_early,
                history,
            },
        ))
    }
}

/// What the output layer is trained against: one class per row (softmax cross-entropy) or 0/1 label
/// indicators (one sigmoid and binary cross-entropy per label).
#[derive(Debug, Clone)]
enum Outputs<'a, A> {
    Classes(&'a [usize], usize),
    Sets(ArrayView2<'a, A>),
    /// Several single-label tasks side by side: one-hot blocks of these widths (an all-zero block: the row
    /// has no label for that task), a softmax per block.
    Tasks(ArrayView2<'a, A>, &'a [usize]),
    /// Knowledge distillation: hard labels, the teacher's probabilities at `temperature`, and `alpha`, the
    /// weight of the soft term.
    Soft(&'a [usize], ArrayView2<'a, A>, A, A),
}

/// A batch's targets, owned.
enum BatchOutputs<'a, A> {
    Classes(Vec<usize>, usize),
    Sets(Array2<A>),
    Tasks(Array2<A>, &'a [usize]),
    Soft(Vec<usize>, Array2<A>, A, A),
}

impl<A: Copy> BatchOutputs<'_, A> {
    fn as_outputs(&self) -> Outputs<'_, A> {
        match self {
            BatchOutputs::Classes(labels, k) => Outputs::Classes(labels, *k),
            BatchOutputs::Sets(y) => Outputs::Sets(y.view()),
            BatchOutputs::Tasks(y, widths) => Outputs::Tasks(y.view(), widths),
            BatchOutputs::Soft(labels, soft, t, alpha) => {
                Outputs::Soft(labels, soft.view(), *t, *alpha)
            }
        }
    }
}

impl<'a, A: Clone> Outputs<'a, A> {
    fn width(&self) -> usize {
        match self {
            Outputs::Classes(_, k) => *k,
            Outputs::Sets(y) | Outputs::Tasks(y, _) | Outputs::Soft(_, y, _, _) => y.ncols(),
        }
    }

    fn rows(&self, rows: &[usize]) -> BatchOutputs<'a, A> {
        match self {
            Outputs::Classes(labels, k) => {
                BatchOutputs::Classes(rows.iter().map(|&i| labels[i]).collect(), *k)
            }
            Outputs::Sets(y) => BatchOutputs::Sets(y.select(Axis(0), rows)),
            Outputs::Tasks(y, widths) => BatchOutputs::Tasks(y.select(Axis(0), rows), widths),
            Outputs::Soft(labels, soft, t, alpha) => BatchOutputs::Soft(
                rows.iter().map(|&i| labels[i]).collect(),
                soft.select(Axis(0), rows),
                t.clone(),
                alpha.clone(),
            ),
        }
    }
}

/// Softmax within each block of columns (`widths` wide, left to right) of every row.
fn softmax_blocks<A: Real>(z: &mut Array2<A>, widths: &[usize]) {
    let mut start = 0;
    for &w in widths {
        let mut block = z.slice_mut(ndarray::s![.., start..start + w]).to_owned();
        softmax_rows(&mut block);
        z.slice_mut(ndarray::s![.., start..start + w])
            .assign(&block);
        start += w;
    }
}

/// Per block of a multitask output: the labelled class of each row (`None` for an all-zero block).
fn block_labels<A: Real>(y: ArrayView2<'_, A>, widths: &[usize]) -> Vec<Vec<Option<usize>>> {
    let mut start = 0;
    let mut out = Vec::new();
    for &w in widths {
        out.push(
            y.rows()
                .into_iter()
                .map(|row| (0..w).find(|&k| row[start + k] > A::zero()))
                .collect(),
        );
        start += w;
    }
    out
}

/// Mean cross-entropy and accuracy of probabilities against labels.
fn loss_and_accuracy(proba: &Array2<f32>, labels: &[usize]) -> (f64, f64) {
    let mut loss = 0.0;
    let mut correct = 0;
    for ((row, &y), predicted) in proba
        .rows()
        .into_iter()
        .zip(labels)
        .zip(argmax_rows(proba.view()))
    {
        loss -= f64::from(row[y].max(1e-12)).ln();
        correct += usize::from(predicted == y);
    }
    let n = labels.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// One epoch of training as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch's batches (with dropout on).
    pub train_loss: f64,
    /// Validation cross-entropy after the epoch, when validation rows were given.
    pub validation_loss: Option<f64>,
    /// Validation accuracy after the epoch, when validation rows were given.
    pub validation_accuracy: Option<f64>,
}

/// How training went.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpReport {
    /// Epochs trained.
    pub epochs_run: usize,
    /// The epoch with the best monitored validation score, when validation rows were given.
    pub best_epoch: Option<usize>,
    /// Whether patience ran out before `max_epochs`.
    pub stopped_early: bool,
    /// Per-epoch losses and validation scores: the training curve.
    pub history: Vec<EpochRecord>,
}

/// A trained [`Mlp`] head.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMlp {
    net: Network<f32>,
    report: MlpReport,
}

impl FittedMlp {
    /// The layers as (weights in × out, bias) pairs, input side first; the last is the output layer.
    pub fn layers(&self) -> Vec<(&Array2<f32>, &Array1<f32>)> {
        self.net.layers.iter().map(|l| (&l.w, &l.b)).collect()
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.net.activation
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }

    /// Rebuilds a head from saved layers (weights in × out, bias), checking that consecutive shapes fit.
    pub fn from_layers(
        layers: Vec<(Array2<f32>, Array1<f32>)>,
        activation: Activation,
    ) -> Result<FittedMlp, HeadError> {
        if layers.is_empty() {
            return Err(HeadError::ShapeMismatch {
                what: "layer count",
                expected: 1,
                got: 0,
            });
        }
        for (i, (w, b)) in layers.iter().enumerate() {
            if w.ncols() != b.len() {
                return Err(HeadError::ShapeMismatch {
                    what: "bias length",
                    expected: w.ncols(),
                    got: b.len(),
                });
            }
            if i > 0 && layers[i - 1].0.ncols() != w.nrows() {
                return Err(HeadError::ShapeMismatch {
                    what: "layer input width",
                    expected: layers[i - 1].0.ncols(),
                    got: w.nrows(),
                });
            }
        }
        Ok(FittedMlp {
            net: Network {
                layers: layers.into_iter().map(|(w, b)| Layer { w, b }).collect(),
                activation,
            },
            report: MlpReport {
                epochs_run: 0,
                best_epoch: None,
                stopped_early: false,
                history: Vec::new(),
            },
        })
    }
}

impl Fit for MlpParams {
    type Fitted = FittedMlp;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedMlp, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for MlpValidParams {
    type Fitted = FittedMlp;

    /// Trains all `max_epochs` on `x` (no validation rows, so no early stopping).
    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedMlp, HeadError> {
        self.fit_with_validation(x, targets, None)
    }
}

impl Predict for FittedMlp {
    fn n_features(&self) -> usize {
        self.net.layers[0].w.nrows()
    }

    fn n_classes(&self) -> usize {
        self.net
            .layers
            .last()
            .expect("at least one layer")
            .w
            .ncols()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        Ok(self.net.forward_proba(x))
    }
}

/// One task's labels for [`MlpValidParams::fit_multitask`]: a class per row, or `None` where the row is not
/// labelled for this task.
#[derive(Debug, Clone, Copy)]
pub struct TaskTargets<'a> {
    labels: &'a [Option<usize>],
    n_classes: usize,
}

impl<'a> TaskTargets<'a> {
    /// Checks that every label is below `n_classes` and that at least two classes exist.
    pub fn new(
        labels: &'a [Option<usize>],
        n_classes: usize,
    ) -> Result<TaskTargets<'a>, HeadError> {
        if n_classes < 2 || labels.iter().flatten().any(|&l| l >= n_classes) {
            return Err(HeadError::Degenerate {
                rows: labels.len(),
                classes: n_classes,
            });
        }
        Ok(TaskTargets { labels, n_classes })
    }
}

/// A trained multitask [`Mlp`]: a shared trunk and one softmax block per task.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMultitaskMlp {
    net: Network<f32>,
    widths: Vec<usize>,
    report: MlpReport,
}

impl FittedMultitaskMlp {
    /// Class probabilities of every task, in task order (rows × that task's classes).
    pub fn predict_proba_tasks(
        &self,
        x: ArrayView2<'_, f32>,
    ) -> Result<Vec<Array2<f32>>, HeadError> {
        check_features(x, Some(self.net.layers[0].w.nrows()))?;
        let mut z = self.net.logits(x);
        softmax_blocks(&mut z, &self.widths);
        let mut start = 0;
        Ok(self
            .widths
            .iter()
            .map(|&w| {
                let block = z.slice(ndarray::s![.., start..start + w]).to_owned();
                start += w;
                block
            })
            .collect())
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }
}

/// A trained multi-label [`Mlp`] head (one sigmoid output per label).
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMultiLabelMlp {
    net: Network<f32>,
    report: MlpReport,
}

impl FittedMultiLabelMlp {
    /// The layers as (weights in × out, bias) pairs, input side first; the last is the output layer.
    pub fn layers(&self) -> Vec<(&Array2<f32>, &Array1<f32>)> {
        self.net.layers.iter().map(|l| (&l.w, &l.b)).collect()
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.net.activation
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }

    /// Rebuilds a head from saved layers, as [`FittedMlp::from_layers`].
    pub fn from_layers(
        layers: Vec<(Array2<f32>, Array1<f32>)>,
        activation: Activation,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        let FittedMlp { net, report } = FittedMlp::from_layers(layers, activation)?;
        Ok(FittedMultiLabelMlp { net, report })
    }
}

impl FitMultiLabel for MlpParams {
    type Fitted = FittedMultiLabelMlp;

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        self.clone().check()?.fit_multi_label(x, targets)
    }
}

impl FitMultiLabel for MlpValidParams {
    type Fitted = FittedMultiLabelMlp;

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        self.fit_multi_label_with_validation(x, targets, None)
    }
}

impl PredictMultiLabel for FittedMultiLabelMlp {
    fn n_features(&self) -> usize {
        self.net.layers[0].w.nrows()
    }

    fn n_labels(&self) -> usize {
        self.net
            .layers
            .last()
            .expect("at least one layer")
            .w
            .ncols()
    }

    fn predict_scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        Ok(self.net.logits(x).mapv(crate::sigmoid))
    }
}

/// Float types the network runs in: f32 for training, f64 for the gradient check.
trait Real:
    Float + LinalgScalar + ScalarOperand + std::ops::AddAssign + std::ops::MulAssign + std::fmt::Debug
{
}
impl<T> Real for T where
    T: Float
        + LinalgScalar
        + ScalarOperand
        + std::ops::AddAssign
        + std::ops::MulAssign
        + std::fmt::Debug
{
}

#[derive(Debug, Clone, PartialEq)]
struct Layer<A> {
    /// in × out
    w: Array2<A>,
    b: Array1<A>,
}

#[derive(Debug, Clone, PartialEq)]
struct Network<A> {
    layers: Vec<Layer<A>>,
    activation: Activation,
}

fn cast<A: Real>(v: f64) -> A {
    A::from(v).expect("representable constant")
}

impl<A: Real> Network<A> {
    /// Whether every weight and bias is a finite number (a diverged run leaves NaN or infinity).
    fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.w.iter().chain(l.b.iter()).all(|v| v.is_finite()))
    }

    fn init(widths: &[usize], activation: Activation, rng: &mut ChaCha8Rng) -> Self {
        let layers = widths
            .windows(2)
            .map(|io| {
                let bound = 1.0 / (io[0] as f64).sqrt();
                let mut draw = || cast::<A>(rng.random_range(-bound..bound));
                let w = Array2::from_shape_simple_fn((io[0], io[1]), &mut draw);
                let b = Array1::from_shape_simple_fn(io[1], &mut draw);
                Layer { w, b }
            })
            .collect();
        Network { layers, activation }
    }

    fn activate(&self, z: &Array2<A>) -> Array2<A> {
        match self.activation {
            Activation::Relu => z.mapv(|v| v.max(A::zero())),
            Activation::Gelu => z.mapv(|v| gelu(v).0),
        }
    }

    fn activation_derivative(&self, z: &Array2<A>) -> Array2<A> {
        match self.activation {
            Activation::Relu => z.mapv(|v| if v > A::zero() { A::one() } else { A::zero() }),
            Activation::Gelu => z.mapv(|v| gelu(v).1),
        }
    }

    /// Inverted-dropout masks for each hidden layer: 0 or 1/(1−p).
    fn dropout_masks(&self, rows: usize, p: f32, rng: &mut ChaCha8Rng) -> Vec<Option<Array2<A>>> {
        let hidden = &self.layers[..self.layers.len() - 1];
        hidden
            .iter()
            .map(|l| {
                (p > 0.0).then(|| {
                    let keep = cast::<A>(1.0 / (1.0 - f64::from(p)));
                    Array2::from_shape_simple_fn((rows, l.w.ncols()), || {
                        if rng.random::<f32>() < p {
                            A::zero()
                        } else {
                            keep
                        }
                    })
                })
            })
            .collect()
    }

    fn logits(&self, x: ArrayView2<'_, A>) -> Array2<A> {
        let mut h = x.to_owned();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = h.dot(&layer.w) + &layer.b;
            h = if i + 1 < self.layers.len() {
                self.activate(&z)
            } else {
                z
            };
        }
        h
    }

    fn forward_proba(&self, x: ArrayView2<'_, A>) -> Array2<A> {
        let mut z = self.logits(x);
        softmax_rows(&mut z);
        z
    }

    /// Validation loss (mean cross-entropy; summed over labels for label sets) and accuracy (for label sets:
    /// the share of label decisions right at threshold ½, i.e. 1 − Hamming loss).
    fn validation_scores(&self, x: ArrayView2<'_, A>, targets: &Outputs<'_, A>) -> (f64, f64) {
        match targets {
            Outputs::Classes(labels, _) | Outputs::Soft(labels, ..) => {
                let proba = self.forward_proba(x);
                let proba = proba.mapv(|v| v.to_f32().unwrap_or(0.0));
                loss_and_accuracy(&proba, labels)
            }
            Outputs::Sets(y) => {
                let z = self.logits(x);
                let (mut loss, mut right) = (0.0, 0usize);
                for (zv, yv) in z.iter().zip(y.iter()) {
                    let (zv, yv) = (zv.to_f64().unwrap_or(0.0), yv.to_f64().unwrap_or(0.0));
                    loss += zv.max(0.0) + (-zv.abs()).exp().ln_1p() - yv * zv;
                    right += usize::from((zv >= 0.0) == (yv > 0.5));
                }
                let n = z.nrows().max(1) as f64;
                (loss / n, right as f64 / z.len().max(1) as f64)
            }
            Outputs::Tasks(y, widths) => {
                let mut p = self.logits(x);
                softmax_blocks(&mut p, widths);
                let (mut loss, mut right, mut labelled) = (0.0, 0usize, 0usize);
                let mut start = 0;
                for (&w, labels) in widths.iter().zip(block_labels(*y, widths)) {
                    for (i, label) in labels.iter().enumerate() {
                        let Some(k) = *label else { continue };
                        let row = p.slice(ndarray::s![i, start..start + w]);
                        loss -= row[k].to_f64().unwrap_or(0.0).max(1e-12).ln();
                        let best = (0..w).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                        right += usize::from(best == k);
                        labelled += 1;
                    }
                    start += w;
                }
                (
                    loss / p.nrows().max(1) as f64,
                    right as f64 / labelled.max(1) as f64,
                )
            }
        }
    }

    /// Mean loss of a batch (softmax cross-entropy, or binary cross-entropy summed over labels) and its
    /// gradient with respect to every weight and bias.
    fn loss_and_gradients(
        &self,
        x: ArrayView2<'_, A>,
        targets: &Outputs<'_, A>,
        masks: &[Option<Array2<A>>],
    ) -> (A, Vec<Layer<A>>) {
        let n = x.nrows();
        // Forward, keeping each layer's input and pre-activation.
        let mut inputs = vec![x.to_owned()];
        let mut pre = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = inputs[i].dot(&layer.w) + &layer.b;
            if i + 1 < self.layers.len() {
                let mut h = self.activate(&z);
                if let Some(mask) = &masks[i] {
                    h *= mask;
                }
                inputs.push(h);
            }
            pre.push(z);
        }
        let inv_n = cast::<A>(1.0 / n as f64);
        let mut loss = A::zero();
        // dL/dz of the output layer: (P − Y)/n for both losses.
        let mut delta = pre.last().expect("output layer").clone();
        match targets {
            Outputs::Classes(labels, _) => {
                softmax_rows(&mut delta);
                for (i, &y) in labels.iter().enumerate() {
                    loss += -delta[[i, y]].max(cast(1e-30)).ln();
                    delta[[i, y]] = delta[[i, y]] - A::one();
                }
            }
            Outputs::Sets(y) => {
                for (z, &yv) in delta.iter_mut().zip(y.iter()) {
                    // softplus(z) − y·z, stably
                    loss += z.max(A::zero()) + (-z.abs()).exp().ln_1p() - yv * *z;
                    *z = crate::sigmoid(*z) - yv;
                }
            }
            Outputs::Soft(labels, soft, t, alpha) => {
                // (1 − α)·CE(y, q) + α·T²·KL(p_T ‖ q_T) (Hinton et al., 2015); its gradient with respect to the
                // logits is (1 − α)(q − y) + α·T·(q_T − p_T).
                let mut tempered = delta.mapv(|z| z / *t);
                softmax_rows(&mut tempered);
                softmax_rows(&mut delta);
                let one = A::one();
                for (i, &y) in labels.iter().enumerate() {
                    loss += (one - *alpha) * -delta[[i, y]].max(cast(1e-30)).ln();
                    for k in 0..delta.ncols() {
                        let (p, q) = (soft[[i, k]], tempered[[i, k]]);
                        if p > A::zero() {
                            loss += *alpha * *t * *t * p * (p.ln() - q.max(cast(1e-30)).ln());
                        }
                        let hard = if k == y { one } else { A::zero() };
                        delta[[i, k]] =
                            (one - *alpha) * (delta[[i, k]] - hard) + *alpha * *t * (q - p);
                    }
                }
            }
            Outputs::Tasks(y, widths) => {
                // Summed cross-entropy over the tasks a row is labelled for; unlabelled blocks pass no gradient.
                softmax_blocks(&mut delta, widths);
                let mut start = 0;
                for (&w, labels) in widths.iter().zip(block_labels(*y, widths)) {
                    for (i, label) in labels.iter().enumerate() {
                        let mut block = delta.slice_mut(ndarray::s![i, start..start + w]);
                        match *label {
                            Some(k) => {
                                loss += -block[k].max(cast(1e-30)).ln();
                                block[k] = block[k] - A::one();
                            }
                            None => block.fill(A::zero()),
                        }
                    }
                    start += w;
                }
            }
        }
        delta.mapv_inplace(|v| v * inv_n);
        let mut grads = Vec::with_capacity(self.layers.len());
        for i in (0..self.layers.len()).rev() {
            let gw = inputs[i].t().dot(&delta);
            let gb = delta.sum_axis(Axis(0));
            grads.push(Layer { w: gw, b: gb });
            if i > 0 {
                let mut back = delta.dot(&self.layers[i].w.t());
                if let Some(mask) = &masks[i - 1] {
                    back *= mask;
                }
                delta = back * self.activation_derivative(&pre[i - 1]);
            }
        }
        grads.reverse();
        (loss * inv_n, grads)
    }
}

/// GELU (tanh form) and its derivative.
fn gelu<A: Real>(x: A) -> (A, A) {
    let c = cast::<A>((2.0 / std::f64::consts::PI).sqrt());
    let a = cast::<A>(0.044715);
    let half = cast::<A>(0.5);
    let u = c * (x + a * x * x * x);
    let t = u.tanh();
    let du = c * (A::one() + cast::<A>(3.0) * a * x * x);
    let value = half * x * (A::one() + t);
    let derivative = half * (A::one() + t) + half * x * (A::one() - t * t) * du;
    (value, derivative)
}

/// AdamW state (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, as PyTorch's defaults).
struct AdamW {
    m: Vec<Layer<f32>>,
    v: Vec<Layer<f32>>,
    t: i32,
}

impl AdamW {
    fn new(net: &Network<f32>) -> Self {
        let zeros = || {
            net.layers
                .iter()
                .map(|l| Layer {
                    w: Array2::zeros(l.w.raw_dim()),
                    b: Array1::zeros(l.b.raw_dim()),
                })
                .collect::<Vec<_>>()
        };
        AdamW {
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    fn step(&mut self, net: &mut Network<f32>, grads: &[Layer<f32>], rate: f32, decay: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: f32| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *p -= rate * ((*m / c1) / ((*v / c2).sqrt() + EPS) + decay * *p);
            }
        };
        for (((layer, g), m), v) in net
            .layers
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            update(
                layer
                    .w
                    .as_slice_mut()
                    .expect("owned weights are contiguous"),
                g.w.as_slice().expect("fresh gradients are contiguous"),
                m.w.as_slice_mut().expect("contiguous"),
                v.w.as_slice_mut().expect("contiguous"),
                decay,
            );
            update(
                layer.b.as_slice_mut().expect("contiguous"),
                g.b.as_slice().expect("contiguous"),
                m.b.as_slice_mut().expect("contiguous"),
                v.b.as_slice_mut().expect("contiguous"),
                0.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;
    use crate::tests_support::blobs;

    #[test]
    fn multitask_mlp_learns_both_tasks_and_skips_missing_labels() {
        let (x, y) = blobs();
        // Task 2: is the class 0? Rows 0, 5, 10… have no label for it.
        let second: Vec<Option<usize>> = y
            .iter()
            .enumerate()
            .map(|(i, &c)| (i % 5 != 0).then_some(usize::from(c == 0)))
            .collect();
        let first: Vec<Option<usize>> = y.iter().map(|&c| Some(c)).collect();
        let fitted = Mlp::params()
            .hidden(&[8])
            .learning_rate(0.05)
            .weight_decay(0.0)
            .dropout(0.0)
            .max_epochs(300)
            .patience(None)
            .seed(1)
            .check()
            .unwrap()
            .fit_multitask(
                x.view(),
                &[
                    TaskTargets::new(&first, 3).unwrap(),
                    TaskTargets::new(&second, 2).unwrap(),
                ],
            )
            .unwrap();
        let proba = fitted.predict_proba_tasks(x.view()).unwrap();
        assert_eq!((proba[0].ncols(), proba[1].ncols()), (3, 2));
        let right = |p: &Array2<f32>, truth: &dyn Fn(usize) -> usize| {
            argmax_rows(p.view())
                .iter()
                .enumerate()
                .filter(|&(i, &k)| k == truth(i))
                .count() as f64
                / p.nrows() as f64
        };
        assert!(right(&proba[0], &|i| y[i]) > 0.95);
        assert!(right(&proba[1], &|i| usize::from(y[i] == 0)) > 0.95);
        assert!(
            TaskTargets::new(&[Some(2)], 2).is_err(),
            "label out of range"
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (x, y) = blobs();
        let x = x.mapv(f64::from);
        // Multi-label targets for the same rows (any 0/1 pattern over three outputs).
        let sets = Array2::from_shape_fn((x.nrows(), 3), |(i, l)| ((i + l) % 3 == 0) as u8 as f64);
        // Two tasks (2 and 3 classes); every fourth row has no label for the first.
        let widths = [2, 3];
        let tasks = Array2::from_shape_fn((x.nrows(), 5), |(i, c)| match c {
            0 | 1 => (i % 4 != 0 && c == y[i] % 2) as u8 as f64,
            _ => (c - 2 == y[i]) as u8 as f64,
        });
        // A teacher's softened probabilities for the same rows.
        let mut soft = Array2::from_shape_fn((x.nrows(), 3), |(i, c)| ((i * 7 + c * 3) % 5) as f64);
        crate::softmax_rows(&mut soft);
        for activation in [Activation::Relu, Activation::Gelu] {
            for targets in [
                Outputs::Classes(&y, 3),
                Outputs::Sets(sets.view()),
                Outputs::Tasks(tasks.view(), &widths),
                Outputs::Soft(&y, soft.view(), 3.0, 0.7),
            ] {
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                let net = Network::<f64>::init(&[2, 5, 4, targets.width()], activation, &mut rng);
                // Fixed dropout masks are part of the function being differentiated.
                let masks = net.dropout_masks(x.nrows(), 0.3, &mut rng);
                let (_, grads) = net.loss_and_gradients(x.view(), &targets, &masks);
                let h = 1e-6;
                for (l, layer) in net.layers.iter().enumerate() {
                    for idx in 0..layer.w.len() + layer.b.len() {
                        let bump = |delta: f64| {
                            let mut probe = net.clone();
                            let target = &mut probe.layers[l];
                            if idx < target.w.len() {
                                target.w.as_slice_mut().unwrap()[idx] += delta;
                            } else {
                                target.b[idx - target.w.len()] += delta;
                            }
                            probe.loss_and_gradients(x.view(), &targets, &masks).0
                        };
                        let numeric = (bump(h) - bump(-h)) / (2.0 * h);
                        let analytic = if idx < layer.w.len() {
                            grads[l].w.as_slice().unwrap()[idx]
                        } else {
                            grads[l].b[idx - layer.w.len()]
                        };
                        assert!(
                            (numeric - analytic).abs() < 1e-6,
                            "{activation:?} layer {l} parameter {idx}: {numeric} vs {analytic}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn multi_label_mlp_learns_label_sets_with_early_stopping() {
        let (x, y) = blobs();
        // Label 0: class 0 or 1; label 1: class 1 or 2 (so class 1 rows carry both).
        let sets: Vec<Vec<usize>> = y
            .iter()
            .map(|&c| match c {
                0 => vec![0],
                1 => vec![0, 1],
                _ => vec![1],
            })
            .collect();
        let targets = LabelSets::new(&sets, 2).unwrap();
        let params = Mlp::params()
            .hidden(&[16])
            .learning_rate(0.05)
            .batch_size(4)
            .max_epochs(200)
            .patience(Some(20))
            .seed(5)
            .check()
            .unwrap();
        let head = params
            .fit_multi_label_with_validation(x.view(), &targets, Some((x.view(), &targets)))
            .unwrap();
        assert_eq!(head.predict_sets(x.view(), &[0.5, 0.5]).unwrap(), sets);
        let last = head.report().history.last().unwrap();
        assert!(last.validation_accuracy.unwrap() > 0.9, "{last:?}");
        let again = params.fit_multi_label(x.view(), &targets).unwrap();
        assert_eq!(
            again,
            params.fit_multi_label(x.view(), &targets).unwrap(),
            "seeded"
        );
    }

    #[test]
    fn a_diverging_run_is_an_error_naming_the_learning_rate() {
        let (x, y) = blobs();
        let t = Targets::new(&y, 3).unwrap();
        let err = Mlp::params()
            .learning_rate(1e30)
            .max_epochs(3)
            .fit(x.view(), &t)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HeadError::Diverged {
                    setting: "learning_rate",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("lower `learning_rate`"), "{err}");
    }

    #[test]
    fn learns_three_clusters_reproducibly() {
        let (x, y) = blobs();
        let t = Targets::new(&y, 3).unwrap();
        let params = Mlp::params()
            .hidden(&[16])
            .learning_rate(0.05)
            .batch_size(4)
            .max_epochs(60)
            .patience(None)
            .seed(3);
        let a = params.fit(x.view(), &t).unwrap();
        assert_eq!(a.predict(x.view()).unwrap(), y);
        let b = params.fit(x.view(), &t).unwrap();
        assert_eq!(a, b);
        let other = params.clone().seed(4).fit(x.view(), &t).unwrap();
        assert_ne!(a.layers()[0].0, other.layers()[0].0);
        assert_eq!(a.report().epochs_run, 60);
        assert!(a.report().history[59].train_loss < a.report().history[0].train_loss);
    }

    #[test]
    fn early_stopping_restores_the_best_epoch() {
        let (x, y) = blobs();
        let t = Targets::new(&y, 3).unwrap();
        // Validation rows labelled against the clusters: training can only make them worse.
        let xv = array![[0.0f32, 0.1], [4.0, 0.1]];
        let yv = [1, 2];
        let tv = Targets::new(&yv, 3).unwrap();
        let head = Mlp::params()
            .hidden(&[8])
            .learning_rate(0.05)
            .batch_size(5)
            .patience(Some(3))
            .fit_checked(x.view(), &t, Some((xv.view(), &tv)));
        let report = head.report();
        assert!(report.stopped_early);
        let best = report.best_epoch.unwrap();
        assert_eq!(report.epochs_run, best + 3);
        let best_loss = report.history[best - 1].validation_loss.unwrap();
        let (restored, _) = loss_and_accuracy(&head.predict_proba(xv.view()).unwrap(), &yv);
        assert!((restored - best_loss).abs() < 1e-9);
    }

    #[test]
    fn schedules_shape_the_learning_rate() {
        let p = Mlp::params()
            .learning_rate(1.0)
            .max_epochs(10)
            .schedule(Schedule::Cosine { warmup_epochs: 2 })
            .check()
            .unwrap();
        assert!((p.rate_at(0, 1) - 0.5).abs() < 1e-12);
        assert!((p.rate_at(1, 1) - 1.0).abs() < 1e-12);
        assert!((p.rate_at(2, 1) - 1.0).abs() < 1e-12);
        assert!(p.rate_at(9, 1) < 0.05);
        let p = Mlp::params()
            .learning_rate(1.0)
            .schedule(Schedule::Step {
                step_epochs: 3,
                gamma: 0.5,
            })
            .check()
            .unwrap();
        assert_eq!(p.rate_at(2, 1), 1.0);
        assert_eq!(p.rate_at(3, 1), 0.5);
        assert_eq!(p.rate_at(13, 2), 0.25);
    }

    #[test]
    fn invalid_parameters_are_named() {
        let cases = [
            (Mlp::params().dropout(1.0), "dropout"),
            (Mlp::params().learning_rate(0.0), "learning_rate"),
            (Mlp::params().weight_decay(-1.0), "weight_decay"),
            (Mlp::params().hidden(&[4, 0]), "hidden"),
            (Mlp::params().batch_size(0), "batch_size"),
            (Mlp::params().patience(Some(0)), "patience"),
            (
                Mlp::params().schedule(Schedule::Cosine { warmup_epochs: 100 }),
                "warmup_epochs",
            ),
            (
                Mlp::params().schedule(Schedule::Step {
                    step_epochs: 1,
                    gamma: 2.0,
                }),
                "gamma",
            ),
        ];
        for (params, name) in cases {
            match params.check() {
                Err(HeadError::InvalidParameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    impl MlpParams {
        fn fit_checked(
            self,
            x: ArrayView2<'_, f32>,
            t: &Targets<'_>,
            v: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
        ) -> FittedMlp {
            self.check().unwrap().fit_with_validation(x, t, v).unwrap()
        }
    }
}
