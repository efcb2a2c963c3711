//! What the user sees while graft works: progress bars and spinners on a terminal; when standard error is
//! not one (a log file, a batch job), a plain line every ten seconds naming the stage, with rows (or steps)
//! done, the rate and the time left; nothing when progress is turned off (tests, `--no-progress`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a plain progress line is written when standard error is not a terminal: every ten seconds,
/// or every `GRAFT_PROGRESS_SECONDS` seconds.
pub const PROGRESS_SECONDS_ENV: &str = "GRAFT_PROGRESS_SECONDS";

fn log_every() -> Duration {
    std::env::var(PROGRESS_SECONDS_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

/// A rate as people read one: whole numbers from 10 up, one decimal below (`0.4 steps/s`, not `0`).
fn rate(per_sec: f64) -> String {
    if per_sec < 10.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.0}")
    }
}

/// `253 rows/s`, `0.4 steps/s`.
fn rate_key(
    unit: String,
) -> impl Fn(&ProgressState, &mut dyn std::fmt::Write) + Send + Sync + Clone + 'static {
    move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{} {unit}/s", rate(state.per_sec()));
    }
}

/// Whether progress goes to a terminal (drawn in place) rather than a log (plain lines).
fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar over `len` rows (or images: `unit`), `done` of them already done; hidden unless `visible`.
/// Off a terminal it writes `extracting: 1,200 / 10,605 rows · 253 rows/s · 37 s left` every ten seconds.
pub fn bar(visible: bool, len: u64, done: u64, unit: &str) -> ProgressBar {
    stage_bar(visible, "extracting", len, done, unit)
}

/// [`bar`] for the work `stage` names (`fine-tuning`); the bar's message (`epoch 1/2 · loss 0.6931`) goes
/// into the line: `fine-tuning (epoch 1/2 · loss 0.6931): 12 / 40 steps · 0.4 steps/s · 70 s left`.
pub fn stage_bar(visible: bool, stage: &str, len: u64, done: u64, unit: &str) -> ProgressBar {
    let drawn = visible && on_terminal();
    let bar = if drawn {
        ProgressBar::new(len)
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{stage} {{msg}} {{bar:32.cyan/blue}} {{human_pos}}/{{human_len}} {unit}  {{rate}}  ETA {{eta}}"
        ))
        .expect("a valid template")
        .with_key("rate", rate_key(unit.to_owned())),
    );
    bar.set_position(done);
    bar.reset_eta();
    if visible && !drawn {
        let (stage, unit) = (stage.to_owned(), unit.to_owned());
        log_lines(&bar, move |b| {
            let (pos, len) = (b.position(), b.length().unwrap_or(0));
            let left = if b.per_sec() > 0.0 {
                format!(" · {} s left", b.eta().as_secs())
            } else {
                String::new()
            };
            let message = b.message();
            let what = if message.is_empty() {
                stage.clone()
            } else {
                format!("{stage} ({message})")
            };
            format!(
                "{what}: {pos} / {len} {unit} · {} {unit}/s{left}",
                rate(b.per_sec())
            )
        });
    }
    bar
}

/// A spinner with a message and the elapsed time, ticking on its own; hidden unless `visible`. Off a
/// terminal: a line when it starts and one every ten seconds with the time so far.
pub(crate) fn spinner(visible: bool, message: &str) -> ProgressBar {
    let drawn = visible && on_terminal();
    let spinner = if drawn {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
    );
    spinner.set_message(message.to_owned());
    if drawn {
        spinner.enable_steady_tick(Duration::from_millis(120));
    } else if visible {
        eprintln!("{message}…");
        let message = message.to_owned();
        let start = Instant::now();
        log_lines(&spinner, move |_| {
            format!("{message}: {} s so far", start.elapsed().as_secs())
        });
    }
    spinner
}

/// Writes `line(bar)` to standard error every [`log_every`] until the bar is finished or dropped (the
/// thread holds it weakly, so it never keeps the bar alive).
fn log_lines(bar: &ProgressBar, line: impl Fn(&ProgressBar) -> String + Send + 'static) {
    let weak = bar.downgrade();
    let every = log_every();
    std::thread::spawn(move || {
        // Short sleeps, so a finished bar's thread ends promptly.
        let step = every.min(Duration::from_millis(200));
        let mut last = Instant::now();
        loop {
            std::thread::sleep(step);
            let Some(bar) = weak.upgrade() else { return };
            if bar.is_finished() {
                return;
            }
            if last.elapsed() >= every {
                eprintln!("{}", line(&bar));
                last = Instant::now();
            }
        }
    });
}

/// A fine-tuning step on a stage bar: its place among every epoch's steps, the epoch and the running loss.
pub(crate) fn show_tuning_step(bar: &ProgressBar, s: &graft_tune::Progress<'_>) {
    bar.set_length((s.steps * s.epochs) as u64);
    bar.set_position(((s.epoch - 1) * s.steps + s.step) as u64);
    bar.set_message(format!(
        "epoch {}/{} · loss {:.4}",
        s.epoch, s.epochs, s.loss
    ));
}
