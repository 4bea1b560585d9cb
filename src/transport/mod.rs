//! The transports: SFTP and mutual-TLS HTTPS front ends onto the same drop boxes
//! ([`crate::boxes`]). What they share beyond the boxes lives here: rate limits and bans, and
//! the registry of live sessions that revocation acts on.

pub mod limits;
pub mod sessions;
pub mod sftp;
