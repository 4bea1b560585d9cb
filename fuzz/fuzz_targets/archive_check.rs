//! The whole schema check (`validate::check_upload`) on arbitrary bytes, uploaded by the example
//! clinic under an official archive name: the zip reader, the layout and name rules, the XML
//! parser, the official schemas and every cross-file rule. The official schema sets are read from
//! `shared/formats` beside the repository.
#![no_main]

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use handoff::config::{self, Config};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/handoff.toml"));
        let text = std::fs::read_to_string(path).expect("the example config");
        let text = text.replace("\"../var/schemas\"", "\"../../shared/formats\"");
        let mut config = config::parse(path, &text).expect("the example config loads").config;
        // Small limits keep each run cheap.
        config.gateway.archive.max_entries = 64;
        config.gateway.archive.max_entry_size = config::ByteSize(1 << 20);
        config.gateway.archive.max_total_size = config::ByteSize(4 << 20);
        config
    })
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let sender = config.counterpart("clinic-1312345679").expect("the example clinic");
    let _ = handoff::validate::check_upload(
        Cursor::new(data),
        "1312345679_06130017_202612050_1.zip",
        sender,
        config,
    );
});
