//! `cargo xtask docs`: the guide under `docs/` built with mdBook into `target/guide/`, when `mdbook` is
//! installed. The guide is plain Markdown first: without mdBook it is read as it is, and its links and
//! keys are checked by `xtask/tests/docs.rs` either way.

use std::process::{Command, ExitCode};

pub(crate) fn run() -> ExitCode {
    let docs = crate::workspace_root().join("docs");
    match Command::new("mdbook").arg("build").arg(&docs).status() {
        Ok(status) if status.success() => {
            let index = crate::workspace_root().join("target/guide/index.html");
            eprintln!("xtask: the guide is at {}", index.display());
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("xtask: mdbook build failed ({status})");
            ExitCode::FAILURE
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "xtask: mdbook is not installed; the guide is plain Markdown under {} (start at README.md)\n  \
                 hint: `cargo install mdbook` builds it as a book into target/guide/",
                docs.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask: cannot start mdbook: {e}");
            ExitCode::FAILURE
        }
    }
}
