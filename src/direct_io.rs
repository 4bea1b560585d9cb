//! Writing large files front to back past the page cache (`O_DIRECT`).
//!
//! The gateway writes most bytes once and reads them once, later: an upload, its spool copy, the
//! sealed file in an outbox. Through the page cache every byte costs a kernel copy into a freshly
//! allocated page and the bookkeeping of a dirty page, and on the transports that cost was what
//! bounded throughput. Direct writes hand whole aligned blocks to the disk instead. Only the part
//! of a file past `DIRECT_FROM` is written this way, so small files (most checkup archives)
//! stay cached for the stage that reads them next; the unaligned tail goes through the page
//! cache at the end. Where the file system refuses direct I/O the file is simply written
//! through the page cache.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Alignment of offsets, lengths and memory that direct I/O requires (a page; also a multiple
/// of every common logical block size).
const ALIGN: u64 = 4096;
/// Bytes gathered before one write.
const CHUNK: usize = 1 << 20;
/// Files are written through the page cache up to this offset, directly after it.
const DIRECT_FROM: u64 = 8 << 20;

/// Sequential bytes on their way to a file, gathered into aligned chunks, and where they belong.
struct DirectWriter {
    /// Allocated once with room for `ALIGN` + `CHUNK` and never grown, so the pending bytes,
    /// from `start`, stay at an aligned address; only the pages used are touched.
    buf: Vec<u8>,
    start: usize,
    /// File offset of the first pending byte; a multiple of `ALIGN`.
    offset: u64,
    /// Chunks from this offset on are written directly; `u64::MAX` once direct I/O is refused.
    direct_from: u64,
    direct: bool,
}

impl DirectWriter {
    /// A writer of a file from its start that turns to direct I/O at [`DIRECT_FROM`].
    fn new() -> DirectWriter {
        let mut buf = Vec::<u8>::with_capacity(CHUNK + ALIGN as usize);
        let start = buf.as_ptr().align_offset(ALIGN as usize);
        buf.resize(start, 0);
        DirectWriter {
            buf,
            start,
            offset: 0,
            direct_from: DIRECT_FROM,
            direct: false,
        }
    }

    /// The file offset the next byte belongs at.
    fn next_offset(&self) -> u64 {
        self.offset + self.pending() as u64
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends at [`DirectWriter::next_offset`].
    fn write(&mut self, file: &File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (CHUNK - self.pending()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending() == CHUNK {
                self.write_chunk(file)?;
            }
        }
        Ok(())
    }

    fn write_chunk(&mut self, file: &File) -> io::Result<()> {
        if !self.direct && self.offset >= self.direct_from {
            self.direct = set_direct(file, true).is_ok();
            if !self.direct {
                self.direct_from = u64::MAX;
            }
        }
        let chunk = &self.buf[self.start..];
        match file.write_all_at(chunk, self.offset) {
            // A file system that takes the flag but not the write: on through the page cache.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(file, false)?;
                self.direct = false;
                self.direct_from = u64::MAX;
                file.write_all_at(chunk, self.offset)?;
            }
            r => r?,
        }
        self.offset += CHUNK as u64;
        self.buf.truncate(self.start);
        Ok(())
    }

    /// Writes the pending bytes (their length need not be aligned) through the page cache and
    /// leaves the file without direct I/O, so its later writes and its fsync are ordinary ones.
    fn finish(&mut self, file: &File) -> io::Result<()> {
        if self.direct {
            set_direct(file, false)?;
            self.direct = false;
        }
        file.write_all_at(&self.buf[self.start..], self.offset)?;
        self.offset = self.next_offset();
        self.buf.truncate(self.start);
        Ok(())
    }
}

/// A new file written front to back, as the spool writes its files.
pub struct SequentialFile {
    file: File,
    writer: DirectWriter,
}

impl SequentialFile {
    pub fn new(file: File) -> SequentialFile {
        SequentialFile {
            file,
            writer: DirectWriter::new(),
        }
    }

    /// Writes what is pending and gives the file back, for its fsync.
    pub fn finish(mut self) -> io::Result<File> {
        self.writer.finish(&self.file)?;
        Ok(self.file)
    }
}

impl io::Write for SequentialFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.writer.write(&self.file, data)?;
        Ok(data.len())
    }

    /// Bytes are written in whole chunks and at [`SequentialFile::finish`]; a flush alone does
    /// not write a partial chunk.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Turns direct I/O (`O_DIRECT`) on or off for later reads and writes of an open file.
///
/// The one system call of this module, which std does not wrap (fcntl `F_SETFL`).
#[allow(unsafe_code)]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let check = |ret: libc::c_int| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    };
    // SAFETY: `file` is borrowed for the call, so `fd` is open; F_GETFL takes no argument and
    // only reads the descriptor's status flags.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: `fd` is open as above; F_SETFL takes an integer and changes only the status
    // flags of the open file, no memory of ours.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect()
    }

    #[test]
    fn sequential_files_small_and_large_read_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        // Under the threshold, at a chunk boundary past it, and with an unaligned tail past it.
        for len in [1, 100_000, (9 << 20) as usize, (20 << 20) + 777] {
            let data = pattern(len);
            let path = dir.path().join(format!("f{len}"));
            let mut f = SequentialFile::new(File::create(&path).unwrap());
            for piece in data.chunks(12_345) {
                f.write_all(piece).unwrap();
            }
            f.finish().unwrap().sync_all().unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "length {len}");
        }
    }
}
