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

mod cipher;
mod key;
mod recipients;

use std::io::{Read, Seek, SeekFrom, Write};

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, DecodeValue, Reader, SliceReader, Tag, Tagged};
use zeroize::Zeroizing;

use super::SealError;
use super::ber::{BerReader, Head};
use super::cms::ID_AUTH_ENVELOPED_DATA;
use cipher::{ContentCipher, Decrypt};
pub use key::OpeningKey;
use recipients::content_key;

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");

/// Largest recipient-info set, algorithm identifier or MAC read whole.
const SMALL_LIMIT: u64 = 1 << 20;
/// The buffer the content streams through.
const CHUNK: usize = 256 << 10;

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

/// How many bytes of a file [`looks_like_cms`] needs: a ContentInfo's header and content type.
pub const SNIFF_LEN: usize = 32;

/// Whether a file that starts with `prefix` is a CMS message of a kind [`open`] reads (a DER
/// or BER ContentInfo of AuthEnvelopedData or EnvelopedData), rather than, say, a zip archive.
/// Only the start is looked at: whether it opens is for [`open`] to find.
pub fn looks_like_cms(prefix: &[u8]) -> bool {
    let mut r = BerReader::new(prefix);
    if r.expect(0x30, "ContentInfo").is_err() {
        return false;
    }
    match r.element(0x06, 64, "content type").map(|der| oid(&der)) {
        Ok(Ok(t)) => t == ID_AUTH_ENVELOPED_DATA || t == ID_ENVELOPED_DATA,
        _ => false,
    }
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
