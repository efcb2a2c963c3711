//! A multilayer perceptron head trained with AdamW on mini-batches.

mod adamw;
pub use fitted::{
    EpochRecord, FittedMlp, FittedMultiLabelMlp, FittedMultitaskMlp, MlpReport, TaskTargets,
};
pub use params::{Activation, Mlp, MlpParams, MlpValidParams, Monitor, Schedule};
mod fitted;
mod network;
mod objectives;
mod params;
mod train;

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ArrayView2, array};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use crate::{
        Fit, FitMultiLabel, HeadError, LabelSets, ParamGuard, Predict, PredictMultiLabel, Targets,
    };

    use super::network::Network;
    use super::objectives::{Outputs, loss_and_accuracy};
    use crate::argmax_rows;

    use super::*;
    use crate::tests_support::blobs;

    #[test]
    pub(crate) fn multitask_mlp_learns_both_tasks_and_skips_missing_labels() {
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
    pub(crate) fn gradients_match_finite_differences() {
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
    pub(crate) fn multi_label_mlp_learns_label_sets_with_early_stopping() {
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
    pub(crate) fn a_diverging_run_is_an_error_naming_the_learning_rate() {
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
    pub(crate) fn learns_three_clusters_reproducibly() {
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
    pub(crate) fn early_stopping_restores_the_best_epoch() {
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
    pub(crate) fn schedules_shape_the_learning_rate() {
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
    pub(crate) fn invalid_parameters_are_named() {
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
