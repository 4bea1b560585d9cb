//! The manifest of an exported medium: which files it holds, what each must hash to, and which
//! receipts prove their way through the gateway. Signed with the receipt key over canonical JSON,
//! like a receipt, so `docs/verify-receipt.py` checks a medium with the same public key.

use base64::Engine;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::accounts::{AccountId, CounterpartId};
use crate::ids::Sha256;
use crate::receipts::canonical;

/// The `kind` that tells a manifest from a receipt.
pub const KIND: &str = "handoff.export";
/// Its file name in the export folder.
pub const FILE_NAME: &str = "manifest.json";
/// The folder beside it that holds one file per receipt.
pub const RECEIPTS_DIR: &str = "receipts";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    /// The export's own id.
    pub id: String,
    /// RFC 3339 UTC.
    pub time: String,
    /// The recipient the files are for.
    pub counterpart: CounterpartId,
    /// Who handed the medium over.
    pub operator: AccountId,
    pub files: Vec<Entry>,
    /// Base64 Ed25519 over the canonical JSON of every other field.
    pub signature: String,
}

/// One file of the medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file_id: String,
    /// Its name in the folder: the outbox name.
    pub name: String,
    /// The name its sender gave it.
    pub original_name: String,
    pub sender: CounterpartId,
    /// Bytes of the sealed file.
    pub size: u64,
    /// SHA-256 of the sealed file, as its `delivered` receipt records it.
    pub sha256: Sha256,
    /// Ids of every receipt of the file, each in `receipts/<id>.json`.
    pub receipts: Vec<String>,
}

impl Manifest {
    /// Signs the manifest with the gateway's receipt key.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) {
        let sig = key.sign(self.signed_bytes().as_bytes());
        self.signature = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
    }

    /// The exact bytes the signature covers.
    pub fn signed_bytes(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.remove("signature");
        }
        canonical::to_string(&v)
    }

    /// Canonical JSON of the whole manifest, signature included, as it is written.
    pub fn to_canonical_json(&self) -> String {
        canonical::to_string(&serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn the_signature_covers_every_field_but_itself() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut m = Manifest {
            kind: KIND.into(),
            id: "X1".into(),
            time: "2026-12-06T00:00:00Z".into(),
            counterpart: CounterpartId::new("insurer-06130017").unwrap(),
            operator: AccountId::new("op-tanaka").unwrap(),
            files: Vec::new(),
            signature: String::new(),
        };
        m.sign(&key);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&m.signature)
            .unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        let vk = key.verifying_key();
        assert!(vk.verify(m.signed_bytes().as_bytes(), &sig).is_ok());
        assert!(!m.signed_bytes().contains("signature"));
        m.operator = AccountId::new("op-other").unwrap();
        assert!(vk.verify(m.signed_bytes().as_bytes(), &sig).is_err());
    }
}
