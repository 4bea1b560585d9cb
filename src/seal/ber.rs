//! Reading BER/DER from a stream that may be hostile: the outer layers of a CMS message are
//! walked header by header (the encrypted content can be gigabytes, and OpenSSL's streaming
//! output uses indefinite lengths), while each small element (recipient infos, algorithm
//! identifiers) is read whole, within a size limit, and decoded with the `der` crate.
//! Every length is checked against the input that is actually there; nothing is trusted.

use std::io::{self, Read};

use super::SealError;

/// How deep nested elements may be skipped.
const MAX_DEPTH: usize = 32;

/// The identifier octet and length of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The whole identifier octet (class, constructed bit, tag number below 31).
    pub tag: u8,
    /// `None` for the indefinite form (constructed elements only).
    pub len: Option<u64>,
}

/// An input stream read element by element, counting its position.
pub(crate) struct BerReader<R> {
    inner: R,
    pos: u64,
    peeked: Option<u8>,
}

impl<R: Read> BerReader<R> {
    pub(crate) fn new(inner: R) -> BerReader<R> {
        BerReader {
            inner,
            pos: 0,
            peeked: None,
        }
    }

    /// Octets consumed so far.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    fn byte(&mut self) -> Result<u8, SealError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// The next identifier octet without consuming it; `None` at the end of the input.
    pub(crate) fn peek(&mut self) -> Result<Option<u8>, SealError> {
        if self.peeked.is_none() {
            let mut b = [0u8; 1];
            loop {
                match self.inner.read(&mut b) {
                    Ok(0) => return Ok(None),
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(SealError::Io(e)),
                }
            }
            self.peeked = Some(b[0]);
        }
        Ok(self.peeked)
    }

    /// Fills `buf` exactly; the input ending first is [`SealError::Truncated`].
    pub(crate) fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), SealError> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            self.pos += 1;
            buf = &mut buf[1..];
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(SealError::Truncated),
            Err(e) => Err(SealError::Io(e)),
        }
    }

    /// The next element's identifier and length.
    pub(crate) fn head(&mut self) -> Result<Head, SealError> {
        let tag = self.byte()?;
        if tag & 0x1f == 0x1f {
            return Err(SealError::Malformed("high tag number"));
        }
        let first = self.byte()?;
        let len = match first {
            0..=0x7f => Some(u64::from(first)),
            0x80 if tag & 0x20 != 0 => None,
            0x80 => return Err(SealError::Malformed("indefinite length of a primitive")),
            0x81..=0x88 => {
                let n = usize::from(first & 0x7f);
                let mut bytes = [0u8; 8];
                self.read_exact(&mut bytes[8 - n..])?;
                Some(u64::from_be_bytes(bytes))
            }
            _ => return Err(SealError::Malformed("length field")),
        };
        Ok(Head { tag, len })
    }

    /// The next element's head, which must carry `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &'static str) -> Result<Head, SealError> {
        let h = self.head()?;
        if h.tag != tag {
            return Err(SealError::Malformed(what));
        }
        Ok(h)
    }

    /// A whole definite-length element of at most `limit` octets, as DER bytes (header
    /// included) for the `der` crate to decode.
    pub(crate) fn element(
        &mut self,
        tag: u8,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, SealError> {
        let h = self.expect(tag, what)?;
        let len = h.len.ok_or(SealError::Malformed(what))?;
        if len > limit {
            return Err(SealError::Malformed(what));
        }
        let mut out = Vec::with_capacity(len as usize + 10);
        out.push(h.tag);
        encode_len(len, &mut out);
        let start = out.len();
        out.resize(start + len as usize, 0);
        self.read_exact(&mut out[start..])?;
        Ok(out)
    }

    /// Reads and discards the content of an element whose head was just read.
    pub(crate) fn skip(&mut self, h: Head) -> Result<(), SealError> {
        self.skip_at(h, 0)
    }

    fn skip_at(&mut self, h: Head, depth: usize) -> Result<(), SealError> {
        if depth > MAX_DEPTH {
            return Err(SealError::Malformed("nesting too deep"));
        }
        match h.len {
            Some(len) => {
                let copied = io::copy(&mut (&mut *self).take(len), &mut io::sink())?;
                if copied < len {
                    return Err(SealError::Truncated);
                }
                Ok(())
            }
            None => loop {
                let child = self.head()?;
                if child.tag == 0 {
                    return end_of_contents(child);
                }
                self.skip_at(child, depth + 1)?;
            },
        }
    }

    /// Ends a constructed element: for the indefinite form, reads its end-of-contents octets;
    /// for a definite length, checks that exactly its content was consumed.
    pub(crate) fn close(&mut self, h: Head, content_start: u64) -> Result<(), SealError> {
        match h.len {
            None => {
                let eoc = self.head()?;
                if eoc.tag != 0 {
                    return Err(SealError::Malformed("element longer than its container"));
                }
                end_of_contents(eoc)
            }
            Some(len) if self.pos.checked_sub(content_start) == Some(len) => Ok(()),
            Some(_) => Err(SealError::Malformed("element lengths do not add up")),
        }
    }
}

fn end_of_contents(h: Head) -> Result<(), SealError> {
    if h.len == Some(0) {
        Ok(())
    } else {
        Err(SealError::Malformed("end-of-contents"))
    }
}

/// Lets [`io::copy`] and `take` read content through the position counter.
impl<R: Read> Read for BerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            self.pos += 1;
            return Ok(1);
        }
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// DER length octets.
fn encode_len(len: u64, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_of_every_length_form() {
        let mut r = BerReader::new(&[0x30, 0x80, 0x04, 0x81, 0x80, 0xa0, 0x82, 0x01, 0x00][..]);
        assert_eq!(r.head().unwrap().len, None);
        assert_eq!(r.head().unwrap().len, Some(0x80));
        assert_eq!(r.head().unwrap().len, Some(0x100));
        assert!(matches!(r.head(), Err(SealError::Truncated)));
        let mut bad = BerReader::new(&[0x04, 0x80][..]);
        assert!(matches!(bad.head(), Err(SealError::Malformed(_))));
        let mut bad = BerReader::new(&[0x04, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(bad.head(), Err(SealError::Malformed(_))));
    }

    #[test]
    fn elements_are_bounded_and_round_trip_their_header() {
        let mut r = BerReader::new(&[0x04, 0x02, 0xaa, 0xbb, 0x04, 0x05, 1][..]);
        assert_eq!(
            r.element(0x04, 10, "x").unwrap(),
            vec![0x04, 0x02, 0xaa, 0xbb]
        );
        assert!(matches!(
            r.element(0x04, 3, "x"),
            Err(SealError::Malformed(_))
        ));
        let mut r = BerReader::new(&[0x04, 0x05, 1][..]);
        assert!(matches!(
            r.element(0x04, 10, "x"),
            Err(SealError::Truncated)
        ));
    }
}
