//! Crash points for recovery tests. Built with `--features failpoints`, a point named in the
//! `FAILPOINTS` environment variable (the `fail` crate's syntax, e.g. `name=return` or
//! `name=1*off->return`) aborts the process when its action fires: a crash at exactly that
//! persistence boundary. Without the feature they compile to nothing.

/// Reads `FAILPOINTS`; call once at start-up.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        log::error!("failpoint {name} fired: aborting the process");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
