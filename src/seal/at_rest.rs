//! Encryption at rest for the spool and quarantine: AES-256-GCM in fixed-size segments (the
//! STREAM construction), with a key per file derived from the gateway's master key.
//!
//! ```text
//! header (43 bytes)
//!   0  8  magic "handoff\0"
//!   8  1  version (1)
//!   9  1  log2 of the segment size (16: 64 KiB)
//!  10  1  key context: 0 = the file id, 1 = an upload (sealed as it arrived, before it had one)
//!  11  1  reserved (0)
//!  12  8  key id (first 8 bytes of SHA-256 of the master key)
//!  20 16  salt (random)
//!  36  7  nonce prefix (random)
//! segments: each 64 KiB of plaintext (the last 0..=64 KiB) + 16-byte GCM tag
//!   key   = HKDF-SHA-256(master key, salt, "handoff at-rest v1" || context)
//!           context = the file id, or "upload" (key context 1)
//!   nonce = prefix(7) || segment counter (u32, big-endian) || last-segment flag (1 byte)
//!   AAD   = the header
//! ```
//! Truncation (the last-segment flag), reordering (the counter), segments moved between files
//! (the per-file key) and header changes (the AAD) all fail authentication. Plaintext never
//! touches disk; the reader decrypts one segment at a time and supports seeking.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::SealError;
use crate::keys::MasterKey;

const MAGIC: &[u8; 8] = b"handoff\0";
const VERSION: u8 = 1;
const SEGMENT_LOG2: u8 = 16;
/// Plaintext bytes per segment.
pub const SEGMENT: usize = 1 << SEGMENT_LOG2;
const TAG: usize = 16;
pub const HEADER: usize = 43;

/// Key-derivation context of an upload sealed as it is written, before it has a file id (its
/// random salt still makes its key its own). Header byte 10 says which context a file uses, so
/// an upload moves into the spool as it is, without being opened and sealed again.
const UPLOAD_CONTEXT: &str = "upload";
const CONTEXT_FILE_ID: u8 = 0;
const CONTEXT_UPLOAD: u8 = 1;
/// Bytes of a file that [`is_sealed_upload`] looks at.
const PREFIX: usize = 20;

/// Whether `file` is an upload sealed by [`AtRestWriter::for_upload`] under `master`: magic,
/// version, segment size, key context and key id all match. A counterpart cannot make an upload
/// look like this without the key id, which never leaves the gateway. Reads at offset 0 without
/// moving the file's position.
pub fn is_sealed_upload(master: &MasterKey, file: &File) -> bool {
    let mut prefix = [0u8; PREFIX];
    file.read_exact_at(&mut prefix, 0).is_ok()
        && &prefix[..8] == MAGIC
        && prefix[8] == VERSION
        && prefix[9] == SEGMENT_LOG2
        && prefix[10..12] == [CONTEXT_UPLOAD, 0]
        && prefix[12..20] == master.id
}

/// The file's key. AES-256-GCM comes from the TLS stack's provider (aws-lc), the fastest
/// implementation at hand; the format is plain GCM, so any implementation opens it.
fn derive(master: &MasterKey, salt: &[u8], file_id: &str) -> Result<LessSafeKey, SealError> {
    let mut info = b"handoff at-rest v1".to_vec();
    info.extend_from_slice(file_id.as_bytes());
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), master.key.as_ref());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&info, okm.as_mut())
        .map_err(|_| SealError::Unsupported("key derivation"))?;
    UnboundKey::new(&AES_256_GCM, okm.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Unsupported("key length"))
}

