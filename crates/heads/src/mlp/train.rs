//! Training: mini-batches, the learning-rate schedule, early stopping on validation rows, and the
//! entry points for each objective (classes, label sets, tasks, distillation).

use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::adamw::AdamW;
use super::fitted::{
    EpochRecord, FittedMlp, FittedMultiLabelMlp, FittedMultitaskMlp, MlpReport, TaskTargets,
};
use super::network::Network;
use super::objectives::Outputs;
use super::params::{MlpValidParams, Monitor, Schedule};
use crate::{HeadError, LabelSets, Targets, check_features, check_multi_label, check_training};

impl MlpValidParams {
    pub(crate) fn rate_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
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

    pub(crate) fn train(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Outputs<'_, f32>,
        validation: Option<(ArrayView2<'_, f32>, Outputs<'_, f32>)>,
    ) -> Result<(Network<f32>, MlpReport), HeadError> {
        self.train_from(x, targets, validation, None)
    }

    pub(crate) fn train_from(
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
