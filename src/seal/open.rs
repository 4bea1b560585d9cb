//! Opening CMS that counterparts address to the gateway: DER or BER `AuthEnvelopedData`
//! (RFC 5083, AES-GCM) and, when the caller allows content without integrity protection,
//! `EnvelopedData` (AES-CBC), for an RSA key (`KeyTransRecipientInfo`, PKCS#1 v1.5 — OpenSSL's
//! default — or OAEP) or an EC P-256 key (`KeyAgreeRecipientInfo`, ephemeral-static ECDH).
//!
//! The input is untrusted: the outer layers are walked with a bounded streaming reader
//! (`seal::ber`), the small structures are decoded with the `der` crate, and every failure is
//! a typed [`SealError`], never a panic. The content streams through one buffer.
//!
//! The GCM tag comes after the content. [`open`] writes plaintext as it decrypts and fails at
//! the end if the tag does not verify, so on error its output must be discarded;
//! [`open_verified`] reads a seekable input twice — first only to check the tag (GHASH over the
//! ciphertext, nothing decrypted or written), then to decrypt — so that no unauthenticated
//! plaintext is ever released and none is written to a temporary file.

use std::io::{Read, Seek, SeekFrom, Write};

use aes::cipher::{BlockCipherDecrypt, KeyInit, consts::U16};
use aes::{Aes128, Aes192, Aes256};
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, DecodeValue, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::SealError;
use super::ber::{BerReader, Head};
use super::cms::{ID_AUTH_ENVELOPED_DATA, ID_MGF1, ID_RSAES_OAEP, RSA_ENCRYPTION, RecipientKey};
use super::ecdh::{self, DigestAlg, KeyWrap};
use super::gcm::{GcmOpen, NONCE_LEN, StreamingGcm};

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");

/// Largest recipient-info set, algorithm identifier or MAC read whole.
const SMALL_LIMIT: u64 = 1 << 20;
/// The buffer the content streams through.
const CHUNK: usize = 256 << 10;

/// A private key to open files with, and optionally its certificate, which names the
/// recipient info meant for it (without one, every recipient info of the key's kind is tried).
pub struct OpeningKey {
    key: PrivateKey,
    cert: Option<CertName>,
}

enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
}

/// How a certificate is named in a recipient info.
struct CertName {
    issuer_der: Vec<u8>,
    serial_raw: Vec<u8>,
    key_id: Option<Vec<u8>>,
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
    let der = super::cms::certificate_der(bytes);
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| SealError::Malformed("not an X.509 certificate"))?;
    let matches = match (super::cms::public_key(cert.public_key())?, key) {
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

/// Which content a caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Also open `EnvelopedData` (AES-CBC), whose content has no integrity protection: a
    /// change to it goes undetected unless it breaks the padding.
    pub allow_unauthenticated: bool,
    /// Unwrap content keys sent with RSA PKCS#1 v1.5 (OpenSSL's default). Its padding is the
    /// one Bleichenbacher's attack feeds on: a caller opening files from strangers should allow
    /// only OAEP and ECDH. Allowed by default, as the command line opens what OpenSSL makes.
    pub allow_rsa_pkcs1v15: bool,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            allow_unauthenticated: false,
            allow_rsa_pkcs1v15: true,
        }
    }
}

/// What opening produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext bytes written.
    pub len: u64,
    /// Whether the content was authenticated (AuthEnvelopedData) rather than only encrypted.
    pub authenticated: bool,
}

/// Opens a CMS message from `input`, writing the plaintext to `output` as it is decrypted.
/// An `Err` can come after some output was written: that output must then be discarded.
pub fn open<R: Read, W: Write>(
    key: &OpeningKey,
    options: OpenOptions,
    input: R,
    mut output: W,
) -> Result<Opened, SealError> {
    let opened = run(key, options, &mut BerReader::new(input), Some(&mut output))?;
    output.flush()?;
    Ok(opened)
}

