//! The SFTP request decoder on arbitrary bytes, as the server reads a client's stream
//! (`transport::sftp::packets::decode_stream`: russh-sftp's framing and `Packet::try_from`, then
//! the box view's path parsing of every path a request names). What decodes must encode again
//! and decode to one packet with the same paths refused.
#![no_main]

use handoff::transport::sftp::packets::{decode_stream, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for packet in decode_stream(data).packets {
        let alone = decode_stream(&encode(packet).expect("a decoded packet encodes"));
        assert_eq!(alone.refused, 0, "a decoded packet encodes to a refused frame");
        assert_eq!(alone.packets.len(), 1, "a decoded packet encodes to one packet");
    }
});
