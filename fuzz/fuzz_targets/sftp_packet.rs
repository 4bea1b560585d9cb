//! The SFTP request decoder on arbitrary bytes, as the server reads a client's stream
//! (`transport::sftp::packets::decode_stream`: the framing, `packets::decode` — a write's data
//! cut from its frame, everything else russh-sftp's `Packet::try_from` — then the box view's
//! path parsing of every path a request names). What decodes must encode again and decode to
//! one packet with the same paths refused; and `packets::decode` must read any frame exactly as
//! russh-sftp's own decoder does.
#![no_main]

use bytes::Bytes;
use handoff::transport::sftp::packets::{decode, decode_stream, encode};
use libfuzzer_sys::fuzz_target;
use russh_sftp::protocol::Packet;

fuzz_target!(|data: &[u8]| {
    for packet in decode_stream(data).packets {
        let alone = decode_stream(&encode(packet).expect("a decoded packet encodes"));
        assert_eq!(alone.refused, 0, "a decoded packet encodes to a refused frame");
        assert_eq!(alone.packets.len(), 1, "a decoded packet encodes to one packet");
    }
    let mut frame = Bytes::copy_from_slice(data);
    let theirs = Packet::try_from(&mut frame).ok();
    let ours = decode(Bytes::copy_from_slice(data)).map(|r| r.into_packet());
    // Writes compared whole; the rest went through russh-sftp's decoder on both sides.
    let write = |p: &Option<Packet>| match p {
        Some(Packet::Write(w)) => Some(format!("{w:?}")),
        _ => None,
    };
    assert_eq!(ours.is_some(), theirs.is_some(), "decoded on one side only");
    assert_eq!(write(&ours), write(&theirs), "the write fast path reads a frame otherwise");
});
