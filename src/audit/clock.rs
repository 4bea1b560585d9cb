//! How trustworthy the system clock is right now, as the kernel reports it (`adjtimex` in
//! read-only mode): whether NTP (or chrony, or PTP) keeps it synchronised, and the error bounds.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockStatus {
    /// False when the kernel's STA_UNSYNC flag is set or the state is TIME_ERROR.
    pub synchronised: bool,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
    /// Estimated error, microseconds.
    pub esterror_us: i64,
}

/// The one way the gateway writes a point in time (audit lines, receipts, listings, alerts):
/// RFC 3339 in UTC with exactly six fractional digits, so every time string has the same length
/// and sorts as text in time order.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// Reads the clock status; a failed read counts as unsynchronised.
///
/// The one system call of this module, which std does not wrap.
#[allow(unsafe_code)]
pub fn status() -> ClockStatus {
    // SAFETY: `timex` is integers (and padding) only, for which all-zero bytes are a valid
    // value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: adjtimex writes one `timex` into `tx`, which is exclusively borrowed for the
    // call; with `modes` 0 it only reads the kernel's clock state and changes nothing.
    let state = unsafe { libc::adjtimex(&mut tx) };
    let synchronised = state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    ClockStatus {
        synchronised,
        maxerror_us: tx.maxerror,
        esterror_us: tx.esterror,
    }
}
