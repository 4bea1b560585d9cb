//! Sealing for the recipient: CMS (RFC 5652) `AuthEnvelopedData` (RFC 5083) with AES-256-GCM
//! content encryption (RFC 5084: 12-byte nonce, 16-byte tag) and the content-encryption key
//! given to each recipient certificate: wrapped with RSAES-OAEP-SHA-256 for an RSA key
//! (`KeyTransRecipientInfo`), or with AES-256 key wrap under an ephemeral-static ECDH P-256
//! agreement for an EC key (`KeyAgreeRecipientInfo`, RFC 5753; see `seal::ecdh`); the
//! recipient is named by issuer and serial number. DER throughout, so
//! `openssl cms -decrypt -inform DER` opens it.
//!
//! The content is encrypted as it streams: GCM is composed from AES-CTR and GHASH so that no
//! more than one buffer is held, and the DER lengths are computed up front from the plaintext
//! length (which the caller knows; the spool records it), so one pass writes the whole file.
//! A single DER length is limited to 4 GiB, which bounds the sealed file.

use std::io::{self, Read, Write};

use aes::Aes256;
use der::asn1::ObjectIdentifier;
use der::{Encode, Header, Length, Tag, TagNumber};
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::SealError;

pub(crate) const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
pub(crate) const ID_AES256_GCM: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");
pub(crate) const ID_RSAES_OAEP: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
pub(crate) const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
pub(crate) const ID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

const GCM_TAG: usize = super::gcm::TAG_LEN;
const CHUNK: usize = 256 << 10;

/// One party a file is sealed for: a certificate's issuer, serial number and public key.
#[derive(Clone)]
pub struct Recipient {
    issuer_der: Vec<u8>,
    serial_raw: Vec<u8>,
    key: RecipientKey,
}

/// The kinds of public key a file can be sealed to.
#[derive(Clone)]
pub(crate) enum RecipientKey {
    /// RSA: the content key is transported with RSA-OAEP.
    Rsa(rsa::RsaPublicKey),
    /// EC P-256: the content key is wrapped under an ECDH-agreed key.
    P256(p256::PublicKey),
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.key {
            RecipientKey::Rsa(_) => "RSA",
            RecipientKey::P256(_) => "EC P-256",
        };
        write!(
            f,
            "Recipient({kind}, serial {})",
            hex::encode(&self.serial_raw)
        )
    }
}

impl Recipient {
    /// From a certificate in PEM or DER with an RSA or EC P-256 public key.
    pub fn from_certificate(bytes: &[u8]) -> Result<Recipient, SealError> {
        let der = certificate_der(bytes);
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|_| SealError::Malformed("not an X.509 certificate"))?;
        Ok(Recipient {
            issuer_der: cert.issuer().as_raw().to_vec(),
            serial_raw: cert.raw_serial().to_vec(),
            key: public_key(cert.public_key())?,
        })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Recipient, SealError> {
        Recipient::from_certificate(&std::fs::read(path)?)
    }
}

/// The DER of a certificate given as PEM or DER.
pub(crate) fn certificate_der(bytes: &[u8]) -> Vec<u8> {
    match x509_parser::pem::parse_x509_pem(bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes.to_vec(),
    }
}

pub(crate) fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<RecipientKey, SealError> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    if algorithm == RSA_ENCRYPTION.to_string() {
        use rsa::pkcs8::DecodePublicKey;
        let key = rsa::RsaPublicKey::from_public_key_der(spki.raw)
            .map_err(|_| SealError::Malformed("RSA public key"))?;
        return Ok(RecipientKey::Rsa(key));
    }
    if algorithm == super::ecdh::ID_EC_PUBLIC_KEY.to_string() {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        if curve.as_deref() != Some(super::ecdh::ID_P256.to_string().as_str()) {
            return Err(SealError::Unsupported(
                "recipient EC curve (only P-256 is supported)",
            ));
        }
        use p256::pkcs8::DecodePublicKey;
        let key = p256::PublicKey::from_public_key_der(spki.raw)
            .map_err(|_| SealError::Malformed("EC public key"))?;
        return Ok(RecipientKey::P256(key));
    }
    Err(SealError::Unsupported(
        "recipient key type (only RSA and EC P-256 certificates are supported)",
    ))
}

