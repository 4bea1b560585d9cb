//! The content ciphers a message may name (AES-GCM, and AES-CBC when unauthenticated content
//! is allowed), behind one streaming interface so that the message walk neither knows nor
//! cares which one decrypts, and a checking pass writes nothing.

use aes::cipher::{BlockCipherDecrypt, KeyInit, consts::U16};
use aes::{Aes128, Aes192, Aes256};
use der::asn1::OctetStringRef;
use der::{Decode, Tag};

use super::{AlgorithmIdentifier, CHUNK, Counted, Envelope, malformed};
use crate::seal::SealError;
use crate::seal::gcm::{GcmOpen, NONCE_LEN, StreamingGcm};

#[derive(der::Sequence)]
struct GcmParameters<'a> {
    nonce: &'a OctetStringRef,
    icv_len: Option<u8>,
}

/// The content-encryption algorithm and its parameters.
pub(super) enum ContentCipher {
    Gcm {
        key_len: usize,
        nonce: [u8; NONCE_LEN],
    },
    Cbc {
        key_len: usize,
        iv: [u8; 16],
    },
}

impl ContentCipher {
    pub(super) fn from_der(envelope: Envelope, der: &[u8]) -> Result<ContentCipher, SealError> {
        let alg = AlgorithmIdentifier::from_der(der).map_err(malformed("content cipher"))?;
        let (key_len, gcm) = match alg.algorithm.to_string().as_str() {
            "2.16.840.1.101.3.4.1.6" => (16, true),
            "2.16.840.1.101.3.4.1.26" => (24, true),
            "2.16.840.1.101.3.4.1.46" => (32, true),
            "2.16.840.1.101.3.4.1.2" => (16, false),
            "2.16.840.1.101.3.4.1.22" => (24, false),
            "2.16.840.1.101.3.4.1.42" => (32, false),
            _ => {
                return Err(SealError::Unsupported(
                    "content cipher (only AES-GCM and AES-CBC)",
                ));
            }
        };
        match (envelope, gcm) {
            (Envelope::Authenticated, true) => {
                let params: GcmParameters = alg
                    .parameters_as(Tag::Sequence)?
                    .ok_or(SealError::Malformed("GCM parameters"))?;
                let nonce = params
                    .nonce
                    .as_bytes()
                    .try_into()
                    .map_err(|_| SealError::Unsupported("GCM nonce length (only 12 bytes)"))?;
                // The tag length is taken from the MAC itself; 12..=16 bytes are accepted.
                let _ = params.icv_len;
                Ok(ContentCipher::Gcm { key_len, nonce })
            }
            (Envelope::Plain, false) => {
                let iv: &OctetStringRef = alg
                    .parameters_as(Tag::OctetString)?
                    .ok_or(SealError::Malformed("CBC parameters"))?;
                let iv = iv
                    .as_bytes()
                    .try_into()
                    .map_err(|_| SealError::Malformed("CBC IV"))?;
                Ok(ContentCipher::Cbc { key_len, iv })
            }
            (Envelope::Authenticated, false) => Err(SealError::Malformed(
                "AuthEnvelopedData with an unauthenticated cipher",
            )),
            (Envelope::Plain, true) => Err(SealError::Unsupported("AES-GCM in EnvelopedData")),
        }
    }

    pub(super) fn key_len(&self) -> usize {
        match self {
            ContentCipher::Gcm { key_len, .. } | ContentCipher::Cbc { key_len, .. } => *key_len,
        }
    }

    pub(super) fn start(&self, cek: &[u8]) -> Result<Box<dyn Decrypt>, SealError> {
        let bad_key = SealError::Malformed("content key length");
        Ok(match *self {
            ContentCipher::Gcm { nonce, .. } => {
                let gcm: Option<Box<dyn GcmOpen>> = match cek.len() {
                    16 => StreamingGcm::<Aes128>::new(cek, &nonce).map(|g| Box::new(g) as _),
                    24 => StreamingGcm::<Aes192>::new(cek, &nonce).map(|g| Box::new(g) as _),
                    32 => StreamingGcm::<Aes256>::new(cek, &nonce).map(|g| Box::new(g) as _),
                    _ => None,
                };
                Box::new(GcmDecrypt(gcm.ok_or(bad_key)?))
            }
            ContentCipher::Cbc { iv, .. } => match cek.len() {
                16 => Box::new(CbcDecrypt::<Aes128>::new(cek, iv).ok_or(bad_key)?),
                24 => Box::new(CbcDecrypt::<Aes192>::new(cek, iv).ok_or(bad_key)?),
                32 => Box::new(CbcDecrypt::<Aes256>::new(cek, iv).ok_or(bad_key)?),
                _ => return Err(bad_key),
            },
        })
    }
}