/// Like [`open`], but checks the whole message (structure, key and GCM tag) before writing
/// anything, by reading `input` twice; the tag is checked again on the second pass, so a file
/// changed in between is still caught. For `EnvelopedData` there is no tag to check first.
pub fn open_verified<R: Read + Seek, W: Write>(
    key: &OpeningKey,
    options: OpenOptions,
    mut input: R,
    mut output: W,
) -> Result<Opened, SealError> {
    let start = input.stream_position()?;
    run(key, options, &mut BerReader::new(&mut input), None)?;
    input.seek(SeekFrom::Start(start))?;
    let opened = run(
        key,
        options,
        &mut BerReader::new(&mut input),
        Some(&mut output),
    )?;
    output.flush()?;
    Ok(opened)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Envelope {
    Authenticated,
    Plain,
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> SealError {
    move |_| SealError::Malformed(what)
}

/// Walks the message; with `output` `None`, only checks it (nothing is decrypted).
fn run<R: Read>(
    key: &OpeningKey,
    options: OpenOptions,
    r: &mut BerReader<R>,
    output: Option<&mut dyn Write>,
) -> Result<Opened, SealError> {
    let content_info = r.expect(0x30, "ContentInfo")?;
    let ci_start = r.pos();
    let content_type = oid(&r.element(0x06, 64, "content type")?)?;
    let envelope = if content_type == ID_AUTH_ENVELOPED_DATA {
        Envelope::Authenticated
    } else if content_type == ID_ENVELOPED_DATA {
        if !options.allow_unauthenticated {
            return Err(SealError::Unsupported(
                "EnvelopedData has no integrity protection (allow unauthenticated content to open it)",
            ));
        }
        Envelope::Plain
    } else {
        return Err(SealError::Unsupported(
            "content type (only AuthEnvelopedData and EnvelopedData)",
        ));
    };
    let explicit = r.expect(0xa0, "ContentInfo content")?;
    let explicit_start = r.pos();
    let body = r.expect(0x30, "enveloped data")?;
    let body_start = r.pos();
    r.element(0x02, 8, "version")?;
    if r.peek()? == Some(0xa0) {
        let h = r.head()?;
        r.skip(h)?; // originatorInfo: certificates and CRLs, not needed to open
    }
    let recipient_infos = r.element(0x31, SMALL_LIMIT, "recipient infos")?;
    let eci = r.expect(0x30, "encrypted content info")?;
    let eci_start = r.pos();
    r.element(0x06, 64, "encrypted content type")?;
    let cipher = ContentCipher::from_der(envelope, &r.element(0x30, 1024, "content cipher")?)?;
    let cek = content_key(key, &recipient_infos, cipher.key_len(), options)?;
    let mut decrypt = cipher.start(&cek)?;
    let mut counted = Counted {
        inner: output,
        len: 0,
    };
    let content = r.head()?;
    match content.tag {
        0x80 => stream(r, content, &mut *decrypt, &mut counted)?,
        0xa0 => {
            let start = r.pos();
            loop {
                if content.len.is_some_and(|len| r.pos() - start >= len) {
                    break;
                }
                let piece = r.head()?;
                if content.len.is_none() && piece.tag == 0 {
                    if piece.len != Some(0) {
                        return Err(SealError::Malformed("end-of-contents"));
                    }
                    break;
                }
                if piece.tag != 0x04 {
                    return Err(SealError::Unsupported("nested constructed content"));
                }
                stream(r, piece, &mut *decrypt, &mut counted)?;
            }
            if let Some(len) = content.len
                && r.pos() - start != len
            {
                return Err(SealError::Malformed("content pieces overrun their element"));
            }
        }
        _ => return Err(SealError::Unsupported("detached content")),
    }
    r.close(eci, eci_start)?;
    let mac = match envelope {
        Envelope::Authenticated => {
            if r.peek()? == Some(0xa1) {
                return Err(SealError::Unsupported("authenticated attributes"));
            }
            let mac = r.element(0x04, 64, "MAC")?;
            Some(octets(&mac)?.to_vec())
        }
        Envelope::Plain => None,
    };
    let trailer = if envelope == Envelope::Authenticated {
        0xa2
    } else {
        0xa1
    };
    if r.peek()? == Some(trailer) {
        let h = r.head()?;
        r.skip(h)?; // unauthenticated / unprotected attributes
    }
    r.close(body, body_start)?;
    r.close(explicit, explicit_start)?;
    r.close(content_info, ci_start)?;
    if r.peek()?.is_some() {
        return Err(SealError::Malformed("data after the message"));
    }
    decrypt.finish(mac.as_deref(), &mut counted)?;
    Ok(Opened {
        len: counted.len,
        authenticated: envelope == Envelope::Authenticated,
    })
}

/// Passes one primitive piece of encrypted content through the decryptor.
fn stream<R: Read>(
    r: &mut BerReader<R>,
    piece: Head,
    decrypt: &mut dyn Decrypt,
    out: &mut Counted<'_>,
) -> Result<(), SealError> {
    let mut remaining = piece.len.ok_or(SealError::Malformed("encrypted content"))?;
    let mut buf = Zeroizing::new(vec![0u8; (remaining as usize).min(CHUNK)]);
    while remaining > 0 {
        let n = (remaining as usize).min(CHUNK);
        r.read_exact(&mut buf[..n])?;
        decrypt.update(&mut buf[..n], out)?;
        remaining -= n as u64;
    }
    Ok(())
}

/// The plaintext sink, or none on a checking pass; counts what is written.
struct Counted<'a> {
    inner: Option<&'a mut dyn Write>,
    len: u64,
}

impl Counted<'_> {
    fn writing(&self) -> bool {
        self.inner.is_some()
    }

    fn put(&mut self, b: &[u8]) -> Result<(), SealError> {
        if let Some(w) = self.inner.as_mut() {
            w.write_all(b)?;
        }
        self.len += b.len() as u64;
        Ok(())
    }
}