pub(crate) fn tlv(tag: Tag, content: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = header(tag, content.len() as u64)?;
    out.extend_from_slice(content);
    Ok(out)
}

pub(crate) fn header(tag: Tag, len: u64) -> Result<Vec<u8>, SealError> {
    let len = u32::try_from(len).map_err(|_| SealError::Unsupported("content over 4 GiB"))?;
    let mut out = Vec::new();
    Header::new(tag, Length::new(len))
        .encode_to_vec(&mut out)
        .map_err(|_| SealError::Malformed("DER header"))?;
    Ok(out)
}

pub(crate) fn oid(o: ObjectIdentifier) -> Result<Vec<u8>, SealError> {
    o.to_der().map_err(|_| SealError::Malformed("OID"))
}

pub(crate) fn seq(parts: &[&[u8]]) -> Result<Vec<u8>, SealError> {
    tlv(Tag::Sequence, &parts.concat())
}

pub(crate) fn context(n: u32, constructed: bool, content: &[u8]) -> Result<Vec<u8>, SealError> {
    tlv(
        Tag::ContextSpecific {
            constructed,
            number: TagNumber(n),
        },
        content,
    )
}

/// AlgorithmIdentifier of RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055).
fn oaep_algorithm() -> Result<Vec<u8>, SealError> {
    let sha256 = seq(&[&oid(ID_SHA256)?])?;
    let mgf1 = seq(&[&oid(ID_MGF1)?, &sha256])?;
    let params = seq(&[&context(0, true, &sha256)?, &context(1, true, &mgf1)?])?;
    seq(&[&oid(ID_RSAES_OAEP)?, &params])
}

fn recipient_info(r: &Recipient, cek: &[u8]) -> Result<Vec<u8>, SealError> {
    let rid = seq(&[&r.issuer_der, &tlv(Tag::Integer, &r.serial_raw)?])?;
    match &r.key {
        RecipientKey::Rsa(key) => key_trans(key, &rid, cek),
        RecipientKey::P256(key) => key_agree(key, &rid, cek),
    }
}

/// `KeyTransRecipientInfo` (version 0): the content key encrypted with RSA-OAEP.
fn key_trans(key: &rsa::RsaPublicKey, rid: &[u8], cek: &[u8]) -> Result<Vec<u8>, SealError> {
    let wrapped = key
        .encrypt(&mut rand::rng(), rsa::Oaep::<rsa::sha2::Sha256>::new(), cek)
        .map_err(|_| SealError::Unsupported("RSA-OAEP key wrap"))?;
    seq(&[
        &super::ecdh::version(0)?,
        rid,
        &oaep_algorithm()?,
        &tlv(Tag::OctetString, &wrapped)?,
    ])
}

/// `[1] KeyAgreeRecipientInfo` (version 3): a fresh ephemeral key per file and recipient,
/// given as `originatorKey`; no user keying material.
fn key_agree(key: &p256::PublicKey, rid: &[u8], cek: &[u8]) -> Result<Vec<u8>, SealError> {
    use super::ecdh::{self, DigestAlg, KeyWrap};
    let ephemeral = p256::ecdh::EphemeralSecret::generate_from_rng(&mut rand::rng());
    let shared = ephemeral.diffie_hellman(key);
    let kek = ecdh::kek(
        DigestAlg::Sha256,
        KeyWrap::Aes256,
        shared.raw_secret_bytes(),
        None,
    )?;
    let wrapped = KeyWrap::Aes256.wrap(&kek, cek)?;
    let point = ephemeral.public_key().to_sec1_point(false);
    let originator = context(
        0,
        true,
        &context(1, true, &ecdh::originator_key(point.as_bytes())?)?,
    )?;
    let encrypted_key = seq(&[rid, &tlv(Tag::OctetString, &wrapped)?])?;
    context(
        1,
        true,
        &[
            ecdh::version(3)?,
            originator,
            ecdh::sealing_algorithm()?,
            seq(&[&encrypted_key])?,
        ]
        .concat(),
    )
}

