//! The spool pipeline: accept → validate → scan → seal → deliver (DESIGN §4).

pub mod events;
