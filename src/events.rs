//! What happens to a file, in the words every part of the gateway shares: the [`Hop`]s of its
//! life, the [`Finding`]s it is rejected or delivered with, and the [`FileEvent`] the pipeline
//! records at each hop, from which receipts are issued. It sits below the pipeline, the job
//! store and the receipts so that none of them has to import another for these words.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::accounts::{AccountId, CounterpartId};

/// The hops of a file's life that each get a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hop {
    /// Upload closed, fsynced, hashed: the sender's responsibility ends.
    Accepted,
    /// Schema, scan or routing failed: handed back to the sender with reasons.
    Rejected,
    /// Sealed file durable in the recipient's outbox.
    Delivered,
    /// The recipient read the whole file or acknowledged it.
    Retrieved,
    /// Retention expired; the file was destroyed.
    Purged,
    /// An agency-addressed archive was sorted into one archive per insurer: the parent's work
    /// ends, each child's begins (its `children` list them).
    Split,
}

impl Hop {
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::Accepted => "accepted",
            Hop::Rejected => "rejected",
            Hop::Delivered => "delivered",
            Hop::Retrieved => "retrieved",
            Hop::Purged => "purged",
            Hop::Split => "split",
        }
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a file reached the gateway or left it: the channel of the hop an account acted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sftp,
    Https,
    /// Read from or written to a medium (CD-R, courier) by an operator: `handoff ingest` and
    /// `handoff export`.
    Offline,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sftp => "sftp",
            Channel::Https => "https",
            Channel::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "sftp" => Channel::Sftp,
            "https" => Channel::Https,
            "offline" => Channel::Offline,
            _ => return None,
        })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One archive sorted out of an agency-addressed parent, as its `split` receipt lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// The child's own file id: its receipts carry the parent's id.
    pub file_id: String,
    /// The insurer (counterpart id) it is sealed and delivered to, and its insurer number.
    pub recipient: CounterpartId,
    pub insurer: String,
    /// The child archive's name (`<agency>_<insurer>_<date><N>_<X>.zip`).
    pub original_name: String,
    /// Persons (DATA files) it holds.
    pub persons: u64,
    pub size: u64,
    /// SHA-256 of the child archive's plaintext.
    pub sha256: crate::ids::Sha256,
}

/// The rule ids of the stages after the check (the check's own are
/// [`crate::validate::finding::Rule`]): each written here once, and given to
/// [`Finding::new`] by name. [`PipelineRule::id`] is the id in receipts, which never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipelineRule {
    /// clamd found malware.
    ScanInfected,
    /// clamd could not scan the whole file within its limits.
    ScanLimitsExceeded,
    /// The sender may not send to the recipient.
    RouteNotAllowed,
    /// The uploader is no configured counterpart.
    RouteUnknownSender,
    /// No recipient can be told, or it is no counterpart.
    RouteUnknownRecipient,
    /// The recipient's encryption certificate cannot be sealed to.
    SealRecipientCertificate,
    /// The file failed inside the gateway too often.
    InternalError,
    /// A person whose insurer the sender may not send to through the agency.
    SplitUnroutableInsurer,
    /// A claim without a DATA file, which cannot be sorted.
    SplitUnpairedClaim,
    /// An insurer that had all of the day's send counts.
    SplitSendCount,
}

impl PipelineRule {
    pub const ALL: &[PipelineRule] = &[
        PipelineRule::ScanInfected,
        PipelineRule::ScanLimitsExceeded,
        PipelineRule::RouteNotAllowed,
        PipelineRule::RouteUnknownSender,
        PipelineRule::RouteUnknownRecipient,
        PipelineRule::SealRecipientCertificate,
        PipelineRule::InternalError,
        PipelineRule::SplitUnroutableInsurer,
        PipelineRule::SplitUnpairedClaim,
        PipelineRule::SplitSendCount,
    ];

    pub fn id(self) -> &'static str {
        match self {
            PipelineRule::ScanInfected => "scan.infected",
            PipelineRule::ScanLimitsExceeded => "scan.limits-exceeded",
            PipelineRule::RouteNotAllowed => "route.not-allowed",
            PipelineRule::RouteUnknownSender => "route.unknown-sender",
            PipelineRule::RouteUnknownRecipient => "route.unknown-recipient",
            PipelineRule::SealRecipientCertificate => "seal.recipient-certificate",
            PipelineRule::InternalError => "internal.error",
            PipelineRule::SplitUnroutableInsurer => "split.unroutable-insurer",
            PipelineRule::SplitUnpairedClaim => "split.unpaired-claim",
            PipelineRule::SplitSendCount => "split.send-count",
        }
    }
}

impl fmt::Display for PipelineRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl From<PipelineRule> for String {
    fn from(r: PipelineRule) -> String {
        r.id().to_owned()
    }
}

impl PartialEq<PipelineRule> for String {
    fn eq(&self, other: &PipelineRule) -> bool {
        self == other.id()
    }
}

/// Why a file was rejected: a machine-readable rule id, where in the file, and a message the
/// sender's operator can act on. The validator, the scanner and routing all report in this form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `zip.traversal`, `xsd.invalid`, `scan.infected`, `route.not-allowed`.
    pub rule: String,
    /// Path inside the archive, where the rule concerns one entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub message: String,
    /// A finding the file was delivered with (its rule set to warn), rather than one it was
    /// refused for. Absent (false) in the JSON of rejections, so older receipts read the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

impl Finding {
    pub fn new(rule: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            rule: rule.into(),
            file: None,
            line: None,
            column: None,
            message: message.into(),
            warning: false,
        }
    }

    pub fn warning(mut self) -> Finding {
        self.warning = true;
        self
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Finding {
        self.file = Some(file.into());
        self
    }

    pub fn at(mut self, line: u32, column: Option<u32>) -> Finding {
        self.line = Some(line);
        self.column = column;
        self
    }
}

