//! How an error is shown to a person: its message and each of its causes, once.
//!
//! The crate's error types keep to one rule: a variant that wraps another error carries it as
//! its source (`#[source]`, `#[from]`) and does not repeat it in its message ("receipt key",
//! not "receipt key: {0}"), or is `#[error(transparent)]` when it adds nothing to it. A message
//! alone (`{e}`) is therefore only the outermost step. Wherever an error is shown (logs, audit
//! records, receipts and findings, replies to clients, the command line) it is shown whole, as
//! [`Chain`], or, in an `anyhow::Error`, as `{:#}`, which prints the same.

use std::error::Error;
use std::fmt;

/// Displays an error and its chain of sources, `error: cause: cause`, each once.
///
/// `tracing::warn!(error = %Chain(&e), …)`, `format!("…: {}", Chain(&e))`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::daemon::DaemonError;
    use crate::keys::KeyError;
    use crate::pipeline::PipelineError;

    fn not_found() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOENT)
    }

    fn master_key_missing() -> DaemonError {
        DaemonError::Pipeline(PipelineError::Key(KeyError::Io {
            path: PathBuf::from("/etc/handoff/master.key"),
            source: not_found(),
        }))
    }

    #[test]
    fn a_chain_prints_every_cause_once() {
        let e = master_key_missing();
        let shown = Chain(&e).to_string();
        assert_eq!(
            shown,
            format!(
                "starting the pipeline: master key: /etc/handoff/master.key: {}",
                not_found()
            )
        );
        for part in ["master key", "/etc/handoff/master.key", "No such file"] {
            assert_eq!(shown.matches(part).count(), 1, "{part:?} in {shown:?}");
        }
        // The form of the command line's `{:#}`.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(master_key_missing())),
            shown
        );
    }

    #[test]
    fn no_message_repeats_its_source() {
        let errors: Vec<Box<dyn Error + 'static>> = vec![
            Box::new(master_key_missing()),
            Box::new(crate::scan::ScanError::Io {
                addr: "/run/clamd.sock".into(),
                source: not_found(),
            }),
            Box::new(crate::config::crl::CrlError::Read {
                path: PathBuf::from("/etc/handoff/ca.crl"),
                source: not_found(),
            }),
        ];
        for e in &errors {
            let mut level: &(dyn Error + 'static) = e.as_ref();
            while let Some(source) = level.source() {
                assert!(
                    !level.to_string().contains(&source.to_string()),
                    "{level:?} repeats its source in {:?}",
                    level.to_string()
                );
                level = source;
            }
            let shown = Chain(e.as_ref()).to_string();
            assert_eq!(shown.matches(&level.to_string()).count(), 1, "{shown}");
        }
    }
}
