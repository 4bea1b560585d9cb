//! handoff: a secure file-transfer gateway between clinics and insurers.
//!
//! Counterparts upload into drop boxes over SFTP or mutual-TLS HTTPS; each completed upload is
//! accepted into the spool, validated, scanned, sealed for its recipient and delivered to the
//! recipient's outbox, with a signed receipt at every hop. ARCHITECTURE.md is the map of the
//! modules.

pub mod accounts;
pub mod audit;
pub mod boxes;
pub mod config;
pub mod daemon;
pub mod direct_io;
pub mod error;
pub mod events;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod numbers;
pub mod offline;
pub mod pipeline;
pub mod receipts;
pub mod scan;
pub mod seal;
pub mod services;
pub mod sorting;
pub mod spool;
pub mod state;
pub mod store;
pub mod sync;
pub mod sys;
pub mod transport;
pub mod validate;