impl Finding {
    /// Rule, file and line without the message — the form for the NOC and the logs: a message
    /// may quote a personal field's value (a birth date, a name), which only the sender's own
    /// receipt may carry. The rule id says what is wrong.
    pub fn redacted(&self) -> String {
        let mut s = format!("[{}]", self.rule);
        if self.warning {
            s.push_str(" warning");
        }
        if let Some(file) = &self.file {
            s.push(' ');
            s.push_str(file);
            if let Some(line) = self.line {
                s.push_str(&format!(":{line}"));
            }
        }
        s
    }
}

/// One line for people about a hop's reasons: why a file was rejected, or what it was
/// delivered with.
pub fn summary_of<T: fmt::Display>(hop: Hop, reasons: &[T]) -> Option<String> {
    let first = reasons.first()?;
    let n = reasons.len();
    Some(match (hop, n) {
        (Hop::Rejected, 1) => format!("rejected: {first}"),
        (Hop::Rejected, _) => format!("rejected with {n} problems; first: {first}"),
        (hop, 1) => format!("{hop} with a warning: {first}"),
        (hop, _) => format!("{hop} with {n} warnings; first: {first}"),
    })
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.rule)?;
        if self.warning {
            f.write_str(" warning")?;
        }
        if let Some(file) = &self.file {
            write!(f, " {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A file reached a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    /// The gateway's id of the file, unique for its whole life.
    pub file_id: String,
    pub hop: Hop,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub sender: CounterpartId,
    /// The recipient, once known.
    pub recipient: Option<CounterpartId>,
    /// The name the sender gave the file.
    pub original_name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext (lower-case hex in JSON).
    pub sha256: crate::ids::Sha256,
    /// SHA-256 of the sealed file, for `delivered`.
    pub sealed_sha256: Option<crate::ids::Sha256>,
    /// Why, for `rejected`.
    pub reasons: Vec<Finding>,
    /// The agency-addressed archive this one was sorted out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For `split`: the archives sorted out of this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// The account that caused the hop (ARCHITECTURE.md, *Who acted*): who uploaded
    /// (`accepted`), retrieved, or deleted a delivered file (`purged`); absent where the gateway
    /// itself acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<AccountId>,
    /// The channel the actor used: for `accepted` how the file came in, for `retrieved` how
    /// it went out. Absent for the gateway's own hops and in events logged before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

/// The durable, ordered log of file events: the job store appends one entry per hop of a file
/// (at most one per file and hop) in the same transaction as the job's state change. Receipts
/// are issued from this log, so after a crash they resume where they stopped and are never
/// issued twice or missed.
pub trait EventLog: Send + Sync {
    /// Events with sequence number greater than `seq`, oldest first, at most `limit`.
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, FileEvent)>, EventLogError>;

    /// The highest sequence number so far; changes whenever an event is appended.
    fn watch(&self) -> tokio::sync::watch::Receiver<u64>;
}

#[derive(Debug, thiserror::Error)]
#[error("event log: {0}")]
pub struct EventLogError(pub String);

impl Finding {
    /// The finding as one line of a listing for an operator: `SEVERITY RULE FILE:LINE:COLUMN:
    /// MESSAGE`, the severity `reject` or `warn`, `-` where there is no file. `handoff validate`
    /// prints findings so; the finding's own `Display` is the form receipts' summaries quote.
    pub fn listing(&self) -> Listing<'_> {
        Listing(self)
    }
}

/// A [`Finding`] shown as a line of a listing; see [`Finding::listing`].
pub struct Listing<'a>(&'a Finding);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let severity = if r.warning { "warn" } else { "reject" };
        write!(
            f,
            "{severity} {} {}",
            r.rule,
            r.file.as_deref().unwrap_or("-")
        )?;
        if let Some(line) = r.line {
            write!(f, ":{line}")?;
            if let Some(col) = r.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", r.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_line_names_severity_rule_and_place() {
        let r = Finding::new("date.invalid", "no such date")
            .in_file("DATA/a.xml")
            .at(12, Some(7));
        assert_eq!(
            r.listing().to_string(),
            "reject date.invalid DATA/a.xml:12:7: no such date"
        );
        let w = Finding::new("name.serial", "serials start at 000005").warning();
        assert_eq!(
            w.listing().to_string(),
            "warn name.serial -: serials start at 000005"
        );
    }

    #[test]
    fn pipeline_rule_ids_are_unique_and_not_the_checks() {
        let mut seen = std::collections::HashSet::new();
        for r in PipelineRule::ALL {
            assert!(seen.insert(r.id()), "{r} twice");
            assert!(
                crate::validate::finding::Rule::from_id(r.id()).is_none(),
                "{r}"
            );
        }
        assert_eq!(
            Finding::new(PipelineRule::ScanInfected, "m").rule,
            "scan.infected"
        );
    }

    #[test]
    fn a_delivered_file_with_warnings_is_not_summarised_as_rejected() {
        let warning = Finding::new("name.serial", "serials start at 000005").warning();
        let rejection = Finding::new("date.invalid", "no such date");
        assert_eq!(summary_of::<Finding>(Hop::Delivered, &[]), None);
        assert_eq!(
            summary_of(Hop::Delivered, std::slice::from_ref(&warning)).as_deref(),
            Some("delivered with a warning: [name.serial] warning: serials start at 000005")
        );
        assert_eq!(
            summary_of(Hop::Rejected, &[rejection, warning]).as_deref(),
            Some("rejected with 2 problems; first: [date.invalid]: no such date")
        );
    }
}
