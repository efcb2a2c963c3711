//! The installed `graft` command: runs go to `./runs`, fetched parts to the user's cache folder.

fn main() -> std::process::ExitCode {
    graft::main_with(&graft::Defaults::installed(), std::env::args_os())
}
