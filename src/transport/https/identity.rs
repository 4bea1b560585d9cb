//! Who a client certificate is: its subject as RFC 4514 text (as
//! `openssl x509 -noout -subject -nameopt RFC2253` prints it) and its SHA-256 fingerprint,
//! the two things an account can be mapped by.

use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub subject: String,
    /// Lower-case hex SHA-256 of the certificate DER.
    pub fingerprint: String,
}

impl CertIdentity {
    pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(CertIdentity {
            subject: rfc4514(cert.subject()),
            fingerprint: hex::encode(Sha256::digest(der)),
        })
    }
}

/// The name with its most specific RDN first, attribute values escaped per RFC 4514.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    let key = match x509_parser::objects::oid2abbrev(oid, registry) {
                        Ok("commonName") => "CN".to_owned(),
                        Ok("emailAddress") => "emailAddress".to_owned(),
                        Ok(short) => short.to_owned(),
                        Err(_) => oid.to_id_string(),
                    };
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!("#{}", hex::encode(atv.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_matches_openssl_rfc2253_output() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/certs-example/clinic-1312345679.pem"
        ))
        .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let id = CertIdentity::from_der(&pem.contents).unwrap();
        assert_eq!(id.subject, "CN=clinic-1312345679,O=handoff EXAMPLE,C=JP");
        assert_eq!(id.fingerprint.len(), 64);
    }

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("#x"), "\\#x");
    }
}
