//! One receipt: what happened to which file at which hop, chained to the receipt before it and
//! signed with the gateway's Ed25519 receipt key.

use base64::Engine;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{self, GENESIS};
use crate::accounts::{AccountId, CounterpartId};
use crate::events::{Channel, Child, Finding, Hop};

/// The signed record of one hop of one file (ARCHITECTURE.md, *One receipt per hop*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// `{file_id}.{hop}`: unique, and the name of the receipt file in the boxes.
    pub id: String,
    /// Position in the gateway's chain, from 1.
    pub seq: u64,
    pub file_id: String,
    pub hop: Hop,
    /// RFC 3339 UTC.
    pub time: String,
    /// Whether the kernel reported the system clock synchronised when the receipt was made.
    pub clock_synchronised: bool,
    pub sender: CounterpartId,
    pub recipient: Option<CounterpartId>,
    pub original_name: String,
    pub size: u64,
    /// SHA-256 of the plaintext, lower-case hex.
    pub sha256: crate::ids::Sha256,
    /// SHA-256 of the sealed file, lower-case hex (for `delivered`).
    pub sealed_sha256: Option<crate::ids::Sha256>,
    pub reasons: Vec<Finding>,
    /// Short human summary of the reasons, for `rejected`.
    pub summary: Option<String>,
    /// Hash of the previous receipt of the gateway chain (64 zeros for the first).
    pub previous: String,
    /// Hash of the previous hop's receipt of the same file, if any.
    pub file_previous: Option<String>,
    /// For an archive sorted out of an agency-addressed one: the parent's file id. Absent
    /// otherwise, so receipts made before sorting existed verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For a `split`: the archives the parent was sorted into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// The account that acted (ARCHITECTURE.md, *Who acted*): the uploader of `accepted`, the
    /// recipient of `retrieved`, or the maintainer or break-glass account that deleted a delivered
    /// file (`purged`). Absent where the gateway acted; receipts made before it verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<AccountId>,
    /// How the actor reached the gateway (`sftp`, `https`, `offline`): on `accepted` and
    /// `retrieved`. Absent on the gateway's own hops; receipts made before it verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// Base64 Ed25519 signature over the canonical JSON of every other field.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt {0}: signature does not verify")]
    BadSignature(String),
    #[error("receipt {id}: chain broken: previous is {found}, expected {expected}")]
    ChainBroken {
        id: String,
        found: String,
        expected: String,
    },
    #[error("receipt {id}: sequence {found}, expected {expected}")]
    Sequence {
        id: String,
        found: u64,
        expected: u64,
    },
    #[error("malformed receipt: {0}")]
    Malformed(String),
}

impl Receipt {
    /// The JSON value of everything but the signature: the signed content.
    fn unsigned_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.remove("signature");
        }
        v
    }

    /// The exact bytes the signature covers.
    pub fn signed_bytes(&self) -> String {
        canonical::to_string(&self.unsigned_value())
    }

    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) {
        let sig = key.sign(self.signed_bytes().as_bytes());
        self.signature = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
    }

    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> Result<(), ReceiptError> {
        let bad = || ReceiptError::BadSignature(self.id.clone());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| bad())?;
        let sig = ed25519_dalek::Signature::from_slice(&raw).map_err(|_| bad())?;
        key.verify(self.signed_bytes().as_bytes(), &sig)
            .map_err(|_| bad())
    }

    /// The canonical JSON of the whole receipt, signature included: what is stored and published.
    pub fn to_canonical_json(&self) -> String {
        canonical::to_string(&serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// The hash the next receipt's `previous` refers to: SHA-256 of the canonical JSON.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_canonical_json().as_bytes()))
    }
}

/// Checks signatures and the chain of receipts given in chain order; returns how many verified,
/// or the first break.
pub fn verify_chain<'a>(
    receipts: impl IntoIterator<Item = &'a Receipt>,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<u64, ReceiptError> {
    let mut expected_prev = GENESIS.to_owned();
    let mut expected_seq = None;
    let mut n = 0;
    for r in receipts {
        r.verify(key)?;
        if let Some(seq) = expected_seq
            && r.seq != seq
        {
            return Err(ReceiptError::Sequence {
                id: r.id.clone(),
                found: r.seq,
                expected: seq,
            });
        }
        // A chain verified from a later point starts from that receipt's `previous`.
        if n > 0 && r.previous != expected_prev {
            return Err(ReceiptError::ChainBroken {
                id: r.id.clone(),
                found: r.previous.clone(),
                expected: expected_prev,
            });
        }
        if n == 0 && r.seq == 1 && r.previous != GENESIS {
            return Err(ReceiptError::ChainBroken {
                id: r.id.clone(),
                found: r.previous.clone(),
                expected: GENESIS.to_owned(),
            });
        }
        expected_prev = r.hash();
        expected_seq = Some(r.seq + 1);
        n += 1;
    }
    Ok(n)
}
