//! The zip container, read defensively: every entry name, size and flag is checked against the
//! limits from the central directory before a byte is decompressed, the local headers must
//! agree with the central directory, and entries are then read through a bounded reader that
//! stops at the declared size. Nothing is unpacked to disk.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};

use zip::CompressionMethod;
use zip::ZipArchive;

use crate::events::Finding;
use crate::validate::finding::Rule;

/// Bounds on what an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: u64,
    pub max_entry_size: u64,
    pub max_total_size: u64,
    /// Largest uncompressed/compressed ratio allowed for an entry above [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

impl From<&crate::config::ArchiveLimits> for Limits {
    fn from(c: &crate::config::ArchiveLimits) -> Limits {
        Limits {
            max_entries: c.max_entries,
            max_entry_size: c.max_entry_size.bytes(),
            max_total_size: c.max_total_size.bytes(),
            max_ratio: c.max_ratio,
        }
    }
}

/// Entries smaller than this are exempt from the ratio limit: a short XML file of repeated
/// tags compresses well without being a bomb.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// Extensions of archives that must not be nested inside one.
const ARCHIVE_EXTENSIONS: &[&str] = &[".zip", ".jar", ".gz", ".tgz", ".7z", ".rar", ".lzh", ".xz"];

/// One entry of the central directory, after the name checks.
#[derive(Debug, Clone)]
pub struct Entry {
    index: usize,
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
}

/// An archive whose directory passed the checks.
pub struct Archive<R: Read + Seek> {
    zip: ZipArchive<R>,
    entries: Vec<Entry>,
    limits: Limits,
    read_total: u64,
}

impl<R: Read + Seek> Archive<R> {
    /// Reads and checks the central directory. On failure, every directory-level finding.
    pub fn open(mut src: R, limits: Limits) -> Result<Archive<R>, Vec<Finding>> {
        match declared_entry_count(&mut src) {
            Ok(n) if n > limits.max_entries => {
                return Err(vec![Finding::new(
                    Rule::ZipTooManyEntries,
                    format!(
                        "the archive declares {n} entries; at most {} are accepted",
                        limits.max_entries
                    ),
                )]);
            }
            Ok(_) => {}
            Err(e) => return Err(vec![unreadable(e)]),
        }
        let mut zip = ZipArchive::new(src).map_err(|e| vec![unreadable(e)])?;
        let mut findings = Vec::new();
        let mut entries = Vec::with_capacity(zip.len());
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut total: u64 = 0;
        for index in 0..zip.len() {
            let file = match zip.by_index_raw(index) {
                Ok(f) => f,
                Err(e) => {
                    findings.push(unreadable(e));
                    break;
                }
            };
            let Ok(name) = std::str::from_utf8(file.name_raw()).map(str::to_owned) else {
                findings.push(Finding::new(
                    Rule::ZipBadName,
                    format!(
                        "entry {} has a name that is not UTF-8: {}",
                        index + 1,
                        String::from_utf8_lossy(file.name_raw())
                    ),
                ));
                continue;
            };
            if let Err(r) = check_name(&name) {
                findings.push(r.in_file(name));
                continue;
            }
            if file.is_symlink() {
                findings.push(
                    Finding::new(
                        Rule::ZipTraversal,
                        "a symbolic link is not accepted in an archive",
                    )
                    .in_file(&name),
                );
                continue;
            }
            let folded = name.to_lowercase();
            if let Some(first) = seen.get(&folded) {
                let message = if *first == name {
                    "the archive holds this name twice".to_owned()
                } else {
                    format!("the name differs from {first} only in letter case")
                };
                findings.push(Finding::new(Rule::ZipDuplicate, message).in_file(&name));
                continue;
            }
            seen.insert(folded, name.clone());
            let lower = name.to_ascii_lowercase();
            if ARCHIVE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
                findings.push(
                    Finding::new(
                        Rule::ZipNested,
                        "archives inside the archive are not accepted",
                    )
                    .in_file(&name),
                );
            }
            if file.encrypted() {
                findings.push(
                    Finding::new(
                        Rule::ZipEncrypted,
                        "encrypted entries are not accepted; the transfer is already encrypted",
                    )
                    .in_file(&name),
                );
            }
            if !matches!(
                file.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            ) {
                findings.push(
                    Finding::new(
                        Rule::ZipMethod,
                        format!(
                            "compression method {:?} is not accepted; use deflate or none",
                            file.compression()
                        ),
                    )
                    .in_file(&name),
                );
            }
            let size = file.size();
            let compressed = file.compressed_size();
            if size > limits.max_entry_size {
                findings.push(
                    Finding::new(
                        Rule::ZipEntryTooLarge,
                        format!(
                            "the entry unpacks to {size} bytes; at most {} are accepted",
                            limits.max_entry_size
                        ),
                    )
                    .in_file(&name),
                );
            } else if size > RATIO_FLOOR && size / compressed.max(1) > limits.max_ratio {
                findings.push(
                    Finding::new(
                        Rule::ZipRatio,
                        format!(
                            "the entry unpacks from {compressed} to {size} bytes, a ratio over \
                             {}: refused as a possible zip bomb",
                            limits.max_ratio
                        ),
                    )
                    .in_file(&name),
                );
            }
            if size <= limits.max_entry_size {
                total = total.saturating_add(size);
            }
            entries.push(Entry {
                index,
                is_dir: file.is_dir(),
                name,
                size,
            });
        }
        if total > limits.max_total_size {
            findings.push(Finding::new(
                Rule::ZipTotalTooLarge,
                format!(
                    "the archive unpacks to {total} bytes; at most {} are accepted",
                    limits.max_total_size
                ),
            ));
        }
        if findings.is_empty()
            && let Err(e) = zip.validate_header_consistency()
        {
            findings.push(Finding::new(
                Rule::ZipHeaderMismatch,
                format!("the local headers do not agree with the central directory: {e}"),
            ));
        }
        if findings.is_empty() {
            Ok(Archive {
                zip,
                entries,
                limits,
                read_total: 0,
            })
        } else {
            Err(findings)
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Decompresses one entry into memory (bounded by the per-entry limit), verifying its
    /// CRC and declared size.
    pub fn read(&mut self, entry: &Entry) -> Result<Vec<u8>, Finding> {
        let corrupt =
            |message: String| Finding::new(Rule::ZipCorrupt, message).in_file(&entry.name);
        let file = self
            .zip
            .by_index(entry.index)
            .map_err(|e| corrupt(format!("the entry cannot be read: {e}")))?;
        let cap = entry.size.min(self.limits.max_entry_size);
        let mut data = Vec::with_capacity(usize::try_from(cap.min(1 << 20)).unwrap_or(0));
        let mut bounded = file.take(cap + 1);
        bounded
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("the entry cannot be decompressed: {e}")))?;
        let got = data.len() as u64;
        if got > entry.size {
            return Err(corrupt(format!(
                "the entry holds more data than the {} bytes its header declares",
                entry.size
            )));
        }
        if got < entry.size {
            return Err(corrupt(format!(
                "the entry holds {got} bytes, fewer than the {} its header declares",
                entry.size
            )));
        }
        // The CRC is only checked once the reader has seen the end of the data.
        let mut rest = [0u8; 1];
        match bounded.into_inner().read(&mut rest) {
            Ok(0) => {}
            Ok(_) => {
                return Err(corrupt(format!(
                    "the entry holds more data than the {} bytes its header declares",
                    entry.size
                )));
            }
            Err(e) => return Err(corrupt(format!("the entry is damaged: {e}"))),
        }
        self.read_total += got;
        if self.read_total > self.limits.max_total_size {
            return Err(Finding::new(
                Rule::ZipTotalTooLarge,
                format!(
                    "the archive unpacks to more than {} bytes",
                    self.limits.max_total_size
                ),
            ));
        }
        if data.starts_with(b"PK\x03\x04") {
            return Err(Finding::new(
                Rule::ZipNested,
                "the entry is itself a zip archive; nested archives are not accepted",
            )
            .in_file(&entry.name));
        }
        Ok(data)
    }
}

