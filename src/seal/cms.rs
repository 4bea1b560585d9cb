//! Sealing for the recipient: CMS (RFC 5652) `AuthEnvelopedData` (RFC 5083) with AES-256-GCM
//! content encryption (RFC 5084: 12-byte nonce, 16-byte tag) and the content-encryption key
//! wrapped for each recipient certificate with RSAES-OAEP-SHA-256 (`KeyTransRecipientInfo`,
//! issuer and serial number). DER throughout, so `openssl cms -decrypt -inform DER` opens it.
//!
//! The content is encrypted as it streams: GCM is composed from AES-CTR and GHASH so that no
//! more than one buffer is held, and the DER lengths are computed up front from the plaintext
//! length (which the caller knows; the spool records it), so one pass writes the whole file.
//! A single DER length is limited to 4 GiB, which bounds the sealed file.

use std::io::{self, Read, Write};

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyIvInit, StreamCipher};
use der::asn1::ObjectIdentifier;
use der::{Encode, Header, Length, Tag, TagNumber};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::SealError;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
const ID_AES256_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

const GCM_TAG: usize = 16;
const CHUNK: usize = 256 << 10;

/// One party a file is sealed for: an RSA certificate (issuer, serial number, public key).
#[derive(Clone)]
pub struct Recipient {
    issuer_der: Vec<u8>,
    serial_raw: Vec<u8>,
    key: rsa::RsaPublicKey,
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient(serial {})", hex::encode(&self.serial_raw))
    }
}

impl Recipient {
    /// From a certificate in PEM or DER.
    pub fn from_certificate(bytes: &[u8]) -> Result<Recipient, SealError> {
        let der = match x509_parser::pem::parse_x509_pem(bytes) {
            Ok((_, pem)) => pem.contents,
            Err(_) => bytes.to_vec(),
        };
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|_| SealError::Malformed("not an X.509 certificate"))?;
        let spki = cert.public_key();
        if spki.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION {
            return Err(SealError::Unsupported(
                "recipient key type (only RSA certificates are supported)",
            ));
        }
        use rsa::pkcs8::DecodePublicKey;
        let key = rsa::RsaPublicKey::from_public_key_der(spki.raw)
            .map_err(|_| SealError::Malformed("RSA public key"))?;
        Ok(Recipient {
            issuer_der: cert.issuer().as_raw().to_vec(),
            serial_raw: cert.raw_serial().to_vec(),
            key,
        })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Recipient, SealError> {
        Recipient::from_certificate(&std::fs::read(path)?)
    }
}

fn tlv(tag: Tag, content: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = header(tag, content.len() as u64)?;
    out.extend_from_slice(content);
    Ok(out)
}

fn header(tag: Tag, len: u64) -> Result<Vec<u8>, SealError> {
    let len = u32::try_from(len).map_err(|_| SealError::Unsupported("content over 4 GiB"))?;
    let mut out = Vec::new();
    Header::new(tag, Length::new(len))
        .encode_to_vec(&mut out)
        .map_err(|_| SealError::Malformed("DER header"))?;
    Ok(out)
}

fn oid(o: ObjectIdentifier) -> Result<Vec<u8>, SealError> {
    o.to_der().map_err(|_| SealError::Malformed("OID"))
}

fn seq(parts: &[&[u8]]) -> Result<Vec<u8>, SealError> {
    tlv(Tag::Sequence, &parts.concat())
}

fn context(n: u32, constructed: bool, content: &[u8]) -> Result<Vec<u8>, SealError> {
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

fn key_trans(r: &Recipient, cek: &[u8]) -> Result<Vec<u8>, SealError> {
    let wrapped = r
        .key
        .encrypt(&mut rand::rng(), rsa::Oaep::<rsa::sha2::Sha256>::new(), cek)
        .map_err(|_| SealError::Unsupported("RSA-OAEP key wrap"))?;
    let version = 0u8.to_der().map_err(|_| SealError::Malformed("INTEGER"))?;
    let rid = seq(&[&r.issuer_der, &tlv(Tag::Integer, &r.serial_raw)?])?;
    seq(&[
        &version,
        &rid,
        &oaep_algorithm()?,
        &tlv(Tag::OctetString, &wrapped)?,
    ])
}

/// AES-256-GCM over a stream: CTR for the data, GHASH for the tag.
struct StreamingGcm {
    ctr: ctr::Ctr32BE<Aes256>,
    ghash: GHash,
    pending: Vec<u8>,
    len: u64,
    tag_mask: [u8; 16],
}

impl StreamingGcm {
    fn new(key: &[u8; 32], nonce: &[u8; 12]) -> StreamingGcm {
        use aes::cipher::KeyInit as _;
        let aes = Aes256::new(key.into());
        let mut h = [0u8; 16];
        aes.encrypt_block((&mut h).into());
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut tag_mask = j0;
        aes.encrypt_block((&mut tag_mask).into());
        let mut iv = j0;
        iv[15] = 2;
        StreamingGcm {
            ctr: ctr::Ctr32BE::<Aes256>::new(key.into(), &iv.into()),
            ghash: GHash::new(&h.into()),
            pending: Vec::with_capacity(16),
            len: 0,
            tag_mask,
        }
    }

    fn encrypt(&mut self, buf: &mut [u8]) {
        self.ctr.apply_keystream(buf);
        self.len += buf.len() as u64;
        let mut data: &[u8] = buf;
        if !self.pending.is_empty() {
            let take = (16 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 16 {
                self.ghash.update_padded(&self.pending);
                self.pending.clear();
            }
        }
        let whole = data.len() / 16 * 16;
        self.ghash.update_padded(&data[..whole]);
        self.pending.extend_from_slice(&data[whole..]);
    }

    fn finish(mut self) -> [u8; 16] {
        self.ghash.update_padded(&self.pending);
        let mut lengths = [0u8; 16];
        lengths[8..].copy_from_slice(&(self.len * 8).to_be_bytes());
        self.ghash.update_padded(&lengths);
        let mut tag: [u8; 16] = self.ghash.finalize().into();
        for (t, m) in tag.iter_mut().zip(self.tag_mask) {
            *t ^= m;
        }
        tag
    }
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
        .map(|r| key_trans(r, cek.as_ref()))
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
    let mut gcm = StreamingGcm::new(&cek, &nonce);
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

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::KeyInit;
    use aes_gcm::aead::AeadInOut;

    #[test]
    fn streaming_gcm_matches_the_aes_gcm_crate() {
        let key = [7u8; 32];
        let nonce = [9u8; 12];
        for len in [0usize, 1, 15, 16, 17, 100, 4096 + 3] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = plain.clone();
            let mut gcm = StreamingGcm::new(&key, &nonce);
            // Feed in uneven pieces.
            let (a, b) = ours.split_at_mut(len / 3);
            gcm.encrypt(a);
            gcm.encrypt(b);
            let tag = gcm.finish();
            let oracle = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
            let mut theirs = plain.clone();
            let their_tag = oracle
                .encrypt_inout_detached(&nonce.into(), b"", theirs.as_mut_slice().into())
                .unwrap();
            assert_eq!(ours, theirs, "len {len}");
            assert_eq!(&tag[..], &their_tag[..], "len {len}");
        }
    }
}
