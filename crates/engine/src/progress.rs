//! What the user sees while graft works: progress bars and spinners, hidden when asked (tests, logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over `len` rows (or images: `unit`), `done` of them already done; hidden unless `visible`.
pub fn bar(visible: bool, len: u64, done: u64, unit: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(len)
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "extracting {{bar:32.cyan/blue}} {{human_pos}}/{{human_len}} {unit}  {{per_sec}}  ETA {{eta}}"
        ))
        .expect("a valid template"),
    );
    bar.set_position(done);
    bar.reset_eta();
    bar
}

/// A spinner with a message and the elapsed time, ticking on its own; hidden unless `visible`.
pub(crate) fn spinner(visible: bool, message: &str) -> ProgressBar {
    let spinner = if visible {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
    );
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}
