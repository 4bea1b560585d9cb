//! A client's SFTP byte stream decoded as the server decodes it, without a socket.
//!
//! The server reads requests with russh-sftp: a 32-bit length (over `MAX_SFTP_PACKET` is
//! answered `SSH_FX_BAD_MESSAGE` and the next four bytes are read as a length again), then the
//! packet, decoded by `Packet::try_from`; every path a request names then goes through the box
//! view's [`VirtualPath::parse`]. [`decode_stream`] does the same on a byte slice, so the fuzz
//! target (`fuzz/fuzz_targets/sftp_packet.rs`) and an ordinary test can run that path on
//! arbitrary bytes.

use bytes::{Buf, Bytes};
use russh_sftp::protocol::Packet;

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
        let Some(mut frame) =
            (input.remaining() >= len as usize).then(|| input.split_to(len as usize))
        else {
            break;
        };
        match Packet::try_from(&mut frame) {
            Ok(packet) => {
                out.bad_paths += paths(&packet)
                    .into_iter()
                    .filter(|p| VirtualPath::parse(p.as_bytes()).is_err())
                    .count();
                out.packets.push(packet);
            }
            Err(_) => out.refused += 1,
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
