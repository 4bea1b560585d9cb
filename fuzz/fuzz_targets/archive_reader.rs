//! The schema check's zip reader on arbitrary bytes: the directory checks, then reading every
//! entry through the bounded, CRC-checked reader. Small limits keep each run cheap.
#![no_main]

use std::io::Cursor;

use handoff::validate::archive::{Archive, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_entries: 64,
        max_entry_size: 1 << 20,
        max_total_size: 4 << 20,
        max_ratio: 100,
    };
    let Ok(mut archive) = Archive::open(Cursor::new(data), limits) else {
        return;
    };
    let entries = archive.entries().to_vec();
    for entry in &entries {
        let _ = archive.read(entry);
    }
});
