//! Failure injection for tests only: makes a stage panic on chosen files, so that a test can
//! show against the real daemon that a panicking stage ends in a `rejected` receipt rather than
//! in retries without end. Off unless [`PANIC_ENV`] is set in the daemon's environment; never
//! set it in production.

/// `STAGE:NAME` (e.g. `validate:boom`): the stage named STAGE panics on every file whose
/// original name contains NAME.
#[doc(hidden)]
pub const PANIC_ENV: &str = "HANDOFF_TEST_PANIC_IN_STAGE";

/// The panic a test asked for.
#[derive(Debug, Clone)]
pub(crate) struct Injection {
    stage: String,
    name_part: String,
}

impl Injection {
    pub(crate) fn from_env() -> Option<Injection> {
        let spec = std::env::var(PANIC_ENV).ok()?;
        let (stage, name_part) = spec.split_once(':')?;
        if name_part.is_empty() {
            return None;
        }
        tracing::warn!(
            stage,
            "test-only failure injection is on: this stage panics on chosen files"
        );
        Some(Injection {
            stage: stage.to_owned(),
            name_part: name_part.to_owned(),
        })
    }

    /// Panics if this stage and file were chosen.
    pub(crate) fn apply(&self, stage: &str, original_name: &str) {
        if stage == self.stage && original_name.contains(&self.name_part) {
            panic!("injected panic in stage {stage}");
        }
    }
}