fn oid(der: &[u8]) -> Result<ObjectIdentifier, SealError> {
    ObjectIdentifier::from_der(der).map_err(malformed("OBJECT IDENTIFIER"))
}

fn octets(der: &[u8]) -> Result<&[u8], SealError> {
    <&OctetStringRef>::from_der(der)
        .map(OctetStringRef::as_bytes)
        .map_err(malformed("OCTET STRING"))
}

/// Decodes the content of `any` as `T`, whatever (implicit) tag it carries.
fn decode_body<'a, T: DecodeValue<'a, Error = der::Error>>(any: AnyRef<'a>) -> der::Result<T> {
    let mut reader = SliceReader::new(any.value())?;
    let value = T::decode_value(&mut reader, any.header())?;
    reader.finish()?;
    Ok(value)
}

#[derive(der::Sequence)]
struct AlgorithmIdentifier<'a> {
    algorithm: ObjectIdentifier,
    parameters: Option<AnyRef<'a>>,
}

impl<'a> AlgorithmIdentifier<'a> {
    fn parameters_as<T: DecodeValue<'a, Error = der::Error>>(
        &self,
        tag: Tag,
    ) -> Result<Option<T>, SealError> {
        match self.parameters {
            None => Ok(None),
            Some(p) if p.is_null() => Ok(None),
            Some(p) if p.tag() == tag => decode_body(p)
                .map(Some)
                .map_err(malformed("algorithm parameters")),
            Some(_) => Err(SealError::Malformed("algorithm parameters")),
        }
    }
}

#[derive(der::Sequence)]
struct GcmParameters<'a> {
    nonce: &'a OctetStringRef,
    icv_len: Option<u8>,
}

#[derive(der::Sequence)]
struct IssuerAndSerialNumber<'a> {
    issuer: AnyRef<'a>,
    serial_number: AnyRef<'a>,
}

#[derive(der::Sequence)]
struct KeyTransRecipientInfo<'a> {
    version: u8,
    rid: AnyRef<'a>,
    key_encryption_algorithm: AlgorithmIdentifier<'a>,
    encrypted_key: &'a OctetStringRef,
}

