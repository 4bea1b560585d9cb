//! The CMS opener on arbitrary bytes, for an RSA and an EC P-256 key (the example keys), with
//! unauthenticated content allowed so that the EnvelopedData paths are reached too. Any
//! outcome but a panic, a hang or unbounded memory is fine; opening must never succeed on
//! bytes the fuzzer made up without the key, but that is not asserted (it cannot tell). The
//! sniff that tells a CMS file on a medium from a plain archive reads the same bytes.
#![no_main]

use std::sync::OnceLock;

use handoff::seal::{OpenOptions, OpeningKey, looks_like_cms, open};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static [OpeningKey] {
    static KEYS: OnceLock<Vec<OpeningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example");
        ["gateway-enc", "insurer-06270029-enc"]
            .iter()
            .flat_map(|name| {
                let key = certs.join(format!("{name}.key"));
                let cert = certs.join(format!("{name}.pem"));
                [
                    OpeningKey::from_files(&key, None).expect("example key"),
                    OpeningKey::from_files(&key, Some(&cert)).expect("example key and cert"),
                ]
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_cms(data);
    let options = OpenOptions {
        allow_unauthenticated: true,
        allow_rsa_pkcs1v15: true,
    };
    for key in keys() {
        let _ = open(key, options, data, std::io::sink());
    }
});