fn nonce(prefix: &[u8], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Encrypts a stream into the at-rest format. Call [`AtRestWriter::finish`] at the end: the
/// last segment is only written then.
pub struct AtRestWriter<W: Write> {
    inner: W,
    cipher: LessSafeKey,
    header: [u8; HEADER],
    buf: Vec<u8>,
    counter: u32,
}

impl<W: Write> AtRestWriter<W> {
    /// A writer for the file `file_id`.
    pub fn new(master: &MasterKey, file_id: &str, inner: W) -> Result<AtRestWriter<W>, SealError> {
        AtRestWriter::with_context(master, CONTEXT_FILE_ID, file_id, inner)
    }

    /// A writer for an upload as it arrives, before it has a file id; the spool reads it under
    /// any file id it is given later.
    pub fn for_upload(master: &MasterKey, inner: W) -> Result<AtRestWriter<W>, SealError> {
        AtRestWriter::with_context(master, CONTEXT_UPLOAD, UPLOAD_CONTEXT, inner)
    }

    fn with_context(
        master: &MasterKey,
        kind: u8,
        context: &str,
        mut inner: W,
    ) -> Result<AtRestWriter<W>, SealError> {
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = SEGMENT_LOG2;
        header[10] = kind;
        header[12..20].copy_from_slice(&master.id);
        getrandom::fill(&mut header[20..HEADER])
            .map_err(|_| SealError::Io(io::Error::other("random source failed")))?;
        let cipher = derive(master, &header[20..36], context)?;
        inner.write_all(&header)?;
        Ok(AtRestWriter {
            inner,
            cipher,
            header,
            buf: Vec::with_capacity(SEGMENT + TAG),
            counter: 0,
        })
    }

    fn seal_segment(&mut self, last: bool) -> io::Result<()> {
        let n = nonce(&self.header[36..HEADER], self.counter, last);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(&self.header),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("segment encryption failed"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("file too large for the at-rest format"))?;
        Ok(())
    }

    /// Seals the last segment and returns the inner writer.
    pub fn finish(mut self) -> Result<W, SealError> {
        self.seal_segment(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for AtRestWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed as a middle segment only once more data shows it is not last.
        if self.buf.len() == SEGMENT {
            self.seal_segment(false)?;
        }
        let n = data.len().min(SEGMENT - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The number of segments and the plaintext length of a file of `total` bytes in this format;
/// `None` if no such file has that length.
fn segments_of(total: u64) -> Option<(u64, u64)> {
    let body = total.checked_sub(HEADER as u64)?;
    let seg_ct = (SEGMENT + TAG) as u64;
    // Every segment but the last is full; the last holds 0..=SEGMENT bytes.
    let segments = body.div_ceil(seg_ct).max(1);
    let last_ct = body.checked_sub((segments - 1) * seg_ct)?;
    let last_plain = last_ct.checked_sub(TAG as u64)?;
    Some((segments, (segments - 1) * SEGMENT as u64 + last_plain))
}

/// The plaintext length of a file of `total` bytes in this format.
pub fn plaintext_len(total: u64) -> Option<u64> {
    segments_of(total).map(|(_, plain)| plain)
}

/// Decrypts the at-rest format with random access.
pub struct AtRestReader<R: Read + Seek> {
    inner: R,
    cipher: LessSafeKey,
    header: [u8; HEADER],
    segments: u64,
    plain_len: u64,
    pos: u64,
    /// The decrypted segment `cached.0`, if any.
    cached: Option<(u64, Zeroizing<Vec<u8>>)>,
    /// Where `inner` stands, when known.
    inner_pos: Option<u64>,
}

fn invalid(e: SealError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read + Seek> AtRestReader<R> {
    pub fn new(
        master: &MasterKey,
        file_id: &str,
        mut inner: R,
    ) -> Result<AtRestReader<R>, SealError> {
        let total = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        let mut header = [0u8; HEADER];
        if total < HEADER as u64 {
            return Err(SealError::Truncated);
        }
        inner.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Err(SealError::Malformed("not a handoff at-rest file"));
        }
        if header[8] != VERSION || header[9] != SEGMENT_LOG2 || header[11] != 0 {
            return Err(SealError::Unsupported("at-rest format version"));
        }
        let context = match header[10] {
            CONTEXT_FILE_ID => file_id,
            CONTEXT_UPLOAD => UPLOAD_CONTEXT,
            _ => return Err(SealError::Unsupported("at-rest key context")),
        };
        if header[12..20] != master.id {
            return Err(SealError::WrongKey);
        }
        let (segments, plain_len) = segments_of(total).ok_or(SealError::Truncated)?;
        let cipher = derive(master, &header[20..36], context)?;
        let mut reader = AtRestReader {
            inner,
            cipher,
            header,
            segments,
            plain_len,
            pos: 0,
            cached: None,
            inner_pos: None,
        };
        // Authenticate the last segment now: a truncated file is refused before any use.
        reader.segment(segments - 1)?;
        Ok(reader)
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.plain_len
    }

    pub fn is_empty(&self) -> bool {
        self.plain_len == 0
    }

    fn segment(&mut self, index: u64) -> Result<(), SealError> {
        if self.cached.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        let seg_ct = (SEGMENT + TAG) as u64;
        let at = HEADER as u64 + index * seg_ct;
        // Sequential reads need no seek: a seek would throw away a buffered reader's buffer
        // and read every segment twice.
        if self.inner_pos != Some(at) {
            self.inner_pos = None;
            self.inner.seek(SeekFrom::Start(at))?;
        }
        let last = index + 1 == self.segments;
        let len = if last {
            (self.plain_len - index * SEGMENT as u64) as usize + TAG
        } else {
            SEGMENT + TAG
        };
        // The previous segment's buffer is reused (zeroised on drop).
        let mut buf = self
            .cached
            .take()
            .map(|(_, b)| b)
            .unwrap_or_else(|| Zeroizing::new(Vec::with_capacity(SEGMENT + TAG)));
        buf.resize(len, 0);
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                SealError::Truncated
            } else {
                SealError::Io(e)
            }
        })?;
        self.inner_pos = Some(at + len as u64);
        let counter =
            u32::try_from(index).map_err(|_| SealError::Malformed("too many segments"))?;
        // Only a last segment is tried a second time (as a middle one, to tell a cut file from
        // a changed one), so only it keeps a copy of what was read.
        let mut kept = last.then(|| Zeroizing::new(buf.to_vec()));
        let open = |nonce: [u8; 12], sealed: &mut [u8]| {
            self.cipher
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&self.header),
                    sealed,
                )
                .is_ok()
        };
        let prefix = &self.header[36..HEADER];
        if !open(nonce(prefix, counter, last), &mut buf) {
            // A last segment that authenticates as a middle one: the file was cut short.
            let cut = kept
                .as_mut()
                .is_some_and(|probe| open(nonce(prefix, counter, false), probe));
            return Err(if cut {
                SealError::Truncated
            } else {
                SealError::Tampered
            });
        }
        buf.truncate(len - TAG);
        self.cached = Some((index, buf));
        Ok(())
    }
}

