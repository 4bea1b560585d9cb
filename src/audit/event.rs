//! The names of audit events. Each is written here once, so a call site cannot misspell one
//! and the list of what the log can hold is in one place; [`Event::as_str`] is the name as it
//! appears in the log, which must never change for an existing event.

use std::fmt;

use crate::events::Hop;

macro_rules! events {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// One kind of audited event; alerts carry their [`Alert`] kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event {
            $($(#[$doc])* $variant,)*
            /// An alert raised (`alert.{kind}`).
            Alert(Alert),
            /// A file reached a hop (`file.{hop}`).
            File(Hop),
        }

        impl Event {
            /// Every event but the alerts (see [`Alert::ALL`]) and the hops of files.
            pub const PLAIN: &[Event] = &[$(Event::$variant),*];

            /// The name in the audit log, e.g. `sftp.login`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Event::$variant => $name,)*
                    Event::Alert(a) => a.event_name(),
                    Event::File(hop) => match hop {
                        Hop::Accepted => "file.accepted",
                        Hop::Rejected => "file.rejected",
                        Hop::Delivered => "file.delivered",
                        Hop::Retrieved => "file.retrieved",
                        Hop::Purged => "file.purged",
                        Hop::Split => "file.split",
                    },
                }
            }
        }
    };
}

events! {
    AccountChanged = "account.changed",
    /// Account events were missed by the audit writer (the channel lagged).
    AccountEventsLost = "account.events_lost",
    AuditRepaired = "audit.repaired",
    /// Written by the log itself when it can be written again after a failure.
    AuditResumed = "audit.resumed",
    AuthBan = "auth.ban",
    AuthUnban = "auth.unban",
    BoxClose = "box.close",
    BoxDenied = "box.denied",
    BoxList = "box.list",
    BoxOpen = "box.open",
    /// Another account than the box's own read a whole outbox file.
    BoxRead = "box.read",
    BoxRemove = "box.remove",
    /// The box's own counterpart read a whole outbox file.
    BoxRetrieved = "box.retrieved",
    BoxUpload = "box.upload",
    BoxUploadDiscarded = "box.upload_discarded",
    BoxUploadRefused = "box.upload_refused",
    BreakGlassMaxSession = "break_glass.max_session",
    BreakGlassUsed = "break_glass.used",
    ConfigRefused = "config.refused",
    ConfigReloaded = "config.reloaded",
    DaemonStart = "daemon.start",
    DaemonStop = "daemon.stop",
    HttpsConnectionRefused = "https.connection_refused",
    /// An operator's export of outbox files to a medium was recorded as their hand-over.
    OfflineExport = "offline.export",
    /// A file an operator ingested from a medium was accepted.
    OfflineIngest = "offline.ingest",
    HttpsHandshakeRefused = "https.handshake_refused",
    HttpsRefused = "https.refused",
    HttpsRequest = "https.request",
    HttpsRevoked = "https.revoked",
    HttpsUnmappedCertificate = "https.unmapped_certificate",
    /// One clamd of a pool of several stopped answering its health checks; scans go to the
    /// others (all of them down is the `scanner_down` alert).
    ScannerEndpointDown = "scanner.endpoint_down",
    /// A clamd of a pool of several that was down answers its health checks again.
    ScannerEndpointUp = "scanner.endpoint_up",
    /// The database of `[gateway.store]` answers again after it was down (the `store_down`
    /// alert).
    StoreUp = "store.up",
    SftpAuthFailure = "sftp.auth_failure",
    SftpConnect = "sftp.connect",
    SftpConnectionRefused = "sftp.connection_refused",
    SftpIdleTimeout = "sftp.idle_timeout",
    SftpLogin = "sftp.login",
    SftpLogout = "sftp.logout",
    SftpRefused = "sftp.refused",
    SftpTimeout = "sftp.timeout",
}

macro_rules! alerts {
    ($($(#[$doc:meta])* $variant:ident = $kind:literal,)*) => {
        /// The kind of an alert: the `kind` label of `handoff_alerts_total` and, after
        /// `alert.`, its audit event's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Alert {
            $($(#[$doc])* $variant,)*
        }

        impl Alert {
            pub const ALL: &[Alert] = &[$(Alert::$variant),*];

            /// The kind, e.g. `break_glass`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Alert::$variant => $kind,)*
                }
            }

            /// The audit event's name, e.g. `alert.break_glass`.
            fn event_name(self) -> &'static str {
                match self {
                    $(Alert::$variant => concat!("alert.", $kind),)*
                }
            }
        }
    };
}

alerts! {
    AcceptOverdue = "accept_overdue",
    AuditUnwritable = "audit_unwritable",
    BreakGlass = "break_glass",
    ClockUnsynchronised = "clock_unsynchronised",
    CrlStale = "crl_stale",
    InternalError = "internal_error",
    ReceiptChainBroken = "receipt_chain_broken",
    RetrieveOverdue = "retrieve_overdue",
    ScannerDown = "scanner_down",
    StoreDown = "store_down",
}

impl From<Alert> for Event {
    fn from(a: Alert) -> Event {
        Event::Alert(a)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_dotted() {
        let all = Event::PLAIN
            .iter()
            .copied()
            .chain(Alert::ALL.iter().map(|a| Event::Alert(*a)));
        let mut seen = HashSet::new();
        for e in all {
            let name = e.as_str();
            assert!(seen.insert(name), "{name} twice");
            let (group, rest) = name.split_once('.').expect("dotted");
            assert!(!group.is_empty() && !rest.is_empty(), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b"._".contains(&b)),
                "{name}"
            );
        }
    }

    #[test]
    fn alerts_are_named_after_their_kind() {
        assert_eq!(
            Event::Alert(Alert::BreakGlass).as_str(),
            "alert.break_glass"
        );
        assert_eq!(Alert::ScannerDown.as_str(), "scanner_down");
        assert_eq!(Event::DaemonStart.to_string(), "daemon.start");
        // The file events are named after the hop, as the receipts are.
        for hop in [
            Hop::Accepted,
            Hop::Rejected,
            Hop::Delivered,
            Hop::Retrieved,
            Hop::Purged,
            Hop::Split,
        ] {
            assert_eq!(Event::File(hop).as_str(), format!("file.{}", hop.as_str()));
        }
    }
}
