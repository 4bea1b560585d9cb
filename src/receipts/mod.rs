//! Per-hop receipts: signed, hash-chained records of where each party's responsibility for a
//! file ends (ARCHITECTURE.md, *One receipt per hop*).
//!
//! The pipeline logs one event per file and hop; the [`issuer::Issuer`] turns each into a
//! [`Receipt`] in the [`ledger::Ledger`] and into files in the boxes concerned. Verification needs
//! only the public key (docs/receipts.md).

pub mod canonical;
pub mod issuer;
pub mod ledger;
mod receipt;

pub use canonical::GENESIS;
pub use receipt::{Receipt, ReceiptError, verify_chain};

use crate::events::{Finding, Hop, summary_of};

/// A receipt's JSON as shown to the NOC: each reason without its message, and the summary
/// rebuilt from rules, files and lines. Its signature no longer covers it; the signed receipt
/// stays in the boxes and the ledger.
pub fn redact_for_noc(receipt: &mut serde_json::Value) {
    let mut summary = None;
    if let Some(reasons) = receipt
        .get_mut("reasons")
        .and_then(serde_json::Value::as_array_mut)
    {
        let mut parsed = Vec::new();
        for r in reasons.iter_mut() {
            if let Some(map) = r.as_object_mut() {
                map.remove("message");
            }
            let mut with_message = r.clone();
            with_message["message"] = serde_json::Value::String(String::new());
            if let Ok(reason) = serde_json::from_value::<Finding>(with_message) {
                parsed.push(reason.redacted());
            }
        }
        let hop = receipt
            .get("hop")
            .and_then(|h| serde_json::from_value::<Hop>(h.clone()).ok())
            .unwrap_or(Hop::Rejected);
        summary = summary_of(hop, &parsed);
    }
    if let Some(map) = receipt.as_object_mut() {
        map.remove("signature");
        if map.get("summary").is_some_and(|s| !s.is_null()) {
            map.insert(
                "summary".into(),
                summary.map_or(serde_json::Value::Null, serde_json::Value::String),
            );
        }
        map.insert("redacted".into(), serde_json::Value::Bool(true));
    }
}
