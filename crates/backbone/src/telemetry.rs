//! ONNX Runtime's telemetry, kept off.
//!
//! The Linux build of ONNX Runtime 1.31 queues usage events (process path, OS, CPU, a persistent device id)
//! in `$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/` the first time a process creates a session,
//! for later upload. graft promises to touch nothing outside its cache, the run folder and the outputs a
//! user names, so it turns this off twice: `ORT_DISABLE_TELEMETRY=1` in the process environment before the
//! library loads (the runtime's documented full opt-out: no uploader, no device id, no queue), and the C
//! API's `DisableTelemetryEvents` on the environment it creates. A user who wants the runtime's telemetry
//! sets [`TELEMETRY_ENV`]`=1`; graft then changes neither.

/// graft's switch for ONNX Runtime's telemetry: `1` (or `on`, `true`) lets the runtime send it; anything
/// else, or unset, keeps it off.
pub const TELEMETRY_ENV: &str = "GRAFT_ONNXRUNTIME_TELEMETRY";

/// ONNX Runtime's own opt-out, read when the library initialises.
pub const ORT_DISABLE_TELEMETRY_ENV: &str = "ORT_DISABLE_TELEMETRY";

/// Whether the user asked for ONNX Runtime's telemetry ([`TELEMETRY_ENV`]).
pub fn telemetry_requested() -> bool {
    std::env::var(TELEMETRY_ENV).is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        v == "1" || v == "on" || v == "true" || v == "yes"
    })
}

/// Sets `ORT_DISABLE_TELEMETRY=1` in this process's environment unless the user asked for telemetry or it is
/// already set to `1`. Returns whether telemetry stays off.
///
/// Call it first thing in `main` (graft's binaries and the Python module do), while the process has one
/// thread; [`crate::Runtime::load`] calls it again before it loads the library, for programs that embed graft
/// without doing so.
pub fn disable_runtime_telemetry() -> bool {
    if telemetry_requested() {
        return false;
    }
    if std::env::var_os(ORT_DISABLE_TELEMETRY_ENV).is_some_and(|v| v == "1") {
        return true;
    }
    // SAFETY: `set_var` is unsound only while another thread reads the environment through libc without
    // std's lock. graft's entry points call this before starting any thread; `Runtime::load` calls it under
    // its own lock before ONNX Runtime (the only foreign reader that matters here) is loaded, and std's
    // readers take the same environment lock as `set_var`.
    unsafe { std::env::set_var(ORT_DISABLE_TELEMETRY_ENV, "1") };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_stays_off_unless_asked_for() {
        // One test owns the variables of this test binary: no other test here reads them.
        unsafe { std::env::remove_var(TELEMETRY_ENV) };
        unsafe { std::env::remove_var(ORT_DISABLE_TELEMETRY_ENV) };
        assert!(!telemetry_requested());
        assert!(disable_runtime_telemetry());
        assert_eq!(std::env::var(ORT_DISABLE_TELEMETRY_ENV).unwrap(), "1");
        unsafe { std::env::set_var(TELEMETRY_ENV, "0") };
        assert!(disable_runtime_telemetry());
        unsafe { std::env::set_var(TELEMETRY_ENV, "on") };
        unsafe { std::env::remove_var(ORT_DISABLE_TELEMETRY_ENV) };
        assert!(telemetry_requested());
        assert!(!disable_runtime_telemetry());
        assert!(std::env::var_os(ORT_DISABLE_TELEMETRY_ENV).is_none());
        unsafe { std::env::remove_var(TELEMETRY_ENV) };
    }
}
