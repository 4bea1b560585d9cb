//! Synthetic archives in the official exchange format (MHLW 特定健診・特定保健指導 V08) for the
//! tests, the benchmarks and the README example: valid archives of any number of persons with
//! invented but plausible content (never real personal data), and one archive per rule the
//! check enforces, each saying where its finding must point.
//!
//! A valid archive is `<sender>_<receiver>_<YYYYMMDD><N>_<X>.zip` holding one top folder of the
//! same name with `ix08_V08.xml`, `su08_V08.xml` (with claims), `DATA/` (one hc08 or hg08 CDA per
//! person), `CLAIMS/` (one cc08 or gc08 settlement per person, paired by name) and, when asked,
//! `XSD/` copied from a schema set. Every XML file is valid against the official schema set of
//! its namespace (the tests check this with an independent validator).

mod archive;
mod catalogue;
mod documents;
mod persons;
mod zip;

use std::io::{self, Write};

pub use super::schemas::Edition;
use crate::validate::archive::Limits;
pub use catalogue::{Editions, Expected, Spec, Violation, default_interaction_type};

/// Writes a valid archive for `spec` to `out` (under the name `spec.archive_name()`).
pub fn write_valid<W: Write>(spec: &Spec, out: W) -> io::Result<W> {
    archive::build(spec, None, &default_limits())?.0.finish(out)
}

/// Writes an archive for `spec` that breaks exactly the rule of `violation`, sized against
/// `limits`; returns where the finding must point. Upload it as `violation.file_name(spec)`.
pub fn write_violation<W: Write>(
    spec: &Spec,
    violation: Violation,
    limits: &Limits,
    out: W,
) -> io::Result<(W, Expected)> {
    let (plan, expected) = archive::build(spec, Some(violation), limits)?;
    let expected = expected.unwrap_or(Expected {
        rule: violation.rule(),
        file: None,
        line: None,
    });
    Ok((plan.finish(out)?, expected))
}

fn default_limits() -> Limits {
    Limits::from(&crate::config::ArchiveLimits::default())
}

/// A tiny deterministic generator: the same seed gives the same archive.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
