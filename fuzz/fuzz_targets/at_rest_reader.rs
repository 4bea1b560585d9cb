//! The spool's at-rest reader on arbitrary bytes: opening, reading everything, and seeking to a
//! position taken from the input. The first byte picks whether the input gets the right key id,
//! so that the fuzzer reaches the segment logic behind the key check.
#![no_main]

use std::io::{Cursor, Read, Seek, SeekFrom};

use handoff::keys::MasterKey;
use handoff::seal::at_rest::AtRestReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let master = MasterKey::from_bytes([7; 32]);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if selector & 1 == 1 && input.len() >= 20 {
        // Give the input the header of a real file (magic, version, key id): only the
        // segments and the salt then come from the fuzzer.
        let mut real = Vec::new();
        handoff::seal::at_rest::seal(&master, "F", &b""[..], &mut real).expect("seal");
        input[..20].copy_from_slice(&real[..20]);
    }
    let Ok(mut reader) = AtRestReader::new(&master, "F", Cursor::new(input)) else {
        return;
    };
    let mut sink = Vec::new();
    let _ = reader.read_to_end(&mut sink);
    let _ = reader.seek(SeekFrom::Start(u64::from(selector) * 4099));
    let _ = reader.read(&mut [0u8; 100]);
});