/// Content decryption, in pieces of any size.
pub(super) trait Decrypt {
    fn update(&mut self, ciphertext: &mut [u8], out: &mut Counted<'_>) -> Result<(), SealError>;
    fn finish(self: Box<Self>, mac: Option<&[u8]>, out: &mut Counted<'_>) -> Result<(), SealError>;
}

struct GcmDecrypt(Box<dyn GcmOpen>);

impl Decrypt for GcmDecrypt {
    fn update(&mut self, ciphertext: &mut [u8], out: &mut Counted<'_>) -> Result<(), SealError> {
        if out.writing() {
            self.0.decrypt(ciphertext);
            out.put(ciphertext)
        } else {
            self.0.absorb(ciphertext);
            out.len += ciphertext.len() as u64;
            Ok(())
        }
    }

    fn finish(
        self: Box<Self>,
        mac: Option<&[u8]>,
        _out: &mut Counted<'_>,
    ) -> Result<(), SealError> {
        let mac = mac.ok_or(SealError::Malformed("MAC"))?;
        if self.0.verify(mac) {
            Ok(())
        } else {
            Err(SealError::Tampered)
        }
    }
}

/// AES-CBC decryption with PKCS#7 padding; the last block is held back until the end.
struct CbcDecrypt<C> {
    cipher: C,
    prev: [u8; 16],
    held: Vec<u8>,
}

impl<C: BlockCipherDecrypt<BlockSize = U16> + KeyInit> CbcDecrypt<C> {
    fn new(key: &[u8], iv: [u8; 16]) -> Option<Self> {
        Some(CbcDecrypt {
            cipher: C::new_from_slice(key).ok()?,
            prev: iv,
            held: Vec::with_capacity(CHUNK + 16),
        })
    }

    fn block(&mut self, c: &[u8], out: &mut Counted<'_>) -> Result<[u8; 16], SealError> {
        let mut b: [u8; 16] = c
            .try_into()
            .map_err(|_| SealError::Malformed("CBC block"))?;
        let next = b;
        if out.writing() {
            self.cipher.decrypt_block((&mut b).into());
            for (x, p) in b.iter_mut().zip(self.prev) {
                *x ^= p;
            }
        }
        self.prev = next;
        Ok(b)
    }
}

impl<C: BlockCipherDecrypt<BlockSize = U16> + KeyInit> Decrypt for CbcDecrypt<C> {
    fn update(&mut self, ciphertext: &mut [u8], out: &mut Counted<'_>) -> Result<(), SealError> {
        self.held.extend_from_slice(ciphertext);
        // Keep at least one whole block back: the last one carries the padding.
        let whole = self.held.len() / 16 * 16;
        let ready = if whole == self.held.len() {
            whole.saturating_sub(16)
        } else {
            whole
        };
        let held = std::mem::take(&mut self.held);
        for c in held[..ready].chunks_exact(16) {
            let p = self.block(c, out)?;
            out.put(&p)?;
        }
        self.held = held[ready..].to_vec();
        Ok(())
    }

    fn finish(
        mut self: Box<Self>,
        _mac: Option<&[u8]>,
        out: &mut Counted<'_>,
    ) -> Result<(), SealError> {
        if self.held.len() != 16 {
            return Err(SealError::Malformed(
                "CBC content is not a whole number of blocks",
            ));
        }
        if !out.writing() {
            return Ok(());
        }
        let last = std::mem::take(&mut self.held);
        let p = self.block(&last, out)?;
        let pad = usize::from(p[15]);
        if !(1..=16).contains(&pad) || p[16 - pad..].iter().any(|b| usize::from(*b) != pad) {
            return Err(SealError::Tampered);
        }
        out.put(&p[..16 - pad])
    }
}
