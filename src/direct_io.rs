//! Writing the sequential body of a large upload past the page cache (`O_DIRECT`).
//!
//! A large upload is written once and read once, later, by the pipeline. Through the page cache
//! every byte costs a kernel copy into a freshly allocated page and the bookkeeping of a dirty
//! page, and that cost, paid on the transport's thread, was what bounded upload throughput.
//! Direct writes hand whole aligned blocks to the disk instead. Only the part of an upload past
//! [`DIRECT_FROM`] is written this way, so small archives stay cached for the pipeline, and the
//! unaligned tail goes through the page cache at the end. Where the file system refuses direct
//! I/O the upload simply stays buffered.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::fsops;

/// Alignment of offsets, lengths and memory that direct I/O requires (a page; also a multiple
/// of every common logical block size).
pub const ALIGN: u64 = 4096;
/// Bytes gathered before one direct write.
const CHUNK: usize = 1 << 20;
/// Uploads smaller than this are written through the page cache only.
pub const DIRECT_FROM: u64 = 8 << 20;

/// The aligned buffer of bytes not yet written, and where they belong in the file.
#[derive(Debug)]
pub struct DirectWriter {
    /// Over-allocated by `ALIGN` so an aligned window of `CHUNK` bytes fits at `start`.
    buf: Vec<u8>,
    start: usize,
    pending: usize,
    /// File offset of the first pending byte; a multiple of `ALIGN`.
    offset: u64,
}

impl DirectWriter {
    /// Switches `file` to direct I/O for writes from `offset` (a multiple of [`ALIGN`]). `None`
    /// where the file system does not support it.
    pub fn begin(file: &File, offset: u64) -> Option<DirectWriter> {
        debug_assert_eq!(offset % ALIGN, 0);
        fsops::set_direct(file, true).ok()?;
        let buf = vec![0u8; CHUNK + ALIGN as usize];
        let start = buf.as_ptr().align_offset(ALIGN as usize);
        Some(DirectWriter {
            buf,
            start,
            pending: 0,
            offset,
        })
    }

    /// The file offset the next sequential byte belongs at.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.pending as u64
    }

    /// Appends at [`DirectWriter::next_offset`]. On a file system that turns out to refuse
    /// direct writes, the writer writes what it holds through the page cache and gives up
    /// direct I/O: the caller goes on without it (`Ok(false)`).
    pub fn write(&mut self, file: &File, mut data: &[u8]) -> io::Result<bool> {
        while !data.is_empty() {
            let n = (CHUNK - self.pending).min(data.len());
            let at = self.start + self.pending;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.pending += n;
            data = &data[n..];
            if self.pending == CHUNK {
                let chunk = &self.buf[self.start..self.start + CHUNK];
                match file.write_all_at(chunk, self.offset) {
                    Ok(()) => {
                        self.offset += CHUNK as u64;
                        self.pending = 0;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.finish(file)?;
                        file.write_all_at(data, self.next_offset())?;
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(true)
    }

    /// Leaves direct I/O and writes the pending bytes through the page cache (their length need
    /// not be aligned). The file's later writes and its fsync are ordinary ones.
    pub fn finish(&mut self, file: &File) -> io::Result<()> {
        fsops::set_direct(file, false)?;
        let tail = &self.buf[self.start..self.start + self.pending];
        file.write_all_at(tail, self.offset)?;
        self.offset += self.pending as u64;
        self.pending = 0;
        Ok(())
    }
}