impl<R: Read + Seek> Read for AtRestReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.plain_len || out.is_empty() {
            return Ok(0);
        }
        let index = self.pos / SEGMENT as u64;
        self.segment(index).map_err(invalid)?;
        let Some((_, plain)) = &self.cached else {
            return Ok(0);
        };
        let offset = (self.pos - index * SEGMENT as u64) as usize;
        let n = out.len().min(plain.len() - offset);
        out[..n].copy_from_slice(&plain[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for AtRestReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.plain_len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        self.pos = target;
        Ok(target)
    }
}

/// Encrypts all of `input` into `output`; returns the plaintext length.
pub fn seal<R: Read, W: Write>(
    master: &MasterKey,
    file_id: &str,
    mut input: R,
    output: W,
) -> Result<u64, SealError> {
    let mut w = AtRestWriter::new(master, file_id, output)?;
    let n = io::copy(&mut input, &mut w)?;
    w.finish()?;
    Ok(n)
}

/// Decrypts all of `input` into `output`; returns the plaintext length.
pub fn open<R: Read + Seek, W: Write>(
    master: &MasterKey,
    file_id: &str,
    input: R,
    mut output: W,
) -> Result<u64, SealError> {
    let mut r = AtRestReader::new(master, file_id, input)?;
    io::copy(&mut r, &mut output).map_err(SealError::from_io)
}
