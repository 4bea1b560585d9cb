//! Turns the pipeline's event log into receipts: one per file and hop, in log order, chained,
//! signed, stored in the ledger, and written into the boxes of the parties concerned.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Hop;
use super::ledger::{Ledger, LedgerError};
use super::receipt::Receipt;
use crate::accounts::CounterpartId;
use crate::boxes::BoxStore;
use crate::error::Chain;
use crate::events::{EventLog, FileEvent};

/// Receipts whose box files are re-written at start-up, in case a crash came between the ledger
/// commit and the file write.
const REPAIR_WINDOW: u64 = 1000;
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("event log: {0}")]
    Log(String),
    #[error("writing receipt {receipt} into the box of {owner}")]
    File {
        owner: String,
        receipt: String,
        source: std::io::Error,
    },
}

pub struct Issuer {
    ledger: Ledger,
    key: ed25519_dalek::SigningKey,
    boxes: Arc<dyn BoxStore>,
}

impl Issuer {
    pub fn new(ledger: Ledger, key: ed25519_dalek::SigningKey, boxes: Arc<dyn BoxStore>) -> Issuer {
        Issuer { ledger, key, boxes }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Issues the receipt of one logged event (or nothing, if it was issued before) and records
    /// the log position. Returns the new receipt.
    pub fn issue(
        &mut self,
        event_seq: u64,
        event: &FileEvent,
    ) -> Result<Option<Receipt>, IssueError> {
        let id = format!("{}.{}", event.file_id, event.hop);
        if self.ledger.has(&id)? {
            self.ledger.append(None, event_seq)?;
            return Ok(None);
        }
        let (head_seq, head_hash) = self.ledger.head()?;
        let mut r = Receipt {
            id,
            seq: head_seq + 1,
            file_id: event.file_id.clone(),
            hop: event.hop,
            time: crate::audit::clock::rfc3339(event.at),
            clock_synchronised: crate::audit::clock::status().synchronised,
            sender: event.sender.clone(),
            recipient: event.recipient.clone(),
            original_name: event.original_name.clone(),
            size: event.size,
            sha256: event.sha256,
            sealed_sha256: event.sealed_sha256,
            reasons: event.reasons.clone(),
            summary: crate::events::summary_of(event.hop, &event.reasons),
            previous: head_hash,
            file_previous: self.ledger.file_head(&event.file_id)?,
            parent: event.parent.clone(),
            children: event.children.clone(),
            actor: event.actor.clone(),
            channel: event.channel,
            signature: String::new(),
        };
        r.sign(&self.key);
        self.ledger.append(Some(&r), event_seq)?;
        self.write_files(&r)?;
        Ok(Some(r))
    }

    /// The boxes a receipt belongs in: always the sender's; the recipient's once the file has
    /// reached it (delivered, retrieved, purged).
    fn boxes_of(r: &Receipt) -> Vec<&CounterpartId> {
        let mut v = vec![&r.sender];
        if matches!(r.hop, Hop::Delivered | Hop::Retrieved | Hop::Purged)
            && let Some(rec) = &r.recipient
            && rec != &r.sender
        {
            v.push(rec);
        }
        v
    }

    fn write_files(&self, r: &Receipt) -> Result<(), IssueError> {
        let body = format!("{}\n", r.to_canonical_json());
        for owner in Self::boxes_of(r) {
            // A removed counterpart has no box any more; the ledger keeps the record.
            self.boxes
                .write_receipt(owner, &r.id, body.as_bytes())
                .map_err(|source| IssueError::File {
                    owner: owner.to_string(),
                    receipt: r.id.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Re-writes the box files of the most recent receipts.
    pub fn repair(&self) -> Result<(), IssueError> {
        let (head, _) = self.ledger.head()?;
        for r in self.ledger.after(head.saturating_sub(REPAIR_WINDOW))? {
            self.write_files(&r)?;
        }
        Ok(())
    }

    /// Issues receipts for every event after the ledger's position.
    pub fn catch_up(&mut self, log: &dyn EventLog) -> Result<usize, IssueError> {
        let mut issued = 0;
        loop {
            let from = self.ledger.event_seq()?;
            let events = log
                .events_after(from, BATCH)
                .map_err(|e| IssueError::Log(e.to_string()))?;
            if events.is_empty() {
                return Ok(issued);
            }
            for (seq, ev) in &events {
                if self.issue(*seq, ev)?.is_some() {
                    issued += 1;
                }
            }
        }
    }

    /// Runs on a thread of its own (SQLite is blocking) until `shutdown`.
    pub fn spawn(
        mut self,
        log: Arc<dyn EventLog>,
        shutdown: CancellationToken,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            if let Err(e) = self.repair() {
                tracing::error!(error = %Chain(&e), "repairing receipt files");
            }
            let mut watch = log.watch();
            loop {
                if let Err(e) = self.catch_up(log.as_ref()) {
                    tracing::error!(error = %Chain(&e), "issuing receipts; retrying");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
                let woke = futures::executor::block_on(async {
                    tokio::select! {
                        r = watch.changed() => r.is_ok(),
                        _ = shutdown.cancelled() => false,
                    }
                });
                if !woke {
                    return;
                }
            }
        })
    }
}