#[derive(der::Sequence)]
struct KeyAgreeRecipientInfo<'a> {
    version: u8,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    originator: AnyRef<'a>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    ukm: Option<&'a OctetStringRef>,
    key_encryption_algorithm: AlgorithmIdentifier<'a>,
    recipient_encrypted_keys: Vec<RecipientEncryptedKey<'a>>,
}

#[derive(der::Sequence)]
struct RecipientEncryptedKey<'a> {
    rid: AnyRef<'a>,
    encrypted_key: &'a OctetStringRef,
}

#[derive(der::Sequence)]
struct OriginatorPublicKey<'a> {
    algorithm: AlgorithmIdentifier<'a>,
    public_key: BitStringRef<'a>,
}

#[derive(der::Sequence)]
struct OaepParameters<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifier<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifier<'a>>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label: Option<AlgorithmIdentifier<'a>>,
}

/// The content-encryption algorithm and its parameters.
enum ContentCipher {
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
    fn from_der(envelope: Envelope, der: &[u8]) -> Result<ContentCipher, SealError> {
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

    fn key_len(&self) -> usize {
        match self {
            ContentCipher::Gcm { key_len, .. } | ContentCipher::Cbc { key_len, .. } => *key_len,
        }
    }

    fn start(&self, cek: &[u8]) -> Result<Box<dyn Decrypt>, SealError> {
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
trait Decrypt {
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

/// Whether a recipient identifier names the opening key's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// It names the certificate given with the key.
    Us,
    /// It names another certificate.
    Other,
    /// No certificate was given: it may be ours.
    Unknown,
}

fn named(cert: Option<&CertName>, rid: AnyRef<'_>) -> Result<Named, SealError> {
    let Some(cert) = cert else {
        return Ok(Named::Unknown);
    };
    let ours = match rid.tag() {
        Tag::Sequence => {
            let ias: IssuerAndSerialNumber =
                decode_body(rid).map_err(malformed("issuer and serial number"))?;
            let issuer = ias.issuer.to_der().map_err(malformed("issuer"))?;
            issuer == cert.issuer_der && ias.serial_number.value() == cert.serial_raw
        }
        Tag::ContextSpecific {
            number: TagNumber(0),
            constructed,
        } => {
            // subjectKeyIdentifier [0] (KeyTrans), or rKeyId [0] { SKI, date?, other? }.
            let ski = if constructed {
                let mut r = SliceReader::new(rid.value()).map_err(malformed("rKeyId"))?;
                let ski: &OctetStringRef = r.decode().map_err(malformed("rKeyId"))?;
                ski.as_bytes()
            } else {
                rid.value()
            };
            cert.key_id.as_deref() == Some(ski)
        }
        _ => return Err(SealError::Malformed("recipient identifier")),
    };
    Ok(if ours { Named::Us } else { Named::Other })
}

/// What the search through the recipient infos found besides a key.
#[derive(Default)]
struct Search {
    /// A recipient info that may be ours uses an algorithm we do not support.
    unsupported: Option<&'static str>,
    /// A random content key, taken when a PKCS#1 v1.5 recipient info that may be ours did not
    /// unwrap: the tag then fails, so a bad padding and a bad tag give the one same error.
    fallback: Option<Zeroizing<Vec<u8>>>,
}

/// A random content key of `len` bytes, for a wrapped key that did not unwrap.
fn random_key(len: usize) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut k = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut k)
        .map_err(|_| SealError::Io(std::io::Error::other("random source failed")))?;
    Ok(k)
}

/// Finds the recipient info for `key` in the DER SET `recipient_infos` and unwraps the
/// content key.
fn content_key(
    key: &OpeningKey,
    recipient_infos: &[u8],
    key_len: usize,
    options: OpenOptions,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let set = AnyRef::from_der(recipient_infos).map_err(malformed("recipient infos"))?;
    let mut reader = SliceReader::new(set.value()).map_err(malformed("recipient infos"))?;
    let mut search = Search::default();
    while !reader.is_finished() {
        let info: AnyRef = reader.decode().map_err(malformed("recipient info"))?;
        const KARI: Tag = Tag::ContextSpecific {
            number: TagNumber(1),
            constructed: true,
        };
        let found = match &key.key {
            PrivateKey::Rsa(rsa) if info.tag() == Tag::Sequence => {
                let ktri: KeyTransRecipientInfo =
                    decode_body(info).map_err(malformed("KeyTransRecipientInfo"))?;
                key_trans(rsa, key.cert.as_ref(), &ktri, key_len, options, &mut search)?
            }
            PrivateKey::P256(ec) if info.tag() == KARI => {
                let kari: KeyAgreeRecipientInfo =
                    decode_body(info).map_err(malformed("KeyAgreeRecipientInfo"))?;
                key_agree(ec, key.cert.as_ref(), &kari, key_len, &mut search)?
            }
            _ => None, // another kind of recipient (or key)
        };
        if let Some(cek) = found {
            return Ok(cek);
        }
    }
    if let Some(k) = search.fallback {
        return Ok(k);
    }
    Err(match search.unsupported {
        Some(what) => SealError::Unsupported(what),
        None => SealError::WrongKey,
    })
}

fn key_trans(
    key: &rsa::RsaPrivateKey,
    cert: Option<&CertName>,
    ktri: &KeyTransRecipientInfo<'_>,
    key_len: usize,
    options: OpenOptions,
    search: &mut Search,
) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
    let named = named(cert, ktri.rid)?;
    if named == Named::Other {
        return Ok(None);
    }
    let alg = &ktri.key_encryption_algorithm;
    let wrapped = ktri.encrypted_key.as_bytes();
    let mut rng = rand::rng();
    let unwrapped = if alg.algorithm == RSA_ENCRYPTION {
        if !options.allow_rsa_pkcs1v15 {
            // Refused before any decryption: nothing about the padding is learnt.
            search.unsupported =
                Some("RSA PKCS#1 v1.5 key transport (encrypt with RSA-OAEP or to an EC key)");
            return Ok(None);
        }
        let cek = key.decrypt_blinded(&mut rng, rsa::Pkcs1v15Encrypt, wrapped);
        match cek {
            Ok(k) if k.len() == key_len => Some(Zeroizing::new(k)),
            // Go on with a random key (RFC 3218 §2.3.2), so that a bad padding and a bad tag
            // look the same (no padding oracle): at once for the named recipient, and when no
            // certificate names one, unless another recipient info unwraps.
            _ if named == Named::Us => Some(random_key(key_len)?),
            _ => {
                if search.fallback.is_none() {
                    search.fallback = Some(random_key(key_len)?);
                }
                None
            }
        }
    } else if alg.algorithm == ID_RSAES_OAEP {
        let Some(hash) = oaep_hash(alg)? else {
            search.unsupported = Some("RSA-OAEP parameters (label, or different hashes)");
            return Ok(None);
        };
        match oaep_decrypt(key, hash, wrapped) {
            Ok(k) if k.len() == key_len => Some(k),
            _ if named == Named::Us => return Err(SealError::Tampered),
            _ => None,
        }
    } else {
        search.unsupported = Some("key transport algorithm (only RSA PKCS#1 v1.5 and OAEP)");
        return Ok(None);
    };
    Ok(unwrapped)
}

