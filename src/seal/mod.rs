//! Sealing: encryption at rest in the spool and quarantine ([`at_rest`]), re-encryption for
//! the recipient as CMS that standard tools open ([`cms`]), and opening the CMS that standard
//! tools make for the gateway ([`open`](mod@open)). Its only I/O of its own is reading the certificate
//! and key files it is named ([`Recipient::from_file`], [`OpeningKey::from_files`]); everything
//! else goes through the readers and writers it is given (ARCHITECTURE.md, *Encryption from the
//! first byte*).

pub mod at_rest;
mod ber;
pub mod cms;
mod ecdh;
mod gcm;
pub mod open;

pub use cms::{Recipient, Sealed, seal_for};
pub use open::{OpenOptions, Opened, OpeningKey, looks_like_cms, open, open_verified};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the file was sealed with another key")]
    WrongKey,
    #[error("the certificate does not belong to the private key")]
    CertificateMismatch,
    #[error("the file was changed (authentication failed)")]
    Tampered,
    #[error("the file is truncated")]
    Truncated,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl SealError {
    /// Recovers a sealing error that travelled inside an `io::Error` (from a `Read` impl).
    pub fn from_io(e: std::io::Error) -> SealError {
        if e.get_ref().is_some_and(|inner| inner.is::<SealError>()) {
            match e.into_inner().map(|b| b.downcast::<SealError>()) {
                Some(Ok(inner)) => *inner,
                _ => SealError::Malformed("corrupt stream"),
            }
        } else {
            SealError::Io(e)
        }
    }
}
