//! Identifiers that travel between the spool, the job store, events and receipts: the SHA-256
//! of a file and a file's id. Each prints, serialises and is stored exactly as the lower-case
//! hex string or hyphenated UUID it replaces, so receipts already signed and job stores already
//! written read and verify unchanged.

use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest. Held as its 32 bytes, so a value can only be a digest (never upper-case,
/// truncated or some other hash); prints and serialises as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

/// Why a text is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 digest (64 hex digits): {got:?}")]
pub struct BadSha256 {
    got: String,
}

impl Sha256 {
    /// The digest of `bytes`.
    pub fn digest(bytes: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256::from_hasher(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The digest a running hash ends in.
    pub fn from_hasher(h: sha2::Sha256) -> Sha256 {
        use sha2::Digest;
        Sha256(h.finalize().into())
    }

    /// Parses 64 hex digits, in either case.
    pub fn from_hex(s: &str) -> Result<Sha256, BadSha256> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadSha256 { got: s.to_owned() })?;
        Ok(Sha256(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The lower-case hex form, as stored and signed.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<[u8; 32]> for Sha256 {
    fn from(b: [u8; 32]) -> Sha256 {
        Sha256(b)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl FromStr for Sha256 {
    type Err = BadSha256;
    fn from_str(s: &str) -> Result<Sha256, BadSha256> {
        Sha256::from_hex(s)
    }
}

/// Compares with the stored form: lower-case hex only, as written.
impl PartialEq<str> for Sha256 {
    fn eq(&self, other: &str) -> bool {
        self.to_hex() == other
    }
}

impl PartialEq<&str> for Sha256 {
    fn eq(&self, other: &&str) -> bool {
        self.to_hex() == *other
    }
}

impl PartialEq<String> for Sha256 {
    fn eq(&self, other: &String) -> bool {
        self.to_hex() == *other
    }
}

impl PartialEq<Sha256> for String {
    fn eq(&self, other: &Sha256) -> bool {
        *self == other.to_hex()
    }
}

impl PartialEq<Sha256> for &str {
    fn eq(&self, other: &Sha256) -> bool {
        *self == other.to_hex()
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        Sha256::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl rusqlite::types::ToSql for Sha256 {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.to_hex()))
    }
}

impl rusqlite::types::FromSql for Sha256 {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        Sha256::from_hex(s).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// A file's id: a UUID, time-ordered (v7) when the gateway makes one. Printed hyphenated in
/// lower case, the form in file names, the job store and receipts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(uuid::Uuid);

impl FileId {
    /// A new id, ordered by the time it was made.
    pub fn new() -> FileId {
        FileId(uuid::Uuid::now_v7())
    }

    /// An id read back (from a path, a request, a store): any UUID, hyphenated or not.
    pub fn parse(s: &str) -> Result<FileId, uuid::Error> {
        uuid::Uuid::parse_str(s).map(FileId)
    }
}

impl Default for FileId {
    fn default() -> FileId {
        FileId::new()
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.0.hyphenated())
    }
}

impl FromStr for FileId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<FileId, uuid::Error> {
        FileId::parse(s)
    }
}

impl serde::Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        FileId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_prints_and_parses_as_lower_hex() {
        let d = Sha256::digest(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Sha256::from_hex(EMPTY), Ok(d));
        assert_eq!(EMPTY.parse::<Sha256>(), Ok(d));
        // Upper case parses, and prints back in lower case.
        let upper = EMPTY.to_uppercase();
        assert_eq!(
            Sha256::from_hex(&upper).map(|d| d.to_string()).as_deref(),
            Ok(EMPTY)
        );
        let stored: String = EMPTY.into();
        assert!(d == EMPTY);
        assert!(stored == d);
    }

    #[test]
    fn sha256_refuses_what_is_no_digest() {
        for bad in [
            "",
            "e3b0",
            &EMPTY[1..],
            &format!("{EMPTY}00"),
            &EMPTY.replace('e', "g"),
        ] {
            assert!(Sha256::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_serialises_as_the_same_string() {
        let d = Sha256::digest(b"");
        let json = serde_json::to_string(&d).expect("serialises");
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Sha256>(&json).ok(), Some(d));
        assert!(serde_json::from_str::<Sha256>("\"xyz\"").is_err());
    }

    #[test]
    fn sha256_stores_as_text_in_sqlite() {
        let db = rusqlite::Connection::open_in_memory().expect("sqlite");
        let d = Sha256::digest(b"abc");
        let text: String = db.query_row("SELECT ?1", [d], |r| r.get(0)).expect("query");
        assert_eq!(text, d.to_hex());
        let back: Sha256 = db
            .query_row("SELECT ?1", [text], |r| r.get(0))
            .expect("query");
        assert_eq!(back, d);
    }

    #[test]
    fn file_ids_are_v7_and_print_hyphenated() {
        let id = FileId::new();
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'7', "version 7: {s}");
        assert_eq!(FileId::parse(&s).ok(), Some(id));
        assert_eq!(serde_json::to_string(&id).ok(), Some(format!("\"{s}\"")));
        assert!(FileId::parse("../etc/passwd").is_err());
    }
}