/// The one hash OAEP uses for both the label and MGF1; `None` for combinations not supported.
fn oaep_hash(alg: &AlgorithmIdentifier<'_>) -> Result<Option<DigestAlg>, SealError> {
    let params: Option<OaepParameters> = alg.parameters_as(Tag::Sequence)?;
    let Some(params) = params else {
        return Ok(Some(DigestAlg::Sha1)); // all defaults: SHA-1, MGF1-SHA-1
    };
    if params.label.is_some() {
        return Ok(None);
    }
    let hash = match &params.hash {
        None => Some(DigestAlg::Sha1),
        Some(h) => DigestAlg::from_oid(&h.algorithm),
    };
    let mgf_hash = match &params.mask_gen {
        None => Some(DigestAlg::Sha1),
        Some(m) if m.algorithm == ID_MGF1 => {
            let inner: Option<AlgorithmIdentifier> = m.parameters_as(Tag::Sequence)?;
            match inner {
                None => Some(DigestAlg::Sha1),
                Some(h) => DigestAlg::from_oid(&h.algorithm),
            }
        }
        Some(_) => None,
    };
    Ok(match (hash, mgf_hash) {
        (Some(a), Some(b)) if a == b => Some(a),
        _ => None,
    })
}

fn oaep_decrypt(
    key: &rsa::RsaPrivateKey,
    hash: DigestAlg,
    wrapped: &[u8],
) -> rsa::Result<Zeroizing<Vec<u8>>> {
    use rsa::Oaep;
    let mut rng = rand::rng();
    let k = match hash {
        DigestAlg::Sha1 => key.decrypt_blinded(&mut rng, Oaep::<sha1::Sha1>::new(), wrapped),
        DigestAlg::Sha224 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha224>::new(), wrapped),
        DigestAlg::Sha256 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha256>::new(), wrapped),
        DigestAlg::Sha384 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha384>::new(), wrapped),
        DigestAlg::Sha512 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha512>::new(), wrapped),
    }?;
    Ok(Zeroizing::new(k))
}