/// What sealing produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes written.
    pub len: u64,
    /// SHA-256 of the sealed file, hex.
    pub sha256: String,
}

/// Counts and hashes what passes through.
struct Tee<W> {
    inner: W,
    len: u64,
    hash: Sha256,
}

impl<W: Write> Tee<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.hash.update(b);
        self.len += b.len() as u64;
        Ok(())
    }
}

/// Seals `plaintext_len` bytes of `input` for `recipients` as DER `AuthEnvelopedData`.
pub fn seal_for<R: Read, W: Write>(
    recipients: &[Recipient],
    plaintext_len: u64,
    mut input: R,
    output: W,
) -> Result<Sealed, SealError> {
    if recipients.is_empty() {
        return Err(SealError::Unsupported(
            "sealing needs at least one recipient",
        ));
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    getrandom::fill(cek.as_mut())
        .map_err(|_| SealError::Io(io::Error::other("random source failed")))?;
    getrandom::fill(&mut nonce)
        .map_err(|_| SealError::Io(io::Error::other("random source failed")))?;

    let mut infos = recipients
        .iter()
        .map(|r| recipient_info(r, cek.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    infos.sort(); // DER: SET OF in ascending order of encodings
    let recipient_infos = tlv(Tag::Set, &infos.concat())?;
    let gcm_params = seq(&[
        &tlv(Tag::OctetString, &nonce)?,
        &(GCM_TAG as u8)
            .to_der()
            .map_err(|_| SealError::Malformed("INTEGER"))?,
    ])?;
    let content_alg = seq(&[&oid(ID_AES256_GCM)?, &gcm_params])?;
    let encrypted_header = header(
        Tag::ContextSpecific {
            constructed: false,
            number: TagNumber(0),
        },
        plaintext_len,
    )?;
    let eci_len =
        (oid(ID_DATA)?.len() + content_alg.len() + encrypted_header.len()) as u64 + plaintext_len;
    let eci_header = header(Tag::Sequence, eci_len)?;
    let mac_len = (2 + GCM_TAG) as u64;
    let version = 0u8.to_der().map_err(|_| SealError::Malformed("INTEGER"))?;
    let aed_len =
        (version.len() + recipient_infos.len() + eci_header.len()) as u64 + eci_len + mac_len;
    let aed_header = header(Tag::Sequence, aed_len)?;
    let explicit_len = aed_header.len() as u64 + aed_len;
    let explicit_header = header(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber(0),
        },
        explicit_len,
    )?;
    let ci_len =
        oid(ID_AUTH_ENVELOPED_DATA)?.len() as u64 + explicit_header.len() as u64 + explicit_len;

    let mut out = Tee {
        inner: output,
        len: 0,
        hash: Sha256::new(),
    };
    for part in [
        header(Tag::Sequence, ci_len)?,
        oid(ID_AUTH_ENVELOPED_DATA)?,
        explicit_header,
        aed_header,
        version,
        recipient_infos,
        eci_header,
        oid(ID_DATA)?,
        content_alg,
        encrypted_header,
    ] {
        out.put(&part)?;
    }
    let mut gcm = super::gcm::StreamingGcm::<Aes256>::new(cek.as_ref(), &nonce)
        .ok_or(SealError::Malformed("content key"))?;
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    let mut remaining = plaintext_len;
    while remaining > 0 {
        let want = remaining.min(CHUNK as u64) as usize;
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(SealError::Truncated);
        }
        let chunk = &mut buf[..n];
        gcm.encrypt(chunk);
        out.put(chunk)?;
        remaining -= n as u64;
    }
    if input.read(&mut [0u8; 1])? != 0 {
        return Err(SealError::Malformed("input longer than the length given"));
    }
    out.put(&tlv(Tag::OctetString, &gcm.finish())?)?;
    out.inner.flush()?;
    Ok(Sealed {
        len: out.len,
        sha256: hex::encode(out.hash.finalize()),
    })
}
