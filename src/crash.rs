//! Crash points for the tests that prove crash safety: a process killed in
//! the middle of its work loses nothing committed, and a re-run finishes it.

/// Test hook: `INKAN_DANGER_CRASH_AT=<point>` kills the process at that
/// point with `kill -9` (SIGKILL: no destructor, no flush; `abort` if `kill`
/// cannot be run), so tests can prove crash safety. Never set it in production.
pub(crate) fn point(point: &str) {
    if std::env::var("INKAN_DANGER_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("INKAN_DANGER_CRASH_AT={point}: kill -9");
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
        std::process::abort();
    }
}
