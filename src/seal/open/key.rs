//! The key messages are opened with, parsed once from the forms OpenSSL writes (PEM PKCS#8,
//! PKCS#1 or SEC1; PKCS#8 DER) into what opening needs: the private key that unwraps content
//! keys, and the names under which a recipient info may address it.

use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::seal::SealError;
use crate::seal::cms::{self, RecipientKey};

/// A private key to open files with, and optionally its certificate, which names the
/// recipient info meant for it (without one, every recipient info of the key's kind is tried).
pub struct OpeningKey {
    pub(super) key: PrivateKey,
    pub(super) cert: Option<CertName>,
}

pub(super) enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
}

/// How a certificate is named in a recipient info.
pub(super) struct CertName {
    pub(super) issuer_der: Vec<u8>,
    pub(super) serial_raw: Vec<u8>,
    pub(super) key_id: Option<Vec<u8>>,
}

impl std::fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.key {
            PrivateKey::Rsa(_) => "RSA",
            PrivateKey::P256(_) => "EC P-256",
        };
        write!(
            f,
            "OpeningKey({kind}, with certificate: {})",
            self.cert.is_some()
        )
    }
}

impl OpeningKey {
    /// From an unencrypted private key (PEM: PKCS#8, PKCS#1 or SEC1; or PKCS#8 DER) and an
    /// optional certificate (PEM or DER), which must hold the key's public half.
    pub fn new(key: &[u8], cert: Option<&[u8]>) -> Result<OpeningKey, SealError> {
        let key = private_key(key)?;
        let cert = match cert {
            None => None,
            Some(bytes) => Some(cert_name(&key, bytes)?),
        };
        Ok(OpeningKey { key, cert })
    }

    pub fn from_files(
        key: &std::path::Path,
        cert: Option<&std::path::Path>,
    ) -> Result<OpeningKey, SealError> {
        let key_bytes = Zeroizing::new(std::fs::read(key)?);
        let cert_bytes = cert.map(std::fs::read).transpose()?;
        OpeningKey::new(&key_bytes, cert_bytes.as_deref())
    }
}

fn private_key(bytes: &[u8]) -> Result<PrivateKey, SealError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    let mut blocks = x509_parser::pem::Pem::iter_from_buffer(bytes).peekable();
    if blocks.peek().is_none() {
        return pkcs8_key(bytes);
    }
    for block in blocks {
        let pem = block.map_err(|_| SealError::Malformed("PEM"))?;
        let der = Zeroizing::new(pem.contents);
        match pem.label.as_str() {
            "PRIVATE KEY" => return pkcs8_key(&der),
            "RSA PRIVATE KEY" => {
                return rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map(|k| PrivateKey::Rsa(Box::new(k)))
                    .map_err(|_| SealError::Malformed("RSA private key"));
            }
            "EC PRIVATE KEY" => {
                return p256::SecretKey::from_sec1_der(&der)
                    .map(PrivateKey::P256)
                    .map_err(|_| SealError::Unsupported("EC private key (only P-256)"));
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(SealError::Unsupported(
                    "encrypted private key (decrypt it with openssl pkey first)",
                ));
            }
            _ => {}
        }
    }
    Err(SealError::Malformed("no private key in the PEM file"))
}

fn pkcs8_key(der: &[u8]) -> Result<PrivateKey, SealError> {
    use p256::pkcs8::DecodePrivateKey as _;
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::Rsa(Box::new(k)));
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    Err(SealError::Unsupported(
        "private key (only unencrypted RSA and EC P-256 keys)",
    ))
}

fn cert_name(key: &PrivateKey, bytes: &[u8]) -> Result<CertName, SealError> {
    let der = cms::certificate_der(bytes);
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| SealError::Malformed("not an X.509 certificate"))?;
    let matches = match (cms::public_key(cert.public_key())?, key) {
        (RecipientKey::Rsa(public), PrivateKey::Rsa(private)) => public == private.to_public_key(),
        (RecipientKey::P256(public), PrivateKey::P256(private)) => public == private.public_key(),
        _ => false,
    };
    if !matches {
        return Err(SealError::CertificateMismatch);
    }
    let key_id = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    Ok(CertName {
        issuer_der: cert.issuer().as_raw().to_vec(),
        serial_raw: cert.raw_serial().to_vec(),
        key_id,
    })
}
