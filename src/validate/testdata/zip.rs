//! The zip container, written by hand rather than with a zip library, because the hostile
//! archives (duplicate names, headers that disagree, lying sizes, a 10 GiB bomb) are exactly
//! what a well-behaved library refuses to write.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress};

use super::Rng;

/// Zeros are compressed in chunks of this size, each flushed to a byte boundary, so that one
/// compressed chunk repeated makes a valid stream of any multiple of it.
pub(super) const ZERO_CHUNK: u64 = 1 << 20;

pub(super) enum Body {
    Bytes(Vec<u8>),
    /// This many zeros, compressed as repeated chunks without holding them.
    Zeros(u64),
    /// This many bytes of random digits (compressing about 2:1), made when written.
    Digits(u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Packing {
    Deflate,
    /// Another method number, with the bytes stored as they are.
    Raw(u16),
}

pub(super) struct Entry {
    name: String,
    /// A different name in the local header than in the central directory.
    pub(super) local_name: Option<String>,
    body: Body,
    pub(super) method: Packing,
    pub(super) encrypted: bool,
    pub(super) bad_crc: bool,
    /// A different uncompressed size in both headers than the data has.
    pub(super) declared_size: Option<u64>,
}

impl Entry {
    pub(super) fn new(name: &str, body: Body) -> Entry {
        Entry {
            name: name.to_owned(),
            local_name: None,
            body,
            method: Packing::Deflate,
            encrypted: false,
            bad_crc: false,
            declared_size: None,
        }
    }
}

#[derive(Default)]
pub(super) struct Plan {
    pub(super) entries: Vec<Entry>,
    /// Cut the archive short, so that it has no end record.
    pub(super) truncate: bool,
}

impl Plan {
    pub(super) fn bytes(&mut self, name: &str, data: Vec<u8>) {
        self.entries.push(Entry::new(name, Body::Bytes(data)));
    }

    pub(super) fn dir(&mut self, name: &str) {
        let mut e = Entry::new(name, Body::Bytes(Vec::new()));
        e.method = Packing::Raw(0);
        self.entries.push(e);
    }

    pub(super) fn finish<W: Write>(self, out: W) -> io::Result<W> {
        let mut zip = ZipOut {
            out: Counting { inner: out, pos: 0 },
            central: Vec::new(),
            count: 0,
        };
        let truncate = self.truncate;
        for entry in self.entries {
            zip.add(entry)?;
        }
        if truncate {
            return Ok(zip.out.inner);
        }
        zip.finish()
    }
}

struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct ZipOut<W: Write> {
    out: Counting<W>,
    central: Vec<u8>,
    count: u64,
}

/// DOS date of 2026-11-20, midnight: the stamp of every generated entry.
const DOS_DATE: u16 = ((2026 - 1980) << 9) | (11 << 5) | 20;
const FLAG_UTF8: u16 = 1 << 11;
const MAX32: u64 = 0xFFFF_FFFF;

fn deflate_all(data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .expect("deflate of memory cannot fail");
        let done = c.total_in() as usize == data.len();
        match flush {
            FlushCompress::Finish if status == flate2::Status::StreamEnd => return out,
            FlushCompress::Finish => {}
            _ if done && out.capacity() > out.len() => return out,
            _ => {}
        }
    }
}

impl<W: Write> ZipOut<W> {
    fn add(&mut self, entry: Entry) -> io::Result<()> {
        let offset = self.out.pos;
        let digits;
        let body = match &entry.body {
            Body::Digits(n, seed) => {
                let mut rng = Rng(*seed | 1);
                let mut text = Vec::with_capacity(*n as usize + 21);
                while (text.len() as u64) < *n {
                    text.extend_from_slice(format!("{:020}\n", rng.next()).as_bytes());
                }
                text.truncate(*n as usize);
                digits = Body::Bytes(text);
                &digits
            }
            other => other,
        };
        let (crc, size, data, zero_chunks) = match body {
            Body::Digits(..) => unreachable!("made into bytes above"),
            Body::Bytes(b) => {
                let crc = crc32fast::hash(b);
                let data = match entry.method {
                    Packing::Deflate if !b.is_empty() => deflate_all(b, FlushCompress::Finish),
                    Packing::Deflate => vec![0x03, 0x00],
                    Packing::Raw(_) => b.clone(),
                };
                (crc, b.len() as u64, data, 0)
            }
            Body::Zeros(n) => {
                let chunk = deflate_all(&vec![0u8; ZERO_CHUNK as usize], FlushCompress::Full);
                let mut one = crc32fast::Hasher::new();
                one.update(&vec![0u8; ZERO_CHUNK as usize]);
                let mut all = crc32fast::Hasher::new();
                for _ in 0..n / ZERO_CHUNK {
                    all.combine(&one);
                }
                (all.finalize(), *n, chunk, n / ZERO_CHUNK)
            }
        };
        let compressed = if zero_chunks > 0 {
            data.len() as u64 * zero_chunks + 2
        } else {
            data.len() as u64
        };
        let crc = if entry.bad_crc { !crc } else { crc };
        let size = entry.declared_size.unwrap_or(size);
        let method = match entry.method {
            Packing::Deflate => 8,
            Packing::Raw(m) => m,
        };
        let zip64 = size >= MAX32 || compressed >= MAX32 || offset >= MAX32;
        let flags = FLAG_UTF8 | u16::from(entry.encrypted);
        let version: u16 = if zip64 { 45 } else { 20 };
        let local_name = entry.local_name.as_deref().unwrap_or(&entry.name);

        let mut local = Vec::new();
        local.extend_from_slice(b"PK\x03\x04");
        put16(&mut local, version);
        put16(&mut local, flags);
        put16(&mut local, method);
        put16(&mut local, 0);
        put16(&mut local, DOS_DATE);
        put32(&mut local, crc);
        let mut extra = Vec::new();
        if zip64 {
            put32(&mut local, MAX32 as u32);
            put32(&mut local, MAX32 as u32);
            put16(&mut extra, 1);
            put16(&mut extra, 16);
            put64(&mut extra, size);
            put64(&mut extra, compressed);
        } else {
            put32(&mut local, compressed as u32);
            put32(&mut local, size as u32);
        }
        put16(&mut local, local_name.len() as u16);
        put16(&mut local, extra.len() as u16);
        local.extend_from_slice(local_name.as_bytes());
        local.extend_from_slice(&extra);
        self.out.write_all(&local)?;
        if zero_chunks > 0 {
            for _ in 0..zero_chunks {
                self.out.write_all(&data)?;
            }
            self.out.write_all(&[0x03, 0x00])?;
        } else {
            self.out.write_all(&data)?;
        }

        let is_dir = entry.name.ends_with('/');
        let c = &mut self.central;
        c.extend_from_slice(b"PK\x01\x02");
        put16(c, 0x031E);
        put16(c, version);
        put16(c, flags);
        put16(c, method);
        put16(c, 0);
        put16(c, DOS_DATE);
        put32(c, crc);
        let mut extra = Vec::new();
        if zip64 {
            put32(c, MAX32 as u32);
            put32(c, MAX32 as u32);
            put16(&mut extra, 1);
            put16(&mut extra, 24);
            put64(&mut extra, size);
            put64(&mut extra, compressed);
            put64(&mut extra, offset);
        } else {
            put32(c, compressed as u32);
            put32(c, size as u32);
        }
        put16(c, entry.name.len() as u16);
        put16(c, extra.len() as u16);
        put16(c, 0);
        put16(c, 0);
        put16(c, 0);
        let mode: u32 = if is_dir { 0o040755 } else { 0o100644 };
        put32(c, (mode << 16) | u32::from(is_dir) << 4);
        put32(c, if zip64 { MAX32 as u32 } else { offset as u32 });
        c.extend_from_slice(entry.name.as_bytes());
        c.extend_from_slice(&extra);
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        let cd_offset = self.out.pos;
        let cd_size = self.central.len() as u64;
        self.out.write_all(&std::mem::take(&mut self.central))?;
        let zip64 = self.count >= 0xFFFF || cd_offset >= MAX32 || cd_size >= MAX32;
        let mut tail = Vec::new();
        if zip64 {
            let record = self.out.pos;
            tail.extend_from_slice(b"PK\x06\x06");
            put64(&mut tail, 44);
            put16(&mut tail, 45);
            put16(&mut tail, 45);
            put32(&mut tail, 0);
            put32(&mut tail, 0);
            put64(&mut tail, self.count);
            put64(&mut tail, self.count);
            put64(&mut tail, cd_size);
            put64(&mut tail, cd_offset);
            tail.extend_from_slice(b"PK\x06\x07");
            put32(&mut tail, 0);
            put64(&mut tail, record);
            put32(&mut tail, 1);
        }
        tail.extend_from_slice(b"PK\x05\x06");
        put16(&mut tail, 0);
        put16(&mut tail, 0);
        let count16 = if zip64 { 0xFFFF } else { self.count as u16 };
        put16(&mut tail, count16);
        put16(&mut tail, count16);
        put32(&mut tail, cd_size.min(MAX32) as u32);
        put32(
            &mut tail,
            if zip64 {
                MAX32 as u32
            } else {
                cd_offset as u32
            },
        );
        put16(&mut tail, 0);
        self.out.write_all(&tail)?;
        self.out.flush()?;
        Ok(self.out.inner)
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
