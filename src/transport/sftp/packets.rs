//! Decoding a client's SFTP requests, the one way the server does it.
//!
//! The server reads a 32-bit length (over `MAX_SFTP_PACKET`, nothing is answered and the next
//! four bytes are read as a length again), then the packet, decoded by [`decode`]: a write's data
//! stays a slice of the frame it came in (an upload's bytes are not copied to be decoded), every
//! other request is russh-sftp's `Packet::try_from`; every path a request names then goes
//! through the box view's [`VirtualPath::parse`]. [`decode_stream`] does the same on a byte
//! slice, so the fuzz target (`fuzz/fuzz_targets/sftp_packet.rs`) and an ordinary test can run
//! that path on arbitrary bytes.

use bytes::{Buf, Bytes};
use russh_sftp::protocol::{Packet, Write};

/// `SSH_FXP_WRITE`.
const FXP_WRITE: u8 = 6;

/// One decoded request.
#[derive(Debug)]
pub enum Request {
    /// `SSH_FXP_WRITE`, its data a slice of the frame.
    Write {
        id: u32,
        handle: String,
        offset: u64,
        data: Bytes,
    },
    Other(Packet),
}

impl Request {
    /// The request as russh-sftp's type (a write's data copied).
    pub fn into_packet(self) -> Packet {
        match self {
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => Packet::Write(Write {
                id,
                handle,
                offset,
                data: data.to_vec(),
            }),
            Request::Other(p) => p,
        }
    }
}

/// Decodes one frame (the bytes after its length). A write whose fields fill the frame exactly
/// is cut from it; anything else is left to `Packet::try_from`, so both decode the same bytes to
/// the same request or refuse them alike.
pub fn decode(mut frame: Bytes) -> Option<Request> {
    if let Some(write) = write_of(&frame) {
        return Some(write);
    }
    Packet::try_from(&mut frame).ok().map(Request::Other)
}

/// A write request laid out as the protocol has it: type, id, handle (a string), offset, data (a
/// string), and nothing after.
fn write_of(frame: &Bytes) -> Option<Request> {
    let mut r = frame.clone();
    if r.try_get_u8().ok()? != FXP_WRITE {
        return None;
    }
    let id = r.try_get_u32().ok()?;
    let handle_len = r.try_get_u32().ok()? as usize;
    if r.remaining() < handle_len {
        return None;
    }
    let handle = String::from_utf8(r.split_to(handle_len).to_vec()).ok()?;
    let offset = r.try_get_u64().ok()?;
    let data_len = r.try_get_u32().ok()? as usize;
    (r.remaining() == data_len).then_some(Request::Write {
        id,
        handle,
        offset,
        data: r,
    })
}

use super::view::MAX_SFTP_PACKET;
use crate::boxes::VirtualPath;

/// What one stream decoded to.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Requests that decoded, in order.
    pub packets: Vec<Packet>,
    /// Frames refused: over-long, or not a packet (`SSH_FX_BAD_MESSAGE`).
    pub refused: usize,
    /// Paths in the requests that the box view refuses.
    pub bad_paths: usize,
}

/// Decodes `input` as a client's stream of SFTP requests; a frame cut short ends it, as the end
/// of the stream does the server's loop.
pub fn decode_stream(input: &[u8]) -> Decoded {
    let mut input = Bytes::copy_from_slice(input);
    let mut out = Decoded::default();
    while input.remaining() >= 4 {
        let len = input.get_u32();
        if len > MAX_SFTP_PACKET {
            out.refused += 1;
            continue;
        }
        let Some(frame) = (input.remaining() >= len as usize).then(|| input.split_to(len as usize))
        else {
            break;
        };
        match decode(frame).map(Request::into_packet) {
            Some(packet) => {
                out.bad_paths += paths(&packet)
                    .into_iter()
                    .filter(|p| VirtualPath::parse(p.as_bytes()).is_err())
                    .count();
                out.packets.push(packet);
            }
            None => out.refused += 1,
        }
    }
    out
}

/// The paths a request names, as the box view resolves them.
fn paths(packet: &Packet) -> Vec<&str> {
    match packet {
        Packet::Open(p) => vec![&p.filename],
        Packet::Lstat(p) => vec![&p.path],
        Packet::Stat(p) => vec![&p.path],
        Packet::SetStat(p) => vec![&p.path],
        Packet::OpenDir(p) => vec![&p.path],
        Packet::Remove(p) => vec![&p.filename],
        Packet::MkDir(p) => vec![&p.path],
        Packet::RmDir(p) => vec![&p.path],
        Packet::RealPath(p) => vec![&p.path],
        Packet::Rename(p) => vec![&p.oldpath, &p.newpath],
        Packet::ReadLink(p) => vec![&p.path],
        Packet::Symlink(p) => vec![&p.linkpath, &p.targetpath],
        _ => Vec::new(),
    }
    .into_iter()
    .map(String::as_str)
    .collect()
}

/// Encodes a decoded packet again, as the server encodes its replies from the same types.
pub fn encode(packet: Packet) -> Option<Bytes> {
    Bytes::try_from(packet).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `packet` after its length, as the request loop gets them.
    fn frame(packet: Packet) -> Bytes {
        let mut b = encode(packet).expect("encodes");
        b.advance(4);
        b
    }

    fn write(handle: &str, data: &[u8]) -> Packet {
        Packet::Write(Write {
            id: 7,
            handle: handle.into(),
            offset: 1 << 40,
            data: data.to_vec(),
        })
    }

    /// What russh-sftp's own decoder makes of a frame, for comparison.
    fn russh_sftp(mut frame: Bytes) -> Option<String> {
        Packet::try_from(&mut frame).ok().map(|p| format!("{p:?}"))
    }

    #[test]
    fn a_write_is_cut_from_its_frame_and_reads_as_russh_sftp_reads_it() {
        for data in [&b""[..], b"x", &[0xab; 32 * 1024]] {
            let f = frame(write("h-1", data));
            let Some(Request::Write {
                id,
                handle,
                offset,
                data: cut,
            }) = decode(f.clone())
            else {
                panic!("not decoded as a write");
            };
            assert_eq!((id, handle.as_str(), offset), (7, "h-1", 1 << 40));
            assert_eq!(&cut[..], data);
            // A slice of the frame, not a copy.
            assert_eq!(cut.as_ptr(), f[f.len() - data.len()..].as_ptr());
            let ours = decode(f.clone()).map(|r| format!("{:?}", r.into_packet()));
            assert_eq!(ours, russh_sftp(f));
        }
    }

    #[test]
    fn writes_not_laid_out_exactly_are_left_to_russh_sftp() {
        let f = frame(write("h", b"abc"));
        let mut cases: Vec<Bytes> = Vec::new();
        // A byte after the data, a cut frame, a handle that is not UTF-8, a data length over.
        let mut longer = f.to_vec();
        longer.push(0);
        cases.push(longer.into());
        cases.push(f.slice(..f.len() - 1));
        let mut not_utf8 = f.to_vec();
        not_utf8[9] = 0xff;
        cases.push(not_utf8.into());
        let mut over = f.to_vec();
        let at = 1 + 4 + 4 + 1 + 8;
        over[at..at + 4].copy_from_slice(&100u32.to_be_bytes());
        cases.push(over.into());
        for c in cases {
            assert!(write_of(&c).is_none(), "{c:?}");
            let ours = decode(c.clone()).map(|r| format!("{:?}", r.into_packet()));
            assert_eq!(ours, russh_sftp(c));
        }
    }
}
