//! `[distillation]`: knowledge distillation (Hinton, Vinyals & Dean, 2015) from the pipeline's backbone and
//! headline head (the teacher) into a smaller backbone with an MLP head (the student).
//!
//! The teacher, trained on the training split, gives probabilities softened at temperature T for the
//! training rows; the student MLP trains on the smaller backbone's features with
//! (1 − α)·cross-entropy + α·T²·KL(teacher_T ‖ student_T). Reported: the teacher, the student trained on the
//! labels alone (α = 0, same settings and seed) and the distilled student on the test split, and the
//! student's extraction speed-up — both backbones timed on the same rows, bypassing the cache.

use graft_heads::{Predict, Targets, argmax_rows};
use ndarray::Axis;
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;
use crate::heads::train_head;
use graft_config::techniques::DistillationPlan;
use graft_report::TechniqueReport;

/// The student must be another backbone than the pipeline's: what `check` runs too.
pub(crate) fn check_student(
    p: &DistillationPlan,
    backbone: Option<&graft_config::ModelSource>,
    file: &std::path::Path,
    source: &str,
) -> Result<(), PipelineError> {
    if !p.student.is_pipeline_backbone(backbone) {
        return Ok(());
    }
    Err(graft_config::Diagnostic::at(
        file,
        source,
        Some(p.student_span.clone()),
        format!("the student backbone `{}` is the teacher's", p.student),
    )
    .with_hint("distil into a smaller registered backbone, e.g. `student = \"minilm-l3\"`")
    .into())
}

pub(crate) fn run(p: &DistillationPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let texts = d.texts.expect("checked: text rows");
    let teacher_name = super::pipeline_backbone_name(d);
    check_student(p, d.backbone, d.file, d.source)?;
    let n_classes = d.classes.len();
    let y_train: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let targets = Targets::new(&y_train, n_classes)?;
    // Teacher: the pipeline's backbone and its headline head, or the mean probabilities of all its heads.
    let members: Vec<&graft_config::HeadSpec> = if p.ensemble {
        d.heads.iter().collect()
    } else {
        vec![d.headline]
    };
    let (x_train, x_test) = (
        d.features.select(Axis(0), d.train),
        d.features.select(Axis(0), d.test),
    );
    let mut teacher_train = ndarray::Array2::<f32>::zeros((d.train.len(), n_classes));
    let mut teacher_test = ndarray::Array2::<f32>::zeros((d.test.len(), n_classes));
    for spec in &members {
        let (head, _) = train_head(&spec.uncalibrated(), None, x_train.view(), &targets, None)?;
        teacher_train += &head.predict_proba(x_train.view())?;
        teacher_test += &head.predict_proba(x_test.view())?;
    }
    let share = 1.0 / members.len() as f32;
    teacher_train *= share;
    teacher_test *= share;
    let teacher_label = members
        .iter()
        .map(|h| h.uncalibrated().label())
        .collect::<Vec<_>>()
        .join(" + ");
    let teacher_accuracy = accuracy(&argmax_rows(teacher_test.view()), &y_test);
    // Softened targets: softmax(ln p / T) = p^(1/T), renormalised.
    let mut soft = teacher_train;
    let inverse = 1.0 / p.temperature as f32;
    for mut row in soft.rows_mut() {
        row.mapv_inplace(|v| v.max(1e-12).powf(inverse));
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    // Student features for every row (through the cache).
    let student = embed(Some(&p.student), texts, false)?;
    let x_student = student.features.select(Axis(0), d.train);
    let x_student_test = student.features.select(Axis(0), d.test);
    let settings = super::mlp_settings(d, p.epochs, "distillation student")?;
    let alone =
        settings.fit_distilled(x_student.view(), &targets, soft.view(), p.temperature, 0.0)?;
    let distilled = settings.fit_distilled(
        x_student.view(),
        &targets,
        soft.view(),
        p.temperature,
        p.alpha,
    )?;
    let alone_accuracy = accuracy(&alone.predict(x_student_test.view())?, &y_test);
    let distilled_accuracy = accuracy(&distilled.predict(x_student_test.view())?, &y_test);
    // Extraction speed: the same rows through both backbones, bypassing the cache, one after the other.
    let timed: Vec<String> = texts.iter().take(p.timing_rows).cloned().collect();
    let teacher_speed = embed(None, &timed, true)?.rows_per_second;
    let student_speed = embed(Some(&p.student), &timed, true)?.rows_per_second;
    let speed_up = student_speed / teacher_speed;
    let rows = vec![
        vec![
            format!("teacher: {teacher_name} + {teacher_label}"),
            f4(teacher_accuracy),
            format!("{teacher_speed:.0}"),
        ],
        vec![
            format!("student alone: {} + MLP on the labels", p.student),
            f4(alone_accuracy),
            format!("{student_speed:.0}"),
        ],
        vec![
            format!(
                "distilled student: {} + MLP, T = {}, α = {}",
                p.student, p.temperature, p.alpha
            ),
            f4(distilled_accuracy),
            format!("{student_speed:.0}"),
        ],
    ];
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "distillation".to_owned(),
        title: "Knowledge distillation: teacher → smaller student".to_owned(),
        method: format!(
            "Teacher: {teacher_name} features + {}{} trained on the training split. Student: {} features + MLP ({} \
             epochs), trained on the labels alone (α = 0) or on (1 − α)·CE + α·T²·KL with the teacher's \
             probabilities softened at T (Hinton, Vinyals & Dean, 2015), same settings and seed. Extraction \
             speed: the first {} texts through each backbone, cache bypassed, same threads and batch size.",
            teacher_label,
            if members.len() > 1 {
                " (an ensemble: the heads' mean probabilities)"
            } else {
                ""
            },
            p.student,
            p.epochs,
            timed.len()
        ),
        finding: format!(
            "test accuracy teacher {teacher_accuracy:.4}, student alone {alone_accuracy:.4}, distilled student \
             {distilled_accuracy:.4} ({:+.4}); the student extracts {speed_up:.2}× as fast ({student_speed:.0} vs \
             {teacher_speed:.0} rows/s)",
            distilled_accuracy - alone_accuracy
        ),
        columns: vec![
            "model".to_owned(),
            "test accuracy".to_owned(),
            "extraction rows/s".to_owned(),
        ],
        rows,
        details: json!({
            "teacher_accuracy": teacher_accuracy, "student_alone_accuracy": alone_accuracy,
            "distilled_accuracy": distilled_accuracy, "teacher_rows_per_second": teacher_speed,
            "student_rows_per_second": student_speed, "speed_up": speed_up, "timing_rows": timed.len(),
            "temperature": p.temperature, "alpha": p.alpha,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