fn key_agree(
    key: &p256::SecretKey,
    cert: Option<&CertName>,
    kari: &KeyAgreeRecipientInfo<'_>,
    key_len: usize,
    search: &mut Search,
) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
    let mut candidates = Vec::new();
    for rek in &kari.recipient_encrypted_keys {
        let named = named(cert, rek.rid)?;
        if named != Named::Other {
            candidates.push((named, rek.encrypted_key.as_bytes()));
        }
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    let originator = match kari.originator.tag() {
        Tag::ContextSpecific {
            number: TagNumber(1),
            constructed: true,
        } => decode_body::<OriginatorPublicKey>(kari.originator)
            .map_err(malformed("originator key"))?,
        _ => {
            search.unsupported = Some("key agreement originator (only originatorKey)");
            return Ok(None);
        }
    };
    if originator.algorithm.algorithm != ecdh::ID_EC_PUBLIC_KEY {
        search.unsupported = Some("originator key type (only EC)");
        return Ok(None);
    }
    let point = originator
        .public_key
        .as_bytes()
        .ok_or(SealError::Malformed("originator key"))?;
    let Ok(originator_key) = p256::PublicKey::from_sec1_bytes(point) else {
        search.unsupported = Some("originator key (not a P-256 point)");
        return Ok(None);
    };
    let alg = &kari.key_encryption_algorithm;
    let Some(kdf) = DigestAlg::from_scheme(&alg.algorithm) else {
        search.unsupported = Some("key agreement scheme (only ECDH with an X9.63 KDF)");
        return Ok(None);
    };
    let wrap_alg: Option<AlgorithmIdentifier> = alg.parameters_as(Tag::Sequence)?;
    let Some(wrap) = wrap_alg.and_then(|w| KeyWrap::from_oid(&w.algorithm)) else {
        search.unsupported = Some("key wrap algorithm (only AES key wrap)");
        return Ok(None);
    };
    let shared = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), originator_key.as_affine());
    let ukm = kari.ukm.map(OctetStringRef::as_bytes);
    let kek = ecdh::kek(kdf, wrap, shared.raw_secret_bytes(), ukm)?;
    for (named, wrapped) in candidates {
        match wrap.unwrap(&kek, wrapped) {
            Some(cek) if cek.len() == key_len => return Ok(Some(cek)),
            _ if named == Named::Us => return Err(SealError::Tampered),
            _ => {}
        }
    }
    Ok(None)
}
