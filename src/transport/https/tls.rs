//! The TLS side: server certificate, client-certificate verification against the configured CAs
//! and CRLs (rebuilt when a reload brings a new config, so a changed CRL takes effect), TLS 1.3
//! and 1.2 with AEAD suites only.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::live::Snapshot;
use crate::error::Chain;
use crate::sync::Recover;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no {what} found", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("tls_cert, tls_key and client_ca are required for HTTPS")]
    Missing,
    #[error("TLS configuration: {0}")]
    Rustls(String),
    #[error("{0}")]
    Crl(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&bytes[..]))
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

/// CRLs from PEM, or the file as one DER CRL.
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let pem: Vec<_> = rustls_pemfile::crls(&mut BufReader::new(&bytes[..]))
        .filter_map(Result::ok)
        .collect();
    if pem.is_empty() {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    } else {
        Ok(pem)
    }
}

pub fn server_config(snapshot: &Snapshot) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let g = &snapshot.config.gateway;
    let (Some(cert), Some(key)) = (&g.tls_cert, &g.tls_key) else {
        return Err(TlsError::Missing);
    };
    if g.client_ca.is_empty() {
        return Err(TlsError::Missing);
    }
    let chain = certs(cert)?;
    let key_bytes = read(key)?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut BufReader::new(&key_bytes[..]))
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::Empty {
                path: key.clone(),
                what: "PEM private key",
            })?;
    let mut roots = RootCertStore::empty();
    for ca in &g.client_ca {
        for c in certs(ca)? {
            roots
                .add(c)
                .map_err(|e| TlsError::Rustls(format!("{}: {e}", ca.display())))?;
        }
    }
    let mut revoked = Vec::new();
    for p in &g.crl {
        revoked.extend(crls(p)?);
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(revoked)
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    // The default provider's suites are all AEAD (AES-GCM, ChaCha20-Poly1305) with ECDHE.
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_client_cert_verifier(verifier)
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server config for the config in force, rebuilt only when a reload swapped the config.
pub struct TlsConfigs {
    cached: Mutex<(usize, Arc<rustls::ServerConfig>)>,
}

impl TlsConfigs {
    pub fn new(snapshot: &Arc<Snapshot>) -> Result<TlsConfigs, TlsError> {
        let config = server_config(snapshot)?;
        Ok(TlsConfigs {
            cached: Mutex::new((Arc::as_ptr(snapshot) as usize, config)),
        })
    }

    pub fn current(&self, snapshot: &Arc<Snapshot>) -> Arc<rustls::ServerConfig> {
        let key = Arc::as_ptr(snapshot) as usize;
        let mut cached = self.cached.locked();
        if cached.0 != key {
            match server_config(snapshot) {
                Ok(c) => *cached = (key, c),
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "new TLS settings refused; keeping the previous ones");
                    cached.0 = key;
                }
            }
        }
        cached.1.clone()
    }
}
