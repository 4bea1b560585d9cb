//! Certificate revocation lists as the gateway uses them: read and parsed whole when a config
//! is validated, so that a CRL that does not parse refuses the start or the reload instead of
//! leaving the TLS side on an old list (or none) behind the operator's back.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: does not parse as a CRL (PEM \"X509 CRL\" or DER): {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// What the gateway needs of one CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    pub path: PathBuf,
    /// The issuer's name, DER, as certificates of that CA carry it.
    pub issuer_der: Vec<u8>,
    /// The issuer's name as text, for alerts.
    pub issuer: String,
    pub next_update: Option<OffsetDateTime>,
    /// Serial numbers revoked, as encoded (DER integer contents).
    pub revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Whether a certificate issued by `issuer_der` with serial `serial` is listed.
    pub fn revokes(&self, issuer_der: &[u8], serial: &[u8]) -> bool {
        self.issuer_der == issuer_der && self.revoked.iter().any(|s| s == serial)
    }
}

/// The CRLs of one file: PEM blocks labelled `X509 CRL`, or the file as one DER CRL.
pub fn read(path: &Path) -> Result<Vec<Crl>, CrlError> {
    let bytes = std::fs::read(path).map_err(|source| CrlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CrlError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let mut ders = Vec::new();
    let mut pem_blocks = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = block.map_err(|e| bad(format!("PEM: {e}")))?;
        pem_blocks += 1;
        if pem.label == "X509 CRL" {
            ders.push(pem.contents);
        }
    }
    if pem_blocks == 0 {
        ders.push(bytes);
    }
    if ders.is_empty() {
        return Err(bad("no X509 CRL block".to_owned()));
    }
    ders.iter()
        .map(|der| {
            let (rest, crl) = x509_parser::parse_x509_crl(der).map_err(|e| bad(e.to_string()))?;
            if !rest.is_empty() {
                return Err(bad("bytes after the CRL".to_owned()));
            }
            Ok(Crl {
                path: path.to_path_buf(),
                issuer_der: crl.issuer().as_raw().to_vec(),
                issuer: crl.issuer().to_string(),
                next_update: crl
                    .next_update()
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()),
                revoked: crl
                    .iter_revoked_certificates()
                    .map(|r| r.raw_serial().to_vec())
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("certs-example")
            .join(name)
    }

    #[test]
    fn the_example_crl_parses_and_junk_does_not() {
        let crls = read(&example("ca.crl")).unwrap();
        assert_eq!(crls.len(), 1);
        assert_eq!(crls[0].revoked.len(), 1);
        assert!(crls[0].next_update.is_some());
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            &b"not a crl"[..],
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        ] {
            let p = dir.path().join("bad.crl");
            std::fs::write(&p, junk).unwrap();
            assert!(matches!(read(&p), Err(CrlError::Parse { .. })), "{junk:?}");
        }
        // A certificate is not a CRL.
        assert!(matches!(
            read(&example("ca.pem")),
            Err(CrlError::Parse { .. })
        ));
    }
}