fn unreadable(e: impl std::fmt::Display) -> Finding {
    Finding::new(
        Rule::ZipUnreadable,
        format!("the file is not a readable zip archive: {e}"),
    )
}

/// The rules for an entry name: relative, forward slashes, no `..`, no control characters.
fn check_name(name: &str) -> Result<(), Finding> {
    if name.is_empty() {
        return Err(Finding::new(Rule::ZipBadName, "an entry has an empty name"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Finding::new(
            Rule::ZipBadName,
            format!("the name holds the control character {:?}", c),
        ));
    }
    let bytes = name.as_bytes();
    if name.starts_with('/')
        || name.contains('\\')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
    {
        return Err(Finding::new(
            Rule::ZipTraversal,
            "the name is absolute or uses backslashes or a drive letter",
        ));
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    for part in body.split('/') {
        match part {
            ".." => {
                return Err(Finding::new(
                    Rule::ZipTraversal,
                    "the name climbs out of the archive with ..",
                ));
            }
            "" | "." => {
                return Err(Finding::new(
                    Rule::ZipBadName,
                    "the name has an empty or . component",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The number of entries the end-of-central-directory record declares, read before the
/// directory itself so that a huge declared count is refused without allocating for it.
fn declared_entry_count<R: Read + Seek>(src: &mut R) -> io::Result<u64> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const LOCATOR: &[u8] = b"PK\x06\x07";
    const EOCD64: &[u8] = b"PK\x06\x06";
    let len = src.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + u16::MAX as u64);
    src.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    src.read_exact(&mut tail)?;
    let at = tail
        .windows(4)
        .rposition(|w| w == EOCD)
        .filter(|&p| p + 22 <= tail.len())
        .ok_or_else(|| io::Error::other("no end of central directory record"))?;
    let count = u16::from_le_bytes([tail[at + 10], tail[at + 11]]);
    if count != u16::MAX {
        return Ok(u64::from(count));
    }
    // Zip64: the locator sits just before the end record and points at the zip64 record.
    let locator = at
        .checked_sub(20)
        .map(|l| &tail[l..l + 20])
        .filter(|l| l.starts_with(LOCATOR))
        .ok_or_else(|| io::Error::other("zip64 locator missing"))?;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&locator[8..16]);
    src.seek(SeekFrom::Start(u64::from_le_bytes(offset)))?;
    let mut record = [0u8; 56];
    src.read_exact(&mut record)?;
    if !record.starts_with(EOCD64) {
        return Err(io::Error::other(
            "zip64 end of central directory record missing",
        ));
    }
    let mut total = [0u8; 8];
    total.copy_from_slice(&record[32..40]);
    Ok(u64::from_le_bytes(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_traversal() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "C:x", "a\\b"] {
            assert_eq!(check_name(bad).unwrap_err().rule, "zip.traversal", "{bad}");
        }
        for bad in ["a//b", "./a", "a\0b", "a\nb", ""] {
            assert_eq!(check_name(bad).unwrap_err().rule, "zip.bad-name", "{bad:?}");
        }
        for good in ["index.xml", "DATA/", "DATA/h1.xml", "XSD/a..b.xsd"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
